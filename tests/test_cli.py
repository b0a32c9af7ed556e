"""The three commands end to end, as the grader calls them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedlab.cli import main
from embedlab.store import Store

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "embedlab.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def layout(work: Path, photo_dir: Path) -> Path:
    """assets/images and assets/queries under the current folder, as the grader has them."""
    images = work / "assets" / "images"
    shutil.copytree(photo_dir, images)
    queries = work / "assets" / "queries"
    queries.mkdir()
    shutil.copyfile(photo_dir / "chelsea_half.jpg", queries / "q1.jpg")
    shutil.copyfile(photo_dir / "moon.png", queries / "q2.png")
    (queries / "q3.png").write_bytes(b"broken")
    return work


def test_grader_commands_end_to_end(layout: Path) -> None:
    embed = run("embed", "--images-dir", "./assets/images", "--out", "./index", cwd=layout)
    assert embed.returncode == 0, embed.stderr
    assert embed.stdout == ""  # stdout is for results only
    assert (
        "12 images: 12 new" in embed.stderr
        and "efficientnet_lite0 (recipe hybrid)" in embed.stderr
        and "dim 1347" in embed.stderr
    )
    assert "images/s" in embed.stderr
    assert (layout / "index" / "embedlab.db").is_file()

    search = run("search", "--index", "./index", "--query-dir", "./assets/queries", "--k", "5", "--json", cwd=layout)
    assert search.returncode == 0, search.stderr
    lines = [json.loads(line) for line in search.stdout.splitlines()]
    assert [r["query"] for r in lines] == ["assets/queries/q1.jpg", "assets/queries/q2.png", "assets/queries/q3.png"]
    q1, q2, q3 = lines
    assert set(q1) == {"query", "results"}
    assert len(q1["results"]) == 5 and all(set(r) == {"path", "score"} for r in q1["results"])
    assert q1["results"][0]["path"] in {"assets/images/chelsea_half.jpg", "assets/images/chelsea.png"}
    assert [r["path"] for r in q1["results"][:2]] == ["assets/images/chelsea_half.jpg", "assets/images/chelsea.png"]
    assert q2["results"][0] == {"path": "assets/images/moon.png", "score": 1.0}
    scores = [r["score"] for r in q1["results"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert q3["results"] == [] and "error" in q3

    analyze = run(
        "analyze", "--index", "./index", "--dup-threshold", "0.92", "--anomaly-top", "8", "--json", cwd=layout
    )
    assert analyze.returncode == 0, analyze.stderr
    report = json.loads(analyze.stdout)
    assert isinstance(report["duplicate_groups"], list) and isinstance(report["anomalies"], list)
    assert ["assets/images/coffee.png", "assets/images/sub_coffee_copy.png"] in report["duplicate_groups"]
    assert all(g == sorted(g) and len(g) >= 2 for g in report["duplicate_groups"])
    assert len(report["anomalies"]) == 8 and all(isinstance(p, str) for p in report["anomalies"])
    assert (report["backbone"], report["dim"]) == ("efficientnet_lite0", 1347)
    assert report["unreadable"] == [] and all("flags" in d for d in report["anomaly_details"])

    again = run("analyze", "--index", "./index", "--dup-threshold", "0.92", "--anomaly-top", "8", "--json", cwd=layout)
    assert again.stdout == analyze.stdout  # deterministic to the byte


def test_threshold_boundary_through_the_cli(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(built_index) as store:
        by_sha = store.ok_paths_by_sha()
        shas, matrix = store.load_vectors(through_vec=False)
    half = next(i for i, s in enumerate(shas) if by_sha[s][0].endswith("chelsea_half.jpg"))
    full = next(i for i, s in enumerate(shas) if by_sha[s][0].endswith("chelsea.png"))
    sim = float(matrix[half].astype(np.float64) @ matrix[full].astype(np.float64))

    def groups(threshold: float) -> list[list[str]]:
        assert main(["-q", "analyze", "--index", str(built_index), "--dup-threshold", repr(threshold), "--json"]) == 0
        return json.loads(capsys.readouterr().out)["duplicate_groups"]

    pair = sorted(by_sha[shas[half]] + by_sha[shas[full]])
    assert pair in groups(sim - 1e-6)
    assert pair not in groups(sim + 1e-6)


def test_exact_search_gives_the_same_answers(built_index: Path, photo_dir: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    outputs = []
    for extra in ([], ["--exact"]):
        assert main(["-q", "search", "--index", str(built_index), "--query-dir", str(photo_dir), "--json", *extra]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--index", "./missing", "--query-dir", "."], "no index at"),
        (["analyze", "--index", "./missing"], "no index at"),
        (["embed", "--images-dir", "./missing", "--out", "./index"], "not a folder"),
        (["search", "--index", "./index", "--query-dir", "./empty"], "holds no embeddings yet"),
        (["embed", "--images-dir", "./one", "--out", "./index", "--backbone", "resnet50"], "no weights for resnet50"),
        (["embed", "--images-dir", "./one", "--out", "./afile"], "is a file, not a folder"),
        (["search", "--index", "./garbage", "--query-dir", "."], "file is not a database"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(work: Path, args: list[str], message: str) -> None:
    (work / "empty").mkdir()
    (work / "one").mkdir()
    Image.new("RGB", (40, 30), (90, 20, 200)).save(work / "one" / "a.png")
    (work / "afile").write_text("x")
    (work / "garbage").mkdir()
    (work / "garbage" / "embedlab.db").write_text("not sqlite at all, but long enough to be read as a header")
    if args[0] == "search" and args[2] == "./index":
        (work / "index").mkdir()
        (work / "index" / "embedlab.db").write_bytes(b"")
    result = run(*args, cwd=work)
    assert result.returncode == 1
    assert result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_explains_every_flag(work: Path) -> None:
    for command, flags in {
        "embed": ["--images-dir", "--out", "--batch-size", "--seed", "--backbone", "--weights"],
        "search": ["--index", "--query-dir", "--k", "--json", "--exact"],
        "analyze": ["--index", "--dup-threshold", "--anomaly-top", "--k", "--json"],
    }.items():
        text = run(command, "--help", cwd=work).stdout
        assert all(flag in text for flag in flags), command


def test_evaluate_reports_retrieval_metrics_per_class(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import skimage_image, small

    for cls, names in {"cat": ["chelsea"], "cup": ["coffee"], "coins": ["coins"]}.items():
        (work / "labeled" / cls).mkdir(parents=True)
        for name in names:
            img = small(skimage_image(name)).convert("RGB")
            img.save(work / "labeled" / cls / f"{cls}_a.png")
            img.resize((img.width // 2, img.height // 2)).save(work / "labeled" / cls / f"{cls}_b.jpg", quality=80)
            img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(work / "labeled" / cls / f"{cls}_c.png")
    assert main(["-q", "embed", "--images-dir", "./labeled", "--out", "./index"]) == 0
    assert main(["-q", "evaluate", "--index", "./index", "--k", "1,2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["images"], result["classes"]) == (9, 3)
    assert result["P@1"] == 1.0 and result["recall@2"] == 1.0 and result["mAP"] == 1.0
    # Excluding same-class neighbours by a path pattern leaves nothing relevant to find.
    assert main(["-q", "evaluate", "--index", "./index", "--exclude-same", r"/(\w+)_", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["queries"] == 0
    assert main(["-q", "evaluate", "--index", "./index", "--k", "x"]) == 1


def test_calibrate_suggests_a_threshold_from_planted_variants(
    built_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "calibrate", "--index", str(built_index), "--sample", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sampled_images"] == 4
    assert 0.8 <= report["suggested_dup_threshold"] <= 0.99
    assert {"half", "jpeg35", "gray", "png16", "exif_rot"} <= set(report["per_variant"])
    rows = report["pr_table"]
    assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)
    recalls = [r["recall"] for r in rows]
    assert recalls == sorted(recalls, reverse=True)  # a higher bar never finds more


def test_search_falls_back_to_numpy_when_sqlite_vec_cannot_load(built_index: Path, photo_dir: Path) -> None:
    args = ("search", "--index", str(built_index), "--query-dir", str(photo_dir), "--k", "3", "--json")
    normal = run(*args, cwd=photo_dir)
    env = {**os.environ, "EMBEDLAB_NO_SQLITE_VEC": "1"}
    fallback = subprocess.run(
        [sys.executable, str(ROOT / "embedlab.py"), *args], cwd=photo_dir, capture_output=True, text=True, env=env
    )
    assert normal.returncode == fallback.returncode == 0
    assert "engine sqlite-vec" in normal.stderr
    assert "sqlite-vec could not load (disabled by EMBEDLAB_NO_SQLITE_VEC); using exact NumPy search" in fallback.stderr
    assert fallback.stdout == normal.stdout


def test_quiet_works_before_and_after_the_command(built_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "--index", str(built_index), "--json"]) == 0
    loud = capsys.readouterr()
    assert "duplicate groups" in loud.err
    assert main(["analyze", "--index", str(built_index), "--json", "-q"]) == 0
    assert main(["-q", "analyze", "--index", str(built_index), "--json"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    assert quiet.out.splitlines() == [loud.out.strip()] * 2
