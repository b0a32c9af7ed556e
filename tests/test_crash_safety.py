"""kill -9 in the middle of `embed`, readers during a write, and two writers at once.

These start a real `embed` process (batch size 1, so it commits often) and act
while it is writing. They wait for events (a committed batch, the process
ending), never for a fixed time.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from embedlab.cli import main
from embedlab.indexer import embed_folder

from .conftest import PHOTOS, skimage_image

ROOT = Path(__file__).resolve().parent.parent
N_IMAGES = 24


def _make_folder(folder: Path) -> None:
    """Distinct small crops of the sample photos: every file needs its own forward pass."""
    folder.mkdir()
    photos = [skimage_image(name).convert("RGB") for name in PHOTOS]
    for n in range(N_IMAGES):
        img, i = photos[n % len(photos)], n // len(photos)
        side = min(img.width, img.height) // 2
        box = (i * 23, i * 17, i * 23 + side, i * 17 + side)
        img.crop(box).resize((96, 96), Image.Resampling.BILINEAR).save(folder / f"{n:03d}.png")


def _default_sigint() -> None:
    # A suite started in the background of a non-interactive shell inherits SIGINT ignored,
    # and Python keeps an ignored SIGINT ignored: give the child the default, as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_embed(work: Path, out: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "embedlab.py"), "embed", "--images-dir", "./imgs", "--out", out, "--batch-size=1"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def _committed(db: Path) -> int:
    """Vectors committed so far, read the way any other process would (0 while the file is being made)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM embeddings").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def _wait_for_commits(proc: subprocess.Popen[str], db: Path, at_least: int) -> int:
    deadline = time.monotonic() + 240  # a guard against a hung process, not a timing assertion
    while time.monotonic() < deadline:
        count = _committed(db)
        if count >= at_least or proc.poll() is not None:
            return count
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("embed made no progress")


def _state(db: Path) -> tuple[list[tuple[object, ...]], dict[str, bytes]]:
    conn = sqlite3.connect(db)
    images = conn.execute(
        "SELECT path, sha256, size, status, error, width, height, format, mode, entropy, contrast, sharpness, "
        "brightness, frames FROM images ORDER BY path"
    ).fetchall()
    vectors = {s: bytes(v) for s, v in conn.execute("SELECT sha256, vector FROM embeddings")}
    conn.close()
    return images, vectors


@pytest.fixture
def imgs(work: Path) -> Iterator[Path]:
    _make_folder(work / "imgs")
    yield work / "imgs"


def test_kill_9_mid_embed_then_resume_equals_an_uninterrupted_run(work: Path, imgs: Path) -> None:
    db = work / "killed" / "embedlab.db"
    proc = _start_embed(work, "./killed")
    committed = _wait_for_commits(proc, db, at_least=3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "embed finished before it could be killed"

    # What the killed process left is a valid index holding whole batches only.
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    left = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    rows = conn.execute("SELECT count(*) FROM images WHERE status = 'ok'").fetchone()[0]
    status = conn.execute("SELECT status FROM runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    conn.close()
    assert committed <= left < N_IMAGES and rows == left and status == "running"

    resumed = embed_folder("./imgs", "./killed")
    assert resumed.unchanged == left and resumed.embedded_vectors == N_IMAGES - left  # only what was missing
    embed_folder("./imgs", "./clean")
    assert _state(db) == _state(work / "clean" / "embedlab.db")  # identical rows and vectors, byte for byte
    conn = sqlite3.connect(db)
    runs = [r[0] for r in conn.execute("SELECT status FROM runs WHERE command = 'embed' ORDER BY id")]
    conn.close()
    assert runs == ["interrupted", "ok"]


def test_readers_and_a_second_writer_while_embed_is_writing(
    work: Path, imgs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = work / "index" / "embedlab.db"
    proc = _start_embed(work, "./index")
    try:
        _wait_for_commits(proc, db, at_least=2)
        assert proc.poll() is None, "embed finished before the readers ran"

        # A second embed on the same index refuses at once, naming the first one.
        assert main(["-q", "embed", "--images-dir", "./imgs", "--out", "./index"]) == 1
        err = capsys.readouterr().err.strip()
        assert err == f"embedlab: error: another embed (pid {proc.pid}) is writing to index; wait for it to finish"

        # analyze sees one committed state: every vector it read has its paths, counts agree.
        assert main(["-q", "analyze", "--index", "./index", "--k", "3", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert proc.poll() is None, "embed finished while analyze ran; nothing was tested concurrently"
        assert 2 <= report["images"] == report["unique_vectors"] <= N_IMAGES
        assert all((work / p).is_file() for p in report["anomalies"])

        # search works too (it may finish after the writer: that is fine).
        (work / "q").mkdir()
        shutil.copyfile(imgs / "000.png", work / "q" / "a.png")
        shutil.copyfile(imgs / f"{N_IMAGES - 1:03d}.png", work / "q" / "b.png")
        assert main(["-q", "search", "--index", "./index", "--query-dir", "./q", "--k", "2", "--json"]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(lines) == 2 and all(1 <= len(r["results"]) <= 2 for r in lines)
    finally:
        _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert _committed(db) == N_IMAGES
    # The lock went with the process: a later embed runs.
    assert main(["-q", "embed", "--images-dir", "./imgs", "--out", "./index"]) == 0


@pytest.mark.parametrize(
    ("signum", "status", "message"),
    [
        (signal.SIGTERM, 143, "embedlab: terminated (SIGTERM); committed batches are kept"),
        (signal.SIGINT, 130, "embedlab: interrupted; committed batches are kept"),
    ],
    ids=["SIGTERM", "SIGINT"],
)
def test_sigterm_and_sigint_stop_embed_alike(work: Path, imgs: Path, signum: int, status: int, message: str) -> None:
    """Both record the run 'interrupted' (as kill -9 ends up), keep whole batches, and say so in one line."""
    db = work / "index" / "embedlab.db"
    proc = _start_embed(work, "./index")
    _wait_for_commits(proc, db, at_least=2)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert err.strip().splitlines()[-1] == message and "Traceback" not in err
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    runs = conn.execute("SELECT status, finished_at IS NOT NULL FROM runs WHERE command = 'embed'").fetchall()
    left = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    conn.close()
    assert runs == [("interrupted", 1)] and 2 <= left < N_IMAGES
    resumed = embed_folder("./imgs", "./index")
    assert resumed.unchanged == left and resumed.embedded_vectors == N_IMAGES - left
