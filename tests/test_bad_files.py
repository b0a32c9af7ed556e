"""Bad files are recorded one by one with a reason, counted, and the run goes on.

One real `embed` subprocess runs over a folder holding every kind of bad file
next to good ones; each test below checks one row of the matrix. When the tests
run as root (who can read any file), the subprocess drops the capabilities that
let root ignore file permissions, so the unreadable file really is unreadable.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from embedlab.cli import main
from embedlab.images import ImageError, decode, fs_path, path_token
from embedlab.indexer import embed_folder

from .conftest import skimage_image, small
from .fast.test_formats import _png_header_only

ROOT = Path(__file__).resolve().parent.parent
PATIENT_NAME, PATIENT_ID = "Doe^Janeway", "PID-31415926"


def _drop_root_file_access() -> list[str] | None:
    """A command prefix under which root obeys file permissions; None if that is impossible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]


def _jpeg_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _patient_dicom(path: Path, truncate: bool = False) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.BodyPartExamined = "CHEST"
    ds.save_as(path)
    if truncate:
        path.write_bytes(path.read_bytes()[:-3000])


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    prefix = _drop_root_file_access()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    work = tmp_path_factory.mktemp("mixed")
    folder = work / "mixed"
    (folder / "sub").mkdir(parents=True)
    photo = small(skimage_image("coffee"), 96).convert("RGB")
    photo.save(folder / "good.png")
    small(skimage_image("chelsea"), 96).convert("RGB").save(folder / "sub" / "good2.jpg")
    (folder / "zero.png").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(_jpeg_bytes(photo)[:900])
    (folder / "truncated.png").write_bytes(_png_bytes(photo)[:700])
    (folder / "text.png").write_text("this is a shopping list, not a picture\n")
    (folder / "unreadable.png").write_bytes(_png_bytes(photo.rotate(90)))
    (folder / "unreadable.png").chmod(0)
    (folder / "broken_link.png").symlink_to(folder / "nowhere.png")
    (folder / "loop_a.png").symlink_to(folder / "loop_b.png")
    (folder / "loop_b.png").symlink_to(folder / "loop_a.png")
    (folder / "sub" / "back").symlink_to(folder, target_is_directory=True)  # a folder loop
    (folder / "bomb.png").write_bytes(_png_header_only(20_000, 20_000))
    with open(os.fsencode(folder) + b"/caf\xe9.png", "wb") as fh:  # Latin-1 name: not UTF-8
        fh.write(_png_bytes(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    frames = [Image.new("RGB", (40, 30), c) for c in ((200, 30, 30), (30, 200, 30))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    _patient_dicom(folder / "IM000001")
    _patient_dicom(folder / "IM000002", truncate=True)

    result = subprocess.run(
        [*prefix, sys.executable, str(ROOT / "embedlab.py"), "embed", "--images-dir", "./mixed", "--out", "./index"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    rows = {
        r[0]: r[1:] for r in conn.execute("SELECT path, status, error, frames, modality, body_part, sha256 FROM images")
    }
    counts = json.loads(conn.execute("SELECT counts FROM runs WHERE command = 'embed'").fetchone()[0])
    dump = "\n".join(repr(r) for table in ("meta", "images", "runs") for r in conn.execute(f"SELECT * FROM {table}"))
    conn.close()
    return {"work": work, "result": result, "rows": rows, "counts": counts, "dump": dump}


BAD = {
    "zero.png": "empty file",
    "truncated.jpg": "truncated",
    "truncated.png": "",
    "text.png": "cannot identify image file",
    "unreadable.png": "Permission denied",
    "broken_link.png": "broken symbolic link",
    "loop_a.png": "symbolic link loop",
    "loop_b.png": "symbolic link loop",
    "bomb.png": "too large",
    "caf\\xe9.png": "not valid UTF-8",
    "IM000002": "",
}


def test_the_run_goes_on_and_counts_every_bad_file(mixed_run: dict[str, Any]) -> None:
    result = mixed_run["result"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert mixed_run["counts"]["failed"] == len(BAD)
    assert f"{len(BAD)} unreadable" in result.stderr
    ok = sorted(p for p, r in mixed_run["rows"].items() if r[0] == "ok")
    assert ok == ["mixed/IM000001", "mixed/anim.gif", "mixed/good.png", "mixed/sub/good2.jpg"]


@pytest.mark.parametrize(("name", "reason"), BAD.items(), ids=list(BAD))
def test_bad_file_is_recorded_with_its_reason(mixed_run: dict[str, Any], name: str, reason: str) -> None:
    status, error, *_ = mixed_run["rows"][f"mixed/{name}"]
    assert status == "error" and error and "\n" not in error
    assert reason in error
    assert str(mixed_run["work"]) not in error  # no machine paths in stored reasons


def test_folder_symlink_loop_is_scanned_once(mixed_run: dict[str, Any]) -> None:
    assert not any("/back/" in p for p in mixed_run["rows"])
    assert "folder already scanned" in mixed_run["result"].stderr


def test_animated_file_records_its_frame_count(mixed_run: dict[str, Any]) -> None:
    assert mixed_run["rows"]["mixed/anim.gif"][2] == 2
    assert mixed_run["rows"]["mixed/good.png"][2] == 1


def test_dicom_keeps_modality_and_body_part_but_no_patient_tag(mixed_run: dict[str, Any]) -> None:
    _, _, frames, modality, body_part, _ = mixed_run["rows"]["mixed/IM000001"]
    assert (frames, modality, body_part) == (1, "CT", "CHEST")
    db = (mixed_run["work"] / "index" / "embedlab.db").read_bytes()
    for secret in (PATIENT_NAME, "Janeway", PATIENT_ID):
        assert secret not in mixed_run["dump"] and secret.encode() not in db
        assert secret not in mixed_run["result"].stderr


def test_logs_name_files_by_a_hash_not_a_path(mixed_run: dict[str, Any]) -> None:
    err = mixed_run["result"].stderr
    for name in ("zero.png", "truncated.jpg", "text.png", "unreadable.png", "IM000002"):
        assert name not in err
        assert path_token(f"mixed/{name}") in err


def test_log_paths_shows_full_paths(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "imgs").mkdir()
    small(skimage_image("coins"), 64).save(work / "imgs" / "ok.png")
    (work / "imgs" / "Smith_John.png").write_bytes(b"garbage")
    assert main(["embed", "--images-dir", "./imgs", "--out", "./index"]) == 0
    hashed = capsys.readouterr().err
    assert "Smith_John" not in hashed and path_token("imgs/Smith_John.png") in hashed
    (work / "imgs" / "Smith_John.png").write_bytes(b"garbage, changed")
    assert main(["embed", "--images-dir", "./imgs", "--out", "./index", "--log-paths"]) == 0
    shown = capsys.readouterr().err
    assert "imgs/Smith_John.png: skipped" in shown


def test_file_vanishing_after_the_scan_is_recorded_and_dropped_next_run(work: Path) -> None:
    """The file is deleted the moment the scan ends, before it is hashed or decoded."""
    (work / "imgs").mkdir()
    for name in ("astronaut", "camera"):
        small(skimage_image(name), 64).convert("RGB").save(work / "imgs" / f"{name}.png")
    victim = work / "imgs" / "camera.png"

    class DeleteAfterScan(logging.Handler):
        fired = False

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("scan found"):
                victim.unlink()
                DeleteAfterScan.fired = True

    logger = logging.getLogger("embedlab")
    handler, level = DeleteAfterScan(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        report = embed_folder("./imgs", "./index")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert DeleteAfterScan.fired
    assert (report.images, report.failed, report.embedded_vectors) == (2, 1, 1)
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    row = conn.execute("SELECT status, error FROM images WHERE path = 'imgs/camera.png'").fetchone()
    conn.close()
    assert row[0] == "error" and "No such file" in row[1]
    again = embed_folder("./imgs", "./index")  # gone for good: its row leaves the index
    assert (again.images, again.removed, again.failed) == (1, 1, 0)


def test_file_vanishing_before_decoding_is_an_image_error(tmp_path: Path) -> None:
    path = tmp_path / "gone.png"
    Image.new("RGB", (8, 8)).save(path)
    path.unlink()
    with pytest.raises(ImageError, match="No such file"):
        decode(path)


def _status(index: Path, path: str) -> tuple[str, str | None]:
    conn = sqlite3.connect(index / "embedlab.db")
    row = conn.execute("SELECT status, error FROM images WHERE path = ?", (path,)).fetchone()
    conn.close()
    return row


def test_failed_file_is_retried_when_its_permissions_change(work: Path) -> None:
    """chmod changes only the status-change time (ctime): that alone brings a failed file back, no --rehash."""
    prefix = _drop_root_file_access()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    (work / "imgs").mkdir()
    small(skimage_image("coins"), 64).convert("RGB").save(work / "imgs" / "ok.png")
    small(skimage_image("camera"), 64).convert("RGB").save(work / "imgs" / "locked.png")
    (work / "imgs" / "locked.png").chmod(0)
    command = [*prefix, sys.executable, str(ROOT / "embedlab.py"), "embed", "--images-dir", "./imgs", "--out", "./idx"]
    result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _status(work / "idx", "imgs/locked.png") == ("error", "cannot read: Permission denied")

    (work / "imgs" / "locked.png").chmod(0o644)
    report = embed_folder("./imgs", "./idx")
    assert (report.unchanged, report.new, report.failed, report.embedded_vectors) == (1, 1, 0, 1)
    assert _status(work / "idx", "imgs/locked.png") == ("ok", None)
    again = embed_folder("./imgs", "./idx")  # fixed and recorded: nothing to retry
    assert (again.unchanged, again.embedded_vectors) == (2, 0)


def test_failed_file_is_retried_when_rewritten_with_the_same_size_and_mtime(work: Path) -> None:
    (work / "imgs").mkdir()
    good = _png_bytes(small(skimage_image("coins"), 64).convert("RGB"))
    target = work / "imgs" / "scan.png"
    target.write_bytes(b"\0" * len(good))  # a half-copied file: the right size, no picture yet
    assert embed_folder("./imgs", "./index").failed == 1
    stat = os.stat(target)
    target.write_bytes(good)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime, ctime moved
    report = embed_folder("./imgs", "./index")
    assert (report.failed, report.embedded_vectors) == (0, 1)
    assert _status(work / "index", "imgs/scan.png") == ("ok", None)


def test_names_that_are_not_utf8_never_share_a_row_with_real_names(work: Path) -> None:
    """`caf\\xe9.png` in Latin-1 bytes, a file literally named `caf\\xe9.png`, and `café.png`: three rows."""
    folder = os.fsencode(work / "imgs")
    os.mkdir(folder)
    photos = [small(skimage_image(name), 64).convert("RGB") for name in ("coins", "camera", "coffee")]
    names = [b"caf\xe9.png", b"caf\\xe9.png", "café.png".encode()]
    for name, photo in zip(names, photos, strict=True):
        with open(folder + b"/" + name, "wb") as fh:
            fh.write(_png_bytes(photo))
    report = embed_folder("./imgs", "./index")
    assert (report.images, report.failed, report.embedded_vectors) == (3, 1, 2)
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    rows = dict(conn.execute("SELECT path, coalesce(error, status) FROM images").fetchall())
    conn.close()
    assert rows == {
        "imgs/caf\\xe9.png": "file name is not valid UTF-8; rename it",  # the byte, escaped as before
        "imgs/caf\\\\xe9.png": "ok",  # a real backslash where it would read as an escape: doubled
        "imgs/café.png": "ok",
    }
    # The text is lossless: each one names its own file again.
    assert {os.fsencode(fs_path(p)) for p in rows} == {b"imgs/" + n for n in names}


def test_folder_that_cannot_be_listed_keeps_its_rows_and_is_reported(work: Path) -> None:
    """chmod 000 on a sub-folder: its files are unknown, not gone (as root the run drops the bypassing capabilities)."""
    prefix = _drop_root_file_access()
    if prefix is None:
        pytest.skip("running as root without setpriv: chmod 000 does not stop root from listing a folder")
    (work / "imgs" / "sub").mkdir(parents=True)
    for folder, name in (("imgs", "coins"), ("imgs/sub", "camera"), ("imgs/sub", "coffee")):
        small(skimage_image(name), 64).convert("RGB").save(work / folder / f"{name}.png")
    assert embed_folder("./imgs", "./idx").images == 3
    (work / "imgs" / "sub").chmod(0)
    try:
        command = [*prefix, sys.executable, str(ROOT / "embedlab.py"), "embed", "--images-dir", "./imgs"]
        result = subprocess.run(
            [*command, "--out", "./idx", "--json"], cwd=work, capture_output=True, text=True, timeout=300
        )
    finally:
        (work / "imgs" / "sub").chmod(0o755)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["images"], summary["unchanged"], summary["removed"], summary["unlisted_folders"]) == (1, 1, 0, 1)
    assert "cannot list folder (Permission denied)" in result.stderr
    assert "1 folder(s) could not be listed: their 2 indexed file(s) are kept, not removed" in result.stderr
    conn = sqlite3.connect(work / "idx" / "embedlab.db")
    paths = [r[0] for r in conn.execute("SELECT path FROM images WHERE status = 'ok' ORDER BY path")]
    counts = json.loads(conn.execute("SELECT counts FROM runs WHERE command = 'embed' ORDER BY id DESC").fetchone()[0])
    conn.close()
    assert paths == ["imgs/coins.png", "imgs/sub/camera.png", "imgs/sub/coffee.png"]
    assert counts["unlisted_folders"] == 1 and counts["removed"] == 0
