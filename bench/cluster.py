"""Cluster-mode benchmark: local embed vs Ray with 1 and 2 workers, and the single writer's ceiling.

    python bench/cluster.py                      # 3 distinct variants of every sample asset, 3 rounds
    python bench/cluster.py --copies 2 --repeat 5 --writer 20000

Every round embeds the same folder into a fresh index three ways, interleaved so
that load changes on a shared machine hit all three alike: in-process (the
local pipeline), and through `embed --ray` on a Ray instance started once on
this machine with 1 and with 2 CPU workers. For the Ray runs it also times when
each batch reaches the writer, which splits a run into its fixed start-up
(workers start, each loads the model) and its steady rate. The writer part
feeds `indexer.write_batch` synthetic results (unit float32 vectors + rows) into
a real store, one transaction per batch, as the Ray driver does.

Prints a Markdown table (medians over --repeat rounds) on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedlab.cluster import RayExecutor, RaySettings, driver_runtime_env, import_ray  # noqa: E402
from embedlab.images import ImageFileInfo, scan_images  # noqa: E402
from embedlab.indexer import Embedded, EmbedReport, Job, embed_folder, write_batch  # noqa: E402
from embedlab.registry import BackboneSpec  # noqa: E402
from embedlab.store import ImageRow, Store  # noqa: E402


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def make_folder(source: Path, copies: int, out: Path) -> int:
    """``copies`` distinct real images per readable asset (one pixel differs), so every file is new content."""
    n = 0
    for info in scan_images(source):
        try:
            with Image.open(info.abspath) as img:
                rgb = img.convert("RGB")
        except OSError:  # the assets hold one truncated file on purpose
            continue
        for k in range(copies):
            variant = rgb.copy()
            variant.putpixel((0, 0), (k * 37 % 256, k * 91 % 256, k * 13 % 256))
            variant.save(out / f"{Path(info.path).stem}_{k}.png")
            n += 1
    return n


@dataclass
class Timed:
    """An executor wrapper that notes when each batch reaches the writer."""

    inner: RayExecutor
    arrivals: list[tuple[float, int]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def run(
        self, spec: BackboneSpec, root: str, jobs: Sequence[Job], batch_size: int, seed: int
    ) -> Generator[Sequence[Embedded], None, None]:
        start = time.perf_counter()
        for batch in self.inner.run(spec, root, jobs, batch_size, seed):
            self.arrivals.append((time.perf_counter() - start, len(batch)))
            yield batch


@dataclass
class Run:
    embed_s: float  # the embed phase: for Ray, worker start and model loads included
    first_batch_s: float | None = None
    steady_ips: float | None = None  # images/s from the first batch to the last


def run_local(folder: Path, batch_size: int) -> Run:
    with tempfile.TemporaryDirectory() as tmp:
        report = embed_folder(str(folder), tmp, batch_size=batch_size)
    return Run(report.timings["embed"])


def run_ray(folder: Path, batch_size: int, workers: int) -> Run:
    timed = Timed(RayExecutor(RaySettings(workers=workers, cpus_per_worker=1.0)))
    with tempfile.TemporaryDirectory() as tmp:
        report = embed_folder(str(folder), tmp, batch_size=batch_size, executor=timed)
    (t_first, _), (t_last, _) = timed.arrivals[0], timed.arrivals[-1]
    after_first = sum(n for _, n in timed.arrivals[1:])
    steady = after_first / (t_last - t_first) if t_last > t_first else None
    return Run(report.timings["embed"], t_first, steady)


def bench_writer(n: int, dim: int, batch_size: int) -> float:
    """Rows + vectors per second through write_batch into a real store (sqlite-vec index included)."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    results = []
    for i in range(n):
        sha = f"{i:064x}"
        info = ImageFileInfo(f"w/{i:07d}.png", Path(f"w/{i:07d}.png"), 50_000, i)
        row = ImageRow(info.path, "w", sha, info.size, info.mtime_ns, "ok", 256, 256, "PNG", "RGB", 7.1, 0.2, 90.0, 0.5)
        results.append(Embedded(Job(info, sha), row, vectors[i]))
    with tempfile.TemporaryDirectory() as tmp, Store(tmp, create=True) as store:
        store.ensure_vec_index(dim)
        run_id = store.start_run("embed")
        report, done = EmbedReport(new=n), {}
        t0 = time.perf_counter()
        for start in range(0, n, batch_size):
            write_batch(store, results[start : start + batch_size], done, report, run_id)
        seconds = time.perf_counter() - t0
        assert report.embedded_vectors == n and store.vec_loaded
    return n / seconds


