"""Cluster mode: a real two-node Ray cluster on loopback writes the same store as a local run."""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from embedlab.backbones import Backbone
from embedlab.cli import main
from embedlab.images import DEFAULT_MAX_PIXELS, scan_images, set_max_pixels, sha256_file
from embedlab.indexer import EmbedReport, Job, embed_folder, embed_jobs, write_batch
from embedlab.store import Store

from .conftest import skimage_image, small

RAY_CLI = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
NODE_FLAGS = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
NODE_FLAGS += ["--object-store-memory", str(80 * 1024 * 1024)]
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_start(args: list[str], temp_dir: str) -> None:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        done = subprocess.run(
            [*RAY_CLI, "start", *args, *NODE_FLAGS, "--temp-dir", temp_dir],
            env=env,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"Ray could not start a node on loopback within {START_TIMEOUT_S} s")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"Ray could not start a node on loopback: {last}")


def _cluster_pids(temp_dir: str) -> set[int]:
    """Our cluster's processes: those naming its temp dir, and their descendants (workers, agents).

    ``ray stop`` would end every Ray process of this user, not only ours.
    """
    parents: dict[int, int] = {}
    ours: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if temp_dir.encode() in cmdline:
            ours.add(int(entry.name))
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in ours} - ours
        ours |= children
        grew = bool(children)
    return ours - {os.getpid()}


def _stop_cluster(temp_dir: str) -> None:
    pids = _cluster_pids(temp_dir)
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            pids = {pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)}
            time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node and a second node, one CPU each, on 127.0.0.1; yields the head's address."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-dev.txt)")
    if not Path("/proc").is_dir():
        pytest.skip("the loopback cluster test finds its Ray processes through /proc (Linux)")
    # Ray puts unix sockets under its temp dir, and their paths must stay under ~107 bytes.
    temp_dir = tempfile.mkdtemp(prefix="elray")
    port = _free_port()
    # A local `ray.init()` leaves a token in the home folder that later clusters pick up, so
    # say how this loopback-only cluster authenticates, for its nodes and for the driver alike.
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        _ray_start(["--head", "--port", str(port), "--include-dashboard", "false"], temp_dir)
        _ray_start(["--address", f"127.0.0.1:{port}"], temp_dir)
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(temp_dir)
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_mode


def _save_photos(folder: Path, names: tuple[str, ...]) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        small(skimage_image(name), 64).convert("RGB").save(folder / f"{name}.png")


def _store_content(index: Path) -> tuple[list[Any], list[Any], list[Any]]:
    """Vectors (both tables) and image rows, without the run ids and timestamps that differ per run."""
    with Store(index) as store:
        vectors = sorted(store.execute("SELECT sha256, dim, vector FROM embeddings"))
        shas, matrix = store.load_vectors(through_vec=True)
        indexed = sorted(zip(shas, (row.tobytes() for row in matrix), strict=True))
        columns = [c for _, c, *_ in store.execute("PRAGMA table_info(images)") if c not in ("run_id", "updated_at")]
        rows = sorted(store.execute(f"SELECT {', '.join(columns)} FROM images"))
    return vectors, indexed, rows


