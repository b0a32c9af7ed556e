"""The three commands end to end, as the grader calls them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        "12 images: 11 embedded, 1 copy of those" in embed.stderr
        and "efficientnet_lite0 (recipe hybrid)" in embed.stderr
        and "dim 1347" in embed.stderr
    )
    assert "images/s" in embed.stderr
    assert "\r" not in embed.stderr and "it/s" not in embed.stderr  # no progress bar in a pipe
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
    # --dup-threshold applies to the verified probability that two files hold one picture.
    def analysis(threshold: float) -> dict[str, Any]:
        assert main(["-q", "analyze", "--index", str(built_index), "--dup-threshold", repr(threshold), "--json"]) == 0
        return dict(json.loads(capsys.readouterr().out))

    low = analysis(0.01)
    group = next(d for d in low["duplicate_details"] if any(p.endswith("chelsea_half.jpg") for p in d["paths"]))
    pair = sorted(group["paths"])
    assert [Path(p).name for p in pair] == ["chelsea.png", "chelsea_half.jpg"]
    score = group["links"][0]["score"]  # rounded to 6 decimals
    assert 0.5 < score <= 1.0 and group["links"][0]["kind"] in {"same_pixels", "edited_copy"}
    assert pair in analysis(score - 1e-6)["duplicate_groups"]
    assert pair not in analysis(score + 1e-6)["duplicate_groups"]


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
    with pytest.raises(SystemExit) as usage:  # a bad --k is a usage error, exit 2 like search --k 0
        main(["-q", "evaluate", "--index", "./index", "--k", "x"])
    assert usage.value.code == 2


def test_calibrate_suggests_a_threshold_from_planted_variants(
    built_index: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "calibrate", "--index", str(built_index), "--sample", "4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sampled_images"] == 4
    assert 0.1 <= report["suggested_dup_threshold"] <= 0.99
    assert {"half", "jpeg35", "gray", "png16", "exif_rot", "mirror", "rot90", "crop20"} <= set(report["per_variant"])
    assert all(0.0 <= v["recall"] <= 1.0 for v in report["per_variant"].values())
    assert report["per_variant"]["png16"]["recall"] == 1.0  # the same pixels, another encoding
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


def _search_json(capsys: pytest.CaptureFixture[str], index: Path, queries: Path, *extra: str) -> list[dict]:  # type: ignore[type-arg]
    assert main(["-q", "search", "--index", str(index), "--query-dir", str(queries), "--json", *extra]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_search_threshold_diverse_and_explain(
    built_index: Path, photo_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = tmp_path / "q"
    queries.mkdir()
    shutil.copyfile(photo_dir / "coffee.png", queries / "coffee.png")  # indexed twice, byte-identical
    (everything,) = _search_json(capsys, built_index, queries, "--k", "12")
    full = everything["results"]
    (plain,) = _search_json(capsys, built_index, queries, "--k", "3")
    assert plain["results"] == full[:3]
    copies = {str(photo_dir / "coffee.png"), str(photo_dir / "sub_coffee_copy.png")}
    assert {r["path"] for r in plain["results"][:2]} == copies  # the plain top 2 is one picture twice

    cut = full[4]["score"]
    (above,) = _search_json(capsys, built_index, queries, "--k", "12", "--threshold", repr(cut))
    assert above["results"] == [r for r in full if r["score"] >= cut] and len(above["results"]) >= 5

    (diverse,) = _search_json(capsys, built_index, queries, "--k", "3", "--diverse")
    got = diverse["results"]
    assert got[0] == full[0] and len(got) == 3
    assert len(copies & {r["path"] for r in got}) == 1  # one copy, then other pictures
    assert all(r in full for r in got)  # same scores as plain search, only the order and choice change
    (lam1,) = _search_json(capsys, built_index, queries, "--k", "3", "--diverse", "1")
    assert lam1["results"] == plain["results"]  # lambda 1 is plain relevance

    (explained,) = _search_json(capsys, built_index, queries, "--k", "3", "--diverse", "--explain")
    rank_of = {r["path"]: i for i, r in enumerate(full, 1)}
    assert explained["backbone"] == "efficientnet_lite0/hybrid/v1" and explained["engine"] == "sqlite-vec"
    for r in explained["results"]:
        assert r["distance"] == round(1 - r["score"], 6)
        assert r["exact_rank"] == rank_of[r["path"]]
    assert [r["path"] for r in explained["results"]] == [r["path"] for r in got]


def test_info_lists_counts_runs_failures_and_size(
    work: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = work / "images"
    images.mkdir()
    for name in ("coffee.png", "sub_coffee_copy.png", "moon.png"):
        shutil.copyfile(photo_dir / name, images / name)
    (images / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert main(["info", "--index", "./idx"]) == 1
    assert "no index at idx: run `embedlab embed --images-dir IMAGES --out idx` first" in capsys.readouterr().err
    assert main(["-q", "embed", "--images-dir", "images", "--out", "idx"]) == 0
    assert main(["-q", "analyze", "--index", "idx", "--json"]) == 0
    capsys.readouterr()
    assert main(["info", "--index", "idx", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["backbone"], info["recipe"], info["dim"]) == ("efficientnet_lite0", "hybrid", 1347)
    assert (
        info["precision"] == "fp32"
        and len(info["runtimes"]) == 1
        and info["runtimes"][0].split()[0]
        in {
            "openvino",
            "torch",
        }
    )
    assert (info["images"], info["unique_vectors"], info["failed"], info["folders"]) == (3, 2, 1, 1)
    assert [f["path"] for f in info["failures"]] == ["images/bad.jpg"]
    assert info["runs"] == {"analyze": 1, "embed": 1}
    assert [r["command"] for r in info["last_runs"]] == ["analyze", "embed"]
    db = work / "idx" / "embedlab.db"
    wal = db.with_name("embedlab.db-wal")
    assert info["database_bytes"] == db.stat().st_size + (wal.stat().st_size if wal.exists() else 0) > 0
    assert info["schema_version"] >= 4
    assert main(["info", "--index", "idx"]) == 0
    text = capsys.readouterr().out
    assert "images           3 in 1 folder(s), 2 unique vectors" in text and "images/bad.jpg" in text
    assert f"runtime          {info['runtimes'][0]}\n" in text


def test_metrics_out_and_the_runs_table_agree(work: Path, photo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = work / "images"
    images.mkdir()
    for name in ("chelsea.png", "coins.png"):
        shutil.copyfile(photo_dir / name, images / name)
    assert main(["-q", "embed", "--images-dir", "images", "--out", "idx", "--metrics-out", "embed.json"]) == 0
    embed = json.loads((work / "embed.json").read_text())
    assert embed["command"] == "embed" and embed["counts"]["new"] == 2 and embed["embedded_vectors"] == 2
    assert embed["images_per_second"] > 0 and embed["peak_rss_mib"] > 0 and "embed" in embed["timings"]
    args = ["-q", "search", "--index", "idx", "--query-dir", "images", "--k", "1", "--metrics-out", "search.json"]
    assert main(args) == 0
    capsys.readouterr()
    search = json.loads((work / "search.json").read_text())
    assert search["counts"] == {"queries": 2, "failed": 0, "k": 1} and search["engine"] == "sqlite-vec"
    assert search["search_ms_mean"] > 0 and search["search_ms_max"] >= search["search_ms_mean"]
    with Store(work / "idx") as store:
        runs = {r["command"]: r for r in store.runs()}
    assert runs["embed"]["metrics"] == embed and runs["embed"]["id"] == embed["run_id"]
    assert runs["search"]["metrics"] == search
    assert main(["-q", "analyze", "--index", "idx", "--metrics-out", str(work / "nodir" / "m.json")]) == 1
    assert "cannot write --metrics-out" in capsys.readouterr().err


def test_progress_bar_on_a_terminal(work: Path, photo_dir: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    images = work / "images"
    images.mkdir()
    for name in ("chelsea.png", "coins.png", "moon.png"):
        shutil.copyfile(photo_dir / name, images / name)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a 120-column terminal
    with subprocess.Popen(
        [sys.executable, str(ROOT / "embedlab.py"), "embed", "--images-dir", "images", "--out", "tty"],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    ) as proc:
        os.close(terminal)
        seen = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closes when the process exits
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=300) == 0
    os.close(controller)
    text = seen.decode("utf-8", "replace")
    assert "embedding: 100%" in text and "3/3" in text and "\r" in text


def test_python_m_embedlab_runs_the_cli(work: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "embedlab", "--version"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "embedlab 0.1.0"


def test_wheel_carries_the_migrations_the_command_and_the_pins(tmp_path: Path) -> None:
    """What `pip install .` installs, built offline with the setuptools at hand (no torch install)."""
    import importlib.util
    import zipfile

    setuptools = pytest.importorskip("setuptools")
    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:
        pytest.skip(f"setuptools {setuptools.__version__} cannot build wheels alone (requirements-dev pins 84.2.1)")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.txt"):
        shutil.copyfile(ROOT / name, src / name)
    for folder in ("embedlab", "migrations"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(src),
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("embedlab-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith("dist-info/METADATA"))).decode()
        entry = zf.read(next(n for n in names if n.endswith("dist-info/entry_points.txt"))).decode()
    migrations = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert migrations and {f"embedlab/migrations/{m}" for m in migrations} <= names
    assert "embedlab/__main__.py" in names and "embedlab = embedlab.cli:main" in entry
    pins = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.strip()[:1].isalpha()]
    assert pins and all(f"Requires-Dist: {pin}" in meta for pin in pins)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux carries ru_maxrss over fork and exec")
def test_peak_memory_metric_is_the_process_own_not_its_parents() -> None:
    """A command started by a process holding much memory (a pipeline, a benchmark) must not
    report that parent's peak as its own, as ru_maxrss would."""
    held = np.ones(512 * 2**20 // 8)  # 512 MiB resident in this (parent) process
    code = "from embedlab.provenance import peak_rss_mib; print(peak_rss_mib())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert held.sum() > 0 and 1 < float(out) < 256  # a bare interpreter: tens of MiB