def med(values: list[float | None]) -> float:
    return statistics.median(v for v in values if v is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT / "assets" / "images")
    parser.add_argument("--copies", type=int, default=3, help="distinct variants of each asset (default 3)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of local, Ray x1, Ray x2 (default 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--writer", type=int, default=20_000, help="synthetic results for the writer (0 to skip)")
    parser.add_argument("--dim", type=int, default=1347, help="vector dimension for the writer (default: hybrid)")
    args = parser.parse_args()
    logging.getLogger("embedlab").setLevel(logging.WARNING)
    load_before = os.getloadavg()

    rows: list[tuple[str, str]] = []
    if args.writer:
        for batch in (args.batch_size, 256):
            say(f"writer: {args.writer} results in batches of {batch}")
            rate = med([bench_writer(args.writer, args.dim, batch) for _ in range(args.repeat)])
            rows.append((f"single writer: rows + vectors per second, batches of {batch}", f"{rate:,.0f}/s"))

    ray = import_ray()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        n = make_folder(args.images, args.copies, folder)
        t0 = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
            runtime_env=driver_runtime_env(),
        )
        ray_start = time.perf_counter() - t0
        runs: dict[str, list[Run]] = {"local": [], "ray1": [], "ray2": []}
        try:
            for round_no in range(args.repeat):
                say(f"round {round_no + 1}/{args.repeat}: {n} images")
                runs["local"].append(run_local(folder, args.batch_size))
                runs["ray1"].append(run_ray(folder, args.batch_size, 1))
                runs["ray2"].append(run_ray(folder, args.batch_size, 2))
        finally:
            ray.shutdown()

    local = med([r.embed_s for r in runs["local"]])
    rows.append((f"images (distinct real images: {args.copies} variants of each sample asset)", f"{n}"))
    rows.append(("start a local Ray instance (once per `embed --ray`)", f"{ray_start:.1f} s"))
    rows.append(("local `embed`: embed phase", f"{local:.1f} s ({n / local:.1f} img/s)"))
    for key, label in (("ray1", "1 worker"), ("ray2", "2 workers")):
        total = med([r.embed_s for r in runs[key]])
        first = med([r.first_batch_s for r in runs[key]])
        steady = med([r.steady_ips for r in runs[key]])
        rows.append(
            (
                f"Ray, {label}: embed phase (workers start + load model included)",
                f"{total:.1f} s ({n / total:.1f} img/s)",
            )
        )
        rows.append((f"Ray, {label}: first batch written after", f"{first:.1f} s"))
        rows.append((f"Ray, {label}: steady rate after the first batch", f"{steady:.1f} img/s"))
    steady1 = med([r.steady_ips for r in runs["ray1"]])
    steady2 = med([r.steady_ips for r in runs["ray2"]])
    rows.append(("per-image overhead, Ray 1 worker steady vs local", f"{(1 / steady1 - local / n) * 1000:+.1f} ms"))
    rows.append(("ratio Ray 2 workers / 1 worker, steady rate", f"{steady2 / steady1:.2f}x"))

    load_after = os.getloadavg()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Ray {ray.__version__}; medians of {args.repeat} rounds; load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n"
    )
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