def test_two_node_cluster_writes_what_a_local_run_writes(
    cluster: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = work / "imgs"
    _save_photos(imgs, ("astronaut", "camera"))
    embed_folder("./imgs", "./viaray")  # an earlier local run: the cluster run must only add to it

    _save_photos(imgs, ("coffee", "coins", "horse", "moon"))
    shutil.copyfile(imgs / "coffee.png", imgs / "coffee_copy.png")
    (imgs / "broken.png").write_bytes((imgs / "camera.png").read_bytes()[:300])
    small(skimage_image("rocket"), 160).convert("RGB").save(imgs / "rocket.png")  # above --max-pixels
    capsys.readouterr()
    argv = ["embed", "--images-dir", "./imgs", "--json", "--batch-size", "2", "--max-pixels", "10000"]
    try:
        assert main([*argv, "--out", "./viaray", "--ray", cluster, "--ray-workers", "2"]) == 0
        out, err = capsys.readouterr()
        assert main([*argv, "--out", "./local"]) == 0
        capsys.readouterr()
    finally:
        set_max_pixels(DEFAULT_MAX_PIXELS)  # the CLI sets it for the whole process
    summary = json.loads(out)
    # Planned on the driver exactly as locally: two files unchanged, the rest sent to the workers,
    # the copy shares its original's vector, the truncated file and the one over the workers'
    # pixel limit (the driver's --max-pixels) are error rows.
    assert (summary["images"], summary["unchanged"], summary["failed"]) == (9, 2, 2)
    assert summary["embedded_vectors"] == 4
    assert "7 results from 2 nodes" in err  # both nodes embedded
    assert "Traceback" not in err

    via_ray, local = _store_content(work / "viaray"), _store_content(work / "local")
    assert len(local[0]) == 6 and len(local[2]) == 9
    assert via_ray[0] == local[0]  # embeddings: same content hashes, same float32 bytes
    assert via_ray[1] == local[1]  # and the same bytes in the sqlite-vec index
    assert via_ray[2] == local[2]  # every images row: metrics, sizes, errors

    with Store(work / "viaray") as store:
        versions = json.loads(store.execute("SELECT versions FROM runs ORDER BY id DESC LIMIT 1")[0][0])
    assert versions["ray_address"] == cluster and versions["ray"] == metadata.version("ray")

    # Nothing new: the cluster is not even needed, as a local re-run would be.
    try:
        assert main([*argv, "--out", "./viaray", "--ray", cluster]) == 0
    finally:
        set_max_pixels(DEFAULT_MAX_PIXELS)
    again = json.loads(capsys.readouterr()[0])
    assert (again["unchanged"], again["embedded_vectors"]) == (9, 0)


def test_worker_shape_the_cluster_cannot_hold_is_one_line(
    cluster: str, work: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _save_photos(work / "imgs", ("coins",))
    assert main(["embed", "--images-dir", "imgs", "--out", "idx", "--ray", cluster, "--ray-gpus-per-worker", "1"]) == 1
    err = capsys.readouterr().err
    assert "embedlab: error: the Ray cluster has 2 CPUs and 0 GPUs: not enough for one worker" in err
    assert len(err.strip().splitlines()) == 1


def test_without_ray_installed_the_flag_says_how_to_install_it(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    _save_photos(work / "imgs", ("coins",))
    assert main(["embed", "--images-dir", "imgs", "--out", "idx", "--ray"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "embedlab: error: --ray needs Ray, which is not installed: pip install '.[ray]' " + (
        "(or pip install 'ray[data]==2.60.0')"
    )
    assert not (work / "idx").exists()  # refused before touching the index


def test_ray_flags_need_ray(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _save_photos(work / "imgs", ("coins",))
    assert main(["embed", "--images-dir", "imgs", "--out", "idx", "--ray-workers", "2"]) == 1
    assert "--ray-workers and --ray-gpus-per-worker need --ray" in capsys.readouterr().err


def test_copies_embedded_on_two_workers_and_written_together_keep_one_vector(backbone: Backbone, work: Path) -> None:
    """A cluster can embed two copies of one file apart and hand both vectors to the writer in one batch."""
    _save_photos(work / "imgs", ("coffee", "coins"))
    shutil.copyfile(work / "imgs" / "coffee.png", work / "imgs" / "coffee_copy.png")
    files = scan_images("imgs")
    jobs = [Job(info, sha256_file(info.abspath)) for info in files]
    # One job per "worker": nothing inside embed_jobs can see that two files share content.
    results = [item for job in jobs for item in embed_jobs(backbone, "imgs", [job])]
    assert sum(r.vector is not None for r in results) == 3
    with Store(work / "idx", create=True) as store:
        store.ensure_vec_index(backbone.dim)
        report = EmbedReport(new=len(jobs))
        write_batch(store, results, {}, report, store.start_run("embed"))
        assert report.embedded_vectors == 2
        assert store.execute("SELECT count(*) FROM vec_index")[0][0] == 2
        assert store.execute("SELECT count(*) FROM embeddings")[0][0] == 2
        assert sorted(store.ok_paths_by_sha().values()) == [
            ["imgs/coffee.png", "imgs/coffee_copy.png"],
            ["imgs/coins.png"],
        ]
