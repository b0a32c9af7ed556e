"""dedupe, undo, marks, export, leaks and the report on real files, a real index and the real model."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import embedlab
from embedlab.cli import main

from .conftest import skimage_image, small

SECRET = "ZZSECRET-PATIENT-4711"  # a patient identifier that must never reach the index or a log


def _tree(root: Path) -> dict[str, tuple[bytes, int, bool]]:
    """Every file under ``root``: bytes, mtime and whether it is a link (what undo must restore)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() or path.is_symlink():
            out[path.relative_to(root).as_posix()] = (path.read_bytes(), path.lstat().st_mtime_ns, path.is_symlink())
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """photos/: chelsea with a half-size JPEG (near-duplicate) and a copy in ref/ (same bytes), coffee with a
    copy in sub/, two unrelated photos; embedded into index/ with paths relative to the folder."""
    work = tmp_path_factory.mktemp("dedupe")
    photos = work / "photos"
    (photos / "ref").mkdir(parents=True)
    (photos / "sub").mkdir()
    for name in ("astronaut", "camera", "coffee", "chelsea"):
        small(skimage_image(name), 160).convert("RGB").save(photos / f"{name}.png")
    chelsea = Image.open(photos / "chelsea.png")
    chelsea.resize((chelsea.width // 2, chelsea.height // 2), Image.Resampling.BILINEAR).save(
        photos / "chelsea_half.jpg", quality=90
    )
    shutil.copy2(photos / "chelsea.png", photos / "ref" / "chelsea.png")
    shutil.copy2(photos / "coffee.png", photos / "sub" / "coffee_copy.png")
    old = os.getcwd()
    os.chdir(work)
    try:
        assert main(["-q", "embed", "--images-dir", "photos", "--out", "index"]) == 0
    finally:
        os.chdir(old)
    return work


@pytest.fixture
def here(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private copy of the base folder and its index, as the working folder."""
    work = tmp_path / "w"
    shutil.copytree(base, work, symlinks=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # A folder is its real path: the copy is another folder. Forget the original and index the
    # copy, so the copy's index describes the copy alone, under the same spelling.
    assert main(["-q", "forget", "--index", "index", str(base / "photos")]) == 0
    assert main(["-q", "embed", "--images-dir", "photos", "--out", "index"]) == 0
    yield work


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _plan(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[list[dict], dict]:
    code, out, err = _run(capsys, "dedupe", "--index", "index", "--json", *extra)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    return lines[:-1], lines[-1]["summary"]


def _embed_is_level(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "-q", "embed", "--images-dir", "photos", "--out", "index", "--json")
    summary = json.loads(out)
    assert code == 0 and (summary["new"], summary["removed"], summary["reused"]) == (0, 0, 0), summary


def test_list_is_the_default_and_touches_nothing(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(here / "photos")
    groups, summary = _plan(capsys, "--protect", "photos/ref")
    fates = {f["path"]: f["decision"] for g in groups for f in g["files"]}
    assert fates == {
        "photos/chelsea.png": "keep",
        "photos/ref/chelsea.png": "protected",
        "photos/chelsea_half.jpg": "remove",
        "photos/coffee.png": "keep",
        "photos/sub/coffee_copy.png": "remove",
    }
    assert summary["planned"] == 2 and summary["protected"] == 1 and "journal" not in summary
    assert _tree(here / "photos") == before
    code, _, err = _run(capsys, "dedupe", "--index", "index", "--action", "move", "--dest", "held")
    assert code == 1 and "--yes" in err and err.count("\n") == 1


def test_move_keeps_the_layout_levels_the_index_and_undo_restores_exactly(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(here / "photos")
    _, summary = _plan(capsys, "--protect", "photos/ref", "--action", "move", "--dest", "moved", "--yes")
    assert (summary["done"], summary["skipped"]) == (2, 0)
    assert (here / "moved" / "photos" / "chelsea_half.jpg").is_file()
    assert (here / "moved" / "photos" / "sub" / "coffee_copy.png").is_file()
    assert not (here / "photos" / "chelsea_half.jpg").exists() and (here / "photos" / "ref" / "chelsea.png").is_file()
    code, out, _ = _run(capsys, "undo", summary["journal"], "--json")
    assert code == 0 and json.loads(out)["restored"] == 2
    assert _tree(here / "photos") == before
    assert not any(p.is_file() for p in (here / "moved").rglob("*"))
    _embed_is_level(capsys)  # the rows came back with the files
    code, _, err = _run(capsys, "undo", summary["journal"])
    assert code == 1 and "undone already" in err


def test_the_index_is_level_after_a_move_and_undo_still_restores_after_an_embed(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _tree(here / "photos")
    _, summary = _plan(capsys, "--protect", "photos/ref", "--action", "move", "--dest", "../moved", "--yes")
    _embed_is_level(capsys)  # the moved files are gone from the index too: nothing to do
    assert _run(capsys, "-q", "undo", summary["journal"])[0] == 0
    assert _tree(here / "photos") == before
    # That embed dropped the vector nothing pointed at any more: the next embed computes it once.
    code, out, _ = _run(capsys, "-q", "embed", "--images-dir", "photos", "--out", "index", "--json")
    assert code == 0 and json.loads(out)["new"] <= 1 and json.loads(out)["removed"] == 0
    code, _, err = _run(capsys, "dedupe", "--index", "index", "--action", "move", "--dest", "photos/x", "--yes")
    assert code == 1 and "--dest is inside an indexed folder" in err


def test_a_file_changed_since_embed_is_skipped_and_reported(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = here / "photos" / "chelsea_half.jpg"
    stat = target.stat()
    target.write_bytes(target.read_bytes()[:-1] + b"\0")  # same size, other bytes
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: only the hash tells
    groups, summary = _plan(capsys, "--action", "move", "--dest", "moved", "--yes")
    files = {f["path"]: f for g in groups for f in g["files"]}
    assert files["photos/chelsea_half.jpg"]["status"] == "skipped"
    assert "changed since embed" in files["photos/chelsea_half.jpg"]["why"]
    assert target.is_file() and summary["skipped"] >= 1


def test_hardlink_and_symlink_then_undo(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(here / "photos")
    _, summary = _plan(capsys, "--protect", "photos/ref", "--action", "hardlink", "--yes")
    assert summary["done"] == 2
    photos = here / "photos"
    assert os.path.samefile(photos / "sub" / "coffee_copy.png", photos / "coffee.png")
    assert os.path.samefile(photos / "chelsea_half.jpg", photos / "chelsea.png")
    assert list((here / "index" / "held").rglob("chelsea_half.jpg"))  # other bytes: the original is held
    _embed_is_level(capsys)
    again, _ = _plan(capsys, "--protect", "photos/ref", "--action", "hardlink", "--yes")
    assert all(f.get("status") != "done" for g in again for f in g["files"])  # already links: nothing to do
    assert _run(capsys, "-q", "undo", summary["journal"])[0] == 0
    assert _tree(photos) == before
    assert not os.path.samefile(photos / "sub" / "coffee_copy.png", photos / "coffee.png")
    assert main(["-q", "embed", "--images-dir", "photos", "--out", "index"]) == 0  # the vector the embed dropped

    _, summary = _plan(capsys, "--protect", "photos/ref", "--action", "symlink", "--yes")
    assert (photos / "chelsea_half.jpg").is_symlink() and (photos / "sub" / "coffee_copy.png").is_symlink()
    _embed_is_level(capsys)
    assert _run(capsys, "-q", "undo", summary["journal"])[0] == 0
    assert _tree(photos) == before


def test_trash_follows_the_freedesktop_layout_and_undoes(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(here / "photos")
    _, summary = _plan(capsys, "--protect", "photos/ref", "--action", "trash", "--yes")
    trash = here.parent / "xdg" / "Trash"
    assert (trash / "files" / "chelsea_half.jpg").is_file()
    info = (trash / "info" / "chelsea_half.jpg.trashinfo").read_text()
    assert info.startswith("[Trash Info]\nPath=/") and "DeletionDate=" in info
    _embed_is_level(capsys)
    assert _run(capsys, "-q", "undo", summary["journal"])[0] == 0
    assert _tree(here / "photos") == before and not list((trash / "info").iterdir())


def test_marks_split_a_group_follow_content_and_can_be_removed(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def groups() -> list[list[str]]:
        return embedlab.open("index").analyze().duplicate_groups

    assert ["photos/chelsea.png", "photos/chelsea_half.jpg", "photos/ref/chelsea.png"] in groups()
    code, _, _ = _run(
        capsys, "mark", "--index", "index", "--not-duplicate", "photos/chelsea_half.jpg", "photos/chelsea.png"
    )
    assert code == 0
    assert ["photos/chelsea.png", "photos/ref/chelsea.png"] in groups()
    assert not any("photos/chelsea_half.jpg" in g for g in groups())
    # A rename and a re-embed: the mark follows the content.
    (here / "photos" / "chelsea_half.jpg").rename(here / "photos" / "renamed.jpg")
    assert main(["-q", "embed", "--images-dir", "photos", "--out", "index"]) == 0
    assert not any("photos/renamed.jpg" in g for g in groups())
    plan, _ = _plan(capsys)
    assert not any(f["path"] == "photos/renamed.jpg" for g in plan for f in g["files"])
    code, out, _ = _run(capsys, "mark", "--index", "index", "--list", "--json")
    (mark,) = [json.loads(line) for line in out.splitlines()]
    assert mark["paths_a"] + mark["paths_b"] in (
        ["photos/chelsea.png", "photos/ref/chelsea.png", "photos/renamed.jpg"],
        ["photos/renamed.jpg", "photos/chelsea.png", "photos/ref/chelsea.png"],
    )
    report = here / "r.html"
    assert main(["-q", "report", "--index", "index", "--out", str(report), "--protect", "photos/ref"]) == 0
    page = report.read_text()
    assert "Marked as not duplicates (1)" in page and "photos/renamed.jpg" in page
    assert "fate-keep" in page and "kept: protected" in page and "keeper: photos/chelsea.png" in page
    pairs = here / "pairs.tsv"
    pairs.write_text("# one pair a line\nphotos/renamed.jpg\tphotos/chelsea.png\n")
    assert main(["-q", "mark", "--index", "index", "--from", str(pairs), "--remove"]) == 0
    assert any("photos/renamed.jpg" in g for g in groups())
    code, _, err = _run(
        capsys, "mark", "--index", "index", "--not-duplicate", "photos/chelsea.png", "photos/ref/chelsea.png"
    )
    assert code == 1 and "same bytes" in err and err.count("\n") == 1


def test_export_every_kind(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "export", "--index", "index", "--what", "groups", "--protect", "photos/ref")
    header, *rows = out.splitlines()
    assert code == 0 and header.startswith("group,path,sha256,representative,keeper,decision,score,kind")
    assert len(rows) == 5 and any(r.startswith("1,photos/chelsea.png,") and ",true,keep," in r for r in rows)
    assert main(["-q", "export", "--index", "index", "--what", "images", "--format", "jsonl", "--out", "i.jsonl"]) == 0
    images = [json.loads(line) for line in Path("i.jsonl").read_text().splitlines()]
    assert len(images) == 7 and images[0]["path"] == "photos/astronaut.png"
    code, out, _ = _run(capsys, "export", "--index", "index", "--what", "anomalies", "--format", "jsonl")
    assert code == 0 and len(out.splitlines()) == 7
    code, out, _ = _run(
        capsys, "export", "--index", "index", "--what", "search", "--query-dir", "photos/sub", "--k", "2"
    )
    assert code == 0 and out.splitlines()[1].startswith("photos/sub/coffee_copy.png,1,")
    code, _, err = _run(capsys, "export", "--index", "index", "--what", "search")
    assert code == 1 and "--query-dir" in err


def _dicom(path: Path, patient: str, source: str) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(source, download=False))
    ds.PatientID = patient
    ds.PatientName = patient
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)


def test_leaks_across_a_folder_split_and_a_patient_key_that_never_stores_the_identifier(
    work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pydicom")
    data = work / "data"
    for split, names in (("train", ("astronaut", "camera", "chelsea")), ("test", ("coffee",))):
        (data / split).mkdir(parents=True)
        for name in names:
            small(skimage_image(name), 160).convert("RGB").save(data / split / f"{name}.png")
    # Planted leaks: a half-size copy of a training image and a byte-identical one in test.
    chelsea = Image.open(data / "train" / "chelsea.png")
    chelsea.resize((80, chelsea.height * 80 // chelsea.width)).save(data / "test" / "cat.jpg", quality=90)
    shutil.copyfile(data / "train" / "astronaut.png", data / "test" / "person.png")
    # One patient in both splits (different scans), another only in train.
    _dicom(data / "train" / "ct.dcm", SECRET, "CT_small.dcm")
    _dicom(data / "test" / "mr.dcm", SECRET, "MR_small.dcm")
    _dicom(data / "train" / "other.dcm", "SOMEONE-ELSE-1", "liver_1frame.dcm")
    assert main(["-v", "embed", "--images-dir", "data", "--out", "index"]) == 0
    argv = ["-v", "leaks", "--index", "index", "--split", "train=data/train", "--split", "test=data/test"]
    code, out, err = _run(capsys, *argv, "--patient-key", "--json")
    assert code == 0
    found = json.loads(out)
    assert found["counts"] == [{"splits": ["test", "train"], "pairs": 2, "images": 4}]
    assert {(p["a"], p["b"], p["kind"]) for p in found["pairs"]} >= {
        ("data/test/person.png", "data/train/astronaut.png", "same_bytes")
    }
    assert {(p["a"], p["b"]) for p in found["pairs"]} == {
        ("data/test/person.png", "data/train/astronaut.png"),
        ("data/test/cat.jpg", "data/train/chelsea.png"),
    }
    patients = found["patients"]
    assert patients["patients"] == 2 and patients["counts"] == [{"splits": ["test", "train"], "patients": 1}]
    assert patients["shared"][0]["splits"] == {"test": 1, "train": 1}
    secret = SECRET.encode()
    for file in (work / "index").iterdir():
        if file.is_file():
            assert secret not in file.read_bytes(), file.name
    assert SECRET not in out and SECRET not in err and "SOMEONE-ELSE" not in err
    # The table, and the report's section, from the stored keys.
    code, table, _ = _run(
        capsys, "leaks", "--index", "index", "--split", "train=data/train", "--split", "test=data/test"
    )
    assert code == 0 and "test x train: 2 pairs, 4 images" in table
    assert main(["-q", "report", "--index", "index", "--out", "r.html", "--split", "train=data/train",
                 "--split", "test=data/test"]) == 0  # fmt: skip
    page = Path("r.html").read_text()
    assert "Near-duplicates across splits (2 pairs)" in page and SECRET not in page
    code, _, err = _run(capsys, "leaks", "--index", "index", "--split", "train=data/train")
    assert code == 1 and "--split" in err
