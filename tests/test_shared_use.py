"""Folder identity, read-only indexes and the messages of issue 14 (items 5, 9 and 11).

Real embeds with the real model and real sqlite-vec: folders typed alike from two working
folders, one folder through a symlink and its absolute path, a renamed folder, overlapping
folders, an index from before folders had an identity; an index in a folder nobody may
write (as root the commands drop the capabilities that bypass file modes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedlab.cli import main
from embedlab.indexer import embed_folder
from embedlab.store import Store, StoreError

from .conftest import four_photos, skimage_image, small
from .test_bad_files import _drop_root_file_access
from .test_races import _back_to_schema_4

ROOT = Path(__file__).resolve().parent.parent


def _rows(index: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(f"file:{index / 'embedlab.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT path, root FROM images ORDER BY path").fetchall()
    finally:
        conn.close()


def _folders(index: Path) -> dict[str, str | None]:
    conn = sqlite3.connect(f"file:{index / 'embedlab.db'}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT root, real_path FROM folders"))
    finally:
        conn.close()


# -- 5. folder identity -------------------------------------------------------------------


def test_one_folder_name_from_two_working_folders_is_two_folders(
    work: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the second run said "2 removed" and replaced the first folder's rows by its own."""
    for side, names in (("a", ("astronaut", "camera")), ("b", ("coffee", "coins"))):
        (work / side / "images").mkdir(parents=True)
        for name in names:
            small(skimage_image(name), 96).convert("RGB").save(work / side / "images" / f"{name}.png")
    out = str(work / "index")
    monkeypatch.chdir(work / "a")
    embed_folder("images", out)
    monkeypatch.chdir(work / "b")
    with caplog.at_level(logging.WARNING, logger="embedlab"):
        second = embed_folder("images", out)
    assert second.removed == 0 and second.new == 2
    assert "names another folder in this index" in caplog.text
    b_root = str(work / "b" / "images")
    assert _rows(work / "index") == [
        (f"{b_root}/coffee.png", b_root),
        (f"{b_root}/coins.png", b_root),
        ("images/astronaut.png", "images"),
        ("images/camera.png", "images"),
    ]
    monkeypatch.chdir(work / "a")  # and the first folder, run again from its own place, is unchanged
    again = embed_folder("images", out)
    assert (again.unchanged, again.removed, again.new) == (2, 0, 0)
    assert len(_rows(work / "index")) == 4


