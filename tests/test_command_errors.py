"""Bad commands fail with one line and a non-zero exit, leaving the index byte for byte as it was;
odd collections (fewer images than k, one image, all identical, all unreadable) give sane answers."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from PIL import Image

from embedlab.cli import main

from .conftest import skimage_image, small

ROOT = Path(__file__).resolve().parent.parent


def _fingerprint(index: Path) -> dict[str, str]:
    """Every file of an index folder by content hash: 'untouched' means this does not change."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(index.iterdir()) if p.is_file()}


@pytest.fixture
def index_copy(work: Path, built_index: Path) -> Path:
    shutil.copytree(built_index, work / "index", ignore=shutil.ignore_patterns("*.lock"))
    return work / "index"


def _one_line_failure(capsys: pytest.CaptureFixture[str], argv: list[str], status: int = 1) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert code == status, out.err
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embedlab: error:") and "Traceback" not in out.err, out.err
    return lines[0]


def _queries(work: Path) -> Path:
    (work / "q").mkdir(exist_ok=True)
    small(skimage_image("coffee"), 96).convert("RGB").save(work / "q" / "cup.png")
    return work / "q"


def _foreign_db(index: Path) -> None:
    """Another application's SQLite file under our file name."""
    for old in index.iterdir():
        old.unlink()
    conn = sqlite3.connect(index / "embedlab.db")
    conn.executescript("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT); INSERT INTO notes VALUES (1, 'hi');")
    conn.close()


def _newer_schema(index: Path) -> None:
    conn = sqlite3.connect(index / "embedlab.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()


def _corrupt(index: Path) -> None:
    """Overwrite the root pages of the images and embeddings tables with noise (a bad disk, a bad copy)."""
    db = index / "embedlab.db"
    conn = sqlite3.connect(db)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    roots = [r[0] for r in conn.execute("SELECT rootpage FROM sqlite_master WHERE name IN ('images', 'embeddings')")]
    conn.close()
    data = bytearray(db.read_bytes())
    for root in roots:
        start = (root - 1) * page
        data[start : start + page] = bytes((i * 151 + 7) % 256 for i in range(page))
    db.write_bytes(bytes(data))


WHOLE = "argument --k: must be a whole number, not '1.5'"
SEED = "argument --seed: must be a whole number from 0 to 4294967295"
RECIPE = "this run uses efficientnet_lite0/plain/v1; use --recipe hybrid (or leave it out)"
# (test id, how to damage a copy of a good index (or None), command line after "-q", message, exit status)
CASES: list[tuple[str, Callable[[Path], None] | None, list[str], str, int]] = [
    ("embed_missing_images_dir", None, ["embed", "--images-dir", "./nope", "--out", "./index"], "not a folder", 1),
    ("embed_empty_images_dir", None, ["embed", "--images-dir", "./empty", "--out", "./index"], "no images found", 1),
    ("search_missing_query_dir", None, ["search", "--index", "./index", "--query-dir", "./nope"], "not a folder", 1),
    ("search_empty_query_dir", None, ["search", "--index", "./index", "--query-dir", "./empty"], "no images found", 1),
    ("search_missing_index", None, ["search", "--index", "./none", "--query-dir", "./q"], "no index at", 1),
    ("analyze_missing_index", None, ["analyze", "--index", "./none"], "no index at", 1),
    ("analyze_foreign_sqlite", _foreign_db, ["analyze", "--index", "./index"], "not an embedlab index", 1),
    ("embed_into_foreign_sqlite", _foreign_db, ["embed", "--images-dir", "./q", "--out", "./index"], "not an embed", 1),
    ("analyze_newer_schema", _newer_schema, ["analyze", "--index", "./index"], "newer than this embedlab", 1),
    ("embed_newer_schema", _newer_schema, ["embed", "--images-dir", "./q", "--out", "./index"], "newer than", 1),
    ("analyze_corrupted", _corrupt, ["analyze", "--index", "./index"], "is damaged", 1),
    ("search_corrupted", _corrupt, ["search", "--index", "./index", "--query-dir", "./q"], "is damaged", 1),
    ("embed_corrupted", _corrupt, ["embed", "--images-dir", "./q", "--out", "./index"], "is damaged", 1),
    ("search_k_zero", None, ["search", "--index", "./index", "--query-dir", "./q", "--k", "0"], "--k: must be at", 2),
    ("search_k_negative", None, ["search", "--index", "./index", "--query-dir", "./q", "--k", "-3"], "--k", 2),
    ("analyze_k_zero", None, ["analyze", "--index", "./index", "--k", "0"], "--k: must be at least 1", 2),
    ("dup_threshold_above_1", None, ["analyze", "--index", "./index", "--dup-threshold", "1.5"], "between -1", 2),
    ("dup_threshold_below_-1", None, ["analyze", "--index", "./index", "--dup-threshold", "-1.01"], "between -1", 2),
    ("dup_threshold_nan", None, ["analyze", "--index", "./index", "--dup-threshold", "nan"], "between -1", 2),
    ("anomaly_top_negative", None, ["analyze", "--index", "./index", "--anomaly-top", "-1"], "must be 0 or more", 2),
    ("search_k_fraction", None, ["search", "--index", "./index", "--query-dir", "./q", "--k", "1.5"], WHOLE, 2),
    ("dup_threshold_word", None, ["analyze", "--index", "./index", "--dup-threshold", "high"], "a number, not", 2),
    ("embed_seed_negative", None, ["embed", "--images-dir", "./q", "--out", "./index", "--seed", "-1"], SEED, 2),
    (
        "embed_seed_too_large",
        None,
        ["embed", "--images-dir", "./q", "--out", "./index", "--seed", "4294967296"],
        SEED,
        2,
    ),
    ("calibrate_seed_negative", None, ["calibrate", "--index", "./index", "--seed", "-1"], SEED, 2),
    ("evaluate_k_zero", None, ["evaluate", "--index", "./index", "--k", "0"], "--k: must be at least 1", 2),
    ("evaluate_k_fraction", None, ["evaluate", "--index", "./index", "--k", "1,2.5"], "not '2.5'", 2),
    ("embed_other_recipe", None, ["embed", "--images-dir", "./q", "--out", "./index", "--recipe", "plain"], RECIPE, 1),
    (
        "embed_metrics_out_missing_folder",
        None,
        ["embed", "--images-dir", "./q", "--out", "./index", "--metrics-out", "./nope/m.json"],
        "cannot write --metrics-out ./nope/m.json: folder nope does not exist",
        1,
    ),
    (
        "embed_metrics_out_is_a_folder",
        None,
        ["embed", "--images-dir", "./q", "--out", "./index", "--metrics-out", "./empty"],
        "--metrics-out ./empty is a folder",
        1,
    ),
]


@pytest.mark.parametrize(("damage", "argv", "message", "status"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_command_is_one_line_and_leaves_the_index_untouched(  # type: ignore[no-untyped-def]
    index_copy: Path, capsys, damage, argv, message, status
) -> None:
    work = index_copy.parent
    (work / "empty").mkdir()
    _queries(work)
    if damage is not None:
        damage(index_copy)
    before = _fingerprint(index_copy)
    line = _one_line_failure(capsys, ["-q", *argv], status)
    assert message in line
    assert str(work) not in line or "index" in line  # only the index folder the user named may appear
    assert _fingerprint(index_copy) == before


def test_other_backbone_than_the_index_is_refused_by_search(index_copy: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    work = index_copy.parent
    weights = work / "resnet18-test.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    before = _fingerprint(index_copy)
    argv = ["-q", "search", "--index", "./index", "--query-dir", str(_queries(work)), "--backbone", "resnet18"]
    line = _one_line_failure(capsys, [*argv, "--weights", str(weights)])
    assert "index was built with efficientnet_lite0" in line
    assert _fingerprint(index_copy) == before


def test_usage_errors_are_one_line_in_a_real_process(work: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "embedlab.py"), "search", "--index", "x", "--query-dir", "y", "--k", "0"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "embedlab: error: embedlab search: argument --k: must be at least 1 (see embedlab search --help)"
    ]


# -- odd collections --------------------------------------------------------------------


def _no_nan(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in output")

    return json.loads(text, parse_constant=refuse)


def _run_all(work: Path, capsys: pytest.CaptureFixture[str], k: int = 5) -> tuple[list[Any], Any]:
    assert main(["-q", "embed", "--images-dir", "./imgs", "--out", "./index"]) == 0
    capsys.readouterr()
    code = main(["-q", "search", "--index", "./index", "--query-dir", str(_queries(work)), "--k", str(k), "--json"])
    searched = [_no_nan(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    assert main(["-q", "analyze", "--index", "./index", "--k", str(k), "--anomaly-top", "8", "--json"]) == 0
    return searched, _no_nan(capsys.readouterr().out)


def test_fewer_images_than_k(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "imgs").mkdir()
    for name in ("astronaut", "camera", "coins"):
        small(skimage_image(name), 96).convert("RGB").save(work / "imgs" / f"{name}.png")
    searched, analysis = _run_all(work, capsys, k=10)
    assert len(searched[0]["results"]) == 3
    assert len(analysis["anomalies"]) == 3
    assert all(len(d["neighbours"]) == 2 for d in analysis["anomaly_details"])


def test_single_image(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "imgs").mkdir()
    small(skimage_image("camera"), 96).convert("RGB").save(work / "imgs" / "only.png")
    searched, analysis = _run_all(work, capsys)
    assert [r["path"] for r in searched[0]["results"]] == ["imgs/only.png"]
    assert analysis["duplicate_groups"] == [] and analysis["anomalies"] == ["imgs/only.png"]
    assert analysis["anomaly_details"][0]["neighbours"] == []


def test_all_images_identical(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "imgs").mkdir()
    photo = small(skimage_image("coins"), 96).convert("RGB")
    photo.save(work / "imgs" / "a.png")
    for name in ("b.png", "c.png"):
        shutil.copyfile(work / "imgs" / "a.png", work / "imgs" / name)
    photo.save(work / "imgs" / "d.bmp")  # same pixels, other bytes
    searched, analysis = _run_all(work, capsys)
    assert analysis["duplicate_groups"] == [["imgs/a.png", "imgs/b.png", "imgs/c.png", "imgs/d.bmp"]]
    assert {r["score"] for r in searched[0]["results"]} == {searched[0]["results"][0]["score"]}
    assert analysis["unique_vectors"] == 2 and analysis["images"] == 4


def test_all_images_blank_and_identical_give_finite_scores(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "imgs").mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (255, 255, 255)).save(work / "imgs" / f"white{i}.png", compress_level=i)
    _, analysis = _run_all(work, capsys)
    assert analysis["duplicate_groups"] == [["imgs/white0.png", "imgs/white1.png", "imgs/white2.png"]]
    assert all("blank" in d["flags"] for d in analysis["anomaly_details"])


def test_all_images_unreadable(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (work / "imgs").mkdir()
    (work / "imgs" / "a.png").write_bytes(b"")
    (work / "imgs" / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    searched, analysis = _run_all(work, capsys)
    assert searched[0]["results"] == []
    assert analysis["duplicate_groups"] == [] and analysis["anomalies"] == []
    assert [u["path"] for u in analysis["unreadable"]] == ["imgs/a.png", "imgs/b.jpg"]
    assert analysis["images"] == 0