def test_a_name_taken_by_two_other_folders_is_refused_in_the_reader_s_own_words(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name "images" is a's folder, and b's images (a link) was indexed under its absolute name; the link now
    points elsewhere: a third folder has no name left, so embed stops (the library names no flag)."""
    from embedlab.errors import API_HINTS, CLI_HINTS, CLI_SUBJECTS
    from embedlab.store import StoreError

    for folder, name in (("a/images", "astronaut"), ("b/first", "camera"), ("b/second", "coffee")):
        (work / folder).mkdir(parents=True)
        small(skimage_image(name), 96).convert("RGB").save(work / folder / f"{name}.png")
    (work / "b" / "images").symlink_to(work / "b" / "first", target_is_directory=True)
    out = str(work / "index")
    monkeypatch.chdir(work / "a")
    embed_folder("images", out)
    monkeypatch.chdir(work / "b")
    embed_folder("images", out)  # kept under its absolute path
    (work / "b" / "images").unlink()
    (work / "b" / "images").symlink_to(work / "b" / "second", target_is_directory=True)
    with pytest.raises(StoreError) as caught:
        embed_folder("images", out)
    assert "already holds another folder named" in str(caught.value)
    assert "--" not in str(caught.value) and "new index folder" in caught.value.render(API_HINTS)
    assert caught.value.render(CLI_HINTS, CLI_SUBJECTS).endswith("; use another --out")
    assert len(_rows(work / "index")) == 2  # nothing written


def test_one_folder_through_a_symlink_and_its_absolute_path_is_one_folder(work: Path) -> None:
    """Before: three spellings of one folder gave three copies of every row (and of every duplicate group)."""
    four_photos(work / "imgs")
    (work / "link").symlink_to(work / "imgs", target_is_directory=True)
    embed_folder("imgs", "index")
    for spelling in (str(work / "imgs"), "link", "./imgs/"):
        report = embed_folder(spelling, "index")
        assert (report.unchanged, report.new, report.removed) == (4, 0, 0)
    rows = _rows(work / "index")
    assert len(rows) == 4 and {root for _, root in rows} == {"imgs"}
    assert _folders(work / "index") == {"imgs": str((work / "imgs").resolve())}


def test_renamed_folder_leaves_no_rows_that_forget_cannot_drop(
    work: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the old name's rows stayed for good (search returned them at 1.0; `--images-dir OLD` is not a folder)."""
    four_photos(work / "imgs")
    embed_folder("imgs", "index")
    (work / "imgs").rename(work / "pics")
    with caplog.at_level(logging.WARNING, logger="embedlab"):
        moved = embed_folder("pics", "index")
    assert moved.reused == 4 and moved.embedded_vectors == 0  # same bytes: no model work
    assert "1 indexed folder(s) no longer exist" in caplog.text and "embedlab forget" in caplog.text
    assert main(["info", "--index", "index", "--json"]) == 0
    roots = {r["root"]: r["exists"] for r in json.loads(capsys.readouterr().out)["roots"]}
    assert roots == {"imgs": False, "pics": True}

    assert main(["-q", "forget", "--index", "index", "nope"]) == 1
    assert "nope is not a folder of this index" in capsys.readouterr().err
    assert main(["-q", "forget", "--index", "index", "imgs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"folders": ["imgs"], "removed": 4, "vectors_removed": 0}
    assert {root for _, root in _rows(work / "index")} == {"pics"}
    assert main(["-q", "forget", "--index", "index", "--missing", "--json"]) == 0  # nothing else is missing
    assert json.loads(capsys.readouterr().out)["folders"] == []
    assert main(["-q", "forget", "--index", "index", "pics"]) == 0  # the vectors go with the last rows using them
    with Store(work / "index") as store:
        assert store.vector_count() == 0 and store.runs(limit=1)[0]["command"] == "forget"


def test_overlapping_folders_are_warned(work: Path, caplog: pytest.LogCaptureFixture) -> None:
    four_photos(work / "imgs")
    (work / "imgs" / "sub").mkdir()
    small(skimage_image("horse"), 96).convert("RGB").save(work / "imgs" / "sub" / "horse.png")
    embed_folder("imgs", "index")
    with caplog.at_level(logging.WARNING, logger="embedlab"):
        embed_folder("imgs/sub", "index")
    assert "overlap (one holds the other)" in caplog.text
    assert "imgs/sub" not in caplog.text  # folders are named by a hash in logs, like files


def test_an_index_from_before_folder_identity_upgrades_and_adopts_its_folder(work: Path) -> None:
    four_photos(work / "imgs")
    embed_folder("imgs", "index")
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    _back_to_schema_4(conn)
    conn.close()
    report = embed_folder(str(work / "imgs"), "index")  # the first embed re-reads what older schemas lack
    assert report.removed == 0 and {root for _, root in _rows(work / "index")} == {"imgs"}
    assert _folders(work / "index") == {"imgs": str((work / "imgs").resolve())}
    assert embed_folder("imgs", "index").unchanged == 4


# -- 9. read-only indexes -----------------------------------------------------------------


def test_embed_leaves_one_file_that_the_stock_sqlite3_module_opens_read_only(work: Path) -> None:
    """Before: the file stayed in WAL mode, which needs a writable -shm beside it."""
    four_photos(work / "imgs")
    embed_folder("imgs", "index")
    db = work / "index" / "embedlab.db"
    assert db.read_bytes()[18] == 1  # rollback journal, not WAL (2)
    assert not db.with_name("embedlab.db-wal").exists() and not db.with_name("embedlab.db-shm").exists()


def _run_as_reader(prefix: list[str], work: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, str(ROOT / "embedlab.py"), *argv],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("left_in_wal", [False, True], ids=["as_embed_leaves_it", "left_in_wal_mode"])
def test_read_commands_work_on_a_read_only_index(work: Path, built_index: Path, left_in_wal: bool) -> None:
    """search, analyze, report and info on an index in a folder nobody may write; embed says why it cannot."""
    prefix = _drop_root_file_access()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    index = work / "index"
    shutil.copytree(built_index, index, ignore=shutil.ignore_patterns("*.lock"))
    if left_in_wal:  # as an older embedlab left it: WAL mode, no -shm beside it
        conn = sqlite3.connect(index / "embedlab.db")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    (work / "q").mkdir()
    small(skimage_image("coffee"), 96).convert("RGB").save(work / "q" / "cup.png")
    runs_before = len(Store(index).runs()) if not left_in_wal else None
    for path in index.iterdir():
        path.chmod(0o444)
    index.chmod(0o555)
    try:
        for argv in (
            ["search", "--index", "index", "--query-dir", "q", "--k", "3", "--json"],
            ["analyze", "--index", "index", "--json"],
            ["report", "--index", "index", "--out", "report.html"],
            ["info", "--index", "index", "--json"],
        ):
            result = _run_as_reader(prefix, work, *argv)
            assert result.returncode == 0, (argv, result.stderr)
            assert "Traceback" not in result.stderr
        assert json.loads(result.stdout)["images"] == 12
        assert (work / "report.html").stat().st_size > 1000
        failed = _run_as_reader(prefix, work, "-q", "embed", "--images-dir", "q", "--out", "index")
        assert failed.returncode == 1
        assert failed.stderr.strip().splitlines() == [
            "embedlab: error: index index is read-only; embed needs write access to the index folder "
            "(read commands do not)"
        ]
    finally:
        index.chmod(0o755)
        for path in index.iterdir():
            path.chmod(0o644)
    if runs_before is not None:
        assert len(Store(index).runs()) == runs_before  # a read-only index records no runs


# -- 11. messages -------------------------------------------------------------------------


def test_a_read_only_lock_file_is_a_clear_error(work: Path) -> None:
    """Before: "internal error: PermissionError"."""
    prefix = _drop_root_file_access()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a file read-only")
    four_photos(work / "imgs")
    embed_folder("imgs", "index")
    (work / "index" / "embedlab.lock").chmod(0o444)
    failed = _run_as_reader(prefix, work, "-q", "embed", "--images-dir", "imgs", "--out", "index")
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        "embedlab: error: cannot lock index/embedlab.lock for writing (Permission denied); "
        "embed needs write access to the index folder (read commands do not)"
    ]


def test_a_full_disk_is_named_as_such(work: Path) -> None:
    """Before: "Internal sqlite-vec error: Could not insert a new vector chunk". SQLite's page limit
    fails exactly as a full volume does (SQLITE_FULL), inside the real sqlite-vec insert."""
    four_photos(work / "imgs")
    embed_folder("imgs", "index")
    with Store(work / "index") as store:
        assert store.vec_loaded
        (pages,) = store.execute("PRAGMA page_count")[0]
        store.execute(f"PRAGMA max_page_count = {pages}")
        vectors = np.ones((1100, int(store.meta()["dim"])), np.float32)
        full = pytest.raises(StoreError, match=r"the disk holding .* is full .*free some space")
        with full as caught, store.transaction():
            store.insert_vectors([f"{i:064x}" for i in range(1100)], vectors, 1)
        assert "\n" not in str(caught.value)
        assert store.vector_count() == 4  # the batch rolled back


def test_a_first_embed_that_fails_leaves_no_index_folder(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    four_photos(work / "imgs")
    assert main(["-q", "embed", "--images-dir", "imgs", "--out", "new", "--backbone", "resnet18"]) == 1
    assert "no weights for resnet18" in capsys.readouterr().err
    assert not (work / "new").exists()
    (work / "kept").mkdir()  # a folder the user made stays, emptied of what the run created
    assert main(["-q", "embed", "--images-dir", "imgs", "--out", "kept/idx", "--backbone", "resnet18"]) == 1
    assert (work / "kept").is_dir() and not (work / "kept" / "idx").exists()


def test_plain_text_output_escapes_control_characters_in_names(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    imgs = four_photos(work / "imgs")
    evil = "evil\x1b[2J\nforged.png"
    shutil.copyfile(imgs / "coffee.png", imgs / evil)
    assert main(["-q", "embed", "--images-dir", "imgs", "--out", "index"]) == 0
    assert main(["-q", "search", "--index", "index", "--query-dir", "imgs", "--k", "5"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "imgs/evil\\x1b[2J\\x0aforged.png" in out
    assert all(line.startswith(("imgs/", "  ")) for line in out.splitlines())  # no forged line
    assert main(["-q", "search", "--index", "index", "--query-dir", "imgs", "--json"]) == 0
    assert evil in {json.loads(line)["query"].split("/")[-1] for line in capsys.readouterr().out.splitlines()}


def test_hidden_files_and_folders_are_counted(work: Path, caplog: pytest.LogCaptureFixture) -> None:
    imgs = four_photos(work / "imgs")
    (imgs / ".thumbs").mkdir()
    shutil.copyfile(imgs / "coffee.png", imgs / ".thumbs" / "coffee.png")
    shutil.copyfile(imgs / "coffee.png", imgs / ".hidden.png")
    with caplog.at_level(logging.INFO, logger="embedlab"):
        report = embed_folder("imgs", "index")
    assert report.images == 4
    assert "skipped 2 hidden file(s) and folder(s)" in caplog.text
    assert os.path.isdir(imgs / ".thumbs")


def test_the_embed_summary_says_what_happened(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: "embedded 6 images, 5 new, 1 failed" when 4 vectors were computed, and a run with nothing
    to do printed "0 vectors computed in 0.00s (0.0 images/s)"."""
    imgs = four_photos(work / "imgs")
    shutil.copyfile(imgs / "coffee.png", imgs / "coffee_copy.png")
    (imgs / "notes.png").write_text("not a picture")
    assert main(["embed", "--images-dir", "imgs", "--out", "index"]) == 0
    err = capsys.readouterr().err
    assert "embedlab: 6 images: 4 embedded, 1 copy of those, 1 unreadable" in err
    assert "`embedlab info --index index` lists the files that could not be read" in err
    assert main(["embed", "--images-dir", "imgs", "--out", "index"]) == 0
    err = capsys.readouterr().err
    assert "embedlab: 6 images: 6 unchanged, 1 unreadable" in err and "nothing new to embed" in err
    assert "images/s" not in err
