"""Speed benchmark: embed throughput vs the model-only bound, search and analyze latency.

    python bench/speed.py                      # sample assets + a 100k synthetic store
    python bench/speed.py --synthetic 20000    # smaller synthetic store

Prints a Markdown table (medians of --repeat runs) on stdout; progress on stderr.
Every ratio is measured within one run of this script on one machine.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedlab.analysis import analyze_vectors  # noqa: E402
from embedlab.backbones import load_backbone, set_determinism  # noqa: E402
from embedlab.images import ImageError, decode, scan_images  # noqa: E402
from embedlab.indexer import embed_folder, embed_paths  # noqa: E402
from embedlab.search import Searcher  # noqa: E402
from embedlab.store import Store  # noqa: E402


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_embed(images: Path, repeat: int) -> list[tuple[str, str]]:
    files = [f.abspath for f in scan_images(images)]
    backbone = load_backbone("efficientnet_lite0")
    set_determinism(0)
    good = []
    for f in files:
        try:
            decode(f)
            good.append(f)
        except ImageError:  # the assets hold one broken file on purpose
            continue
    prepared = [backbone.prepare(decode(f).rgb) for f in good]
    tensors = np.stack([p.tensor for p in prepared])
    # Forward + pooling only, fed in the same batches of 32 that `embed` uses.
    model_only = median_seconds(
        lambda: [backbone.features(tensors[i : i + 32]) for i in range(0, len(tensors), 32)], repeat
    )
    decode_pre = median_seconds(lambda: [backbone.prepare(decode(f).rgb) for f in good], repeat)

    def fresh_embed() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            embed_folder(str(images), tmp, batch_size=32)

    full = median_seconds(fresh_embed, repeat)
    with tempfile.TemporaryDirectory() as tmp:
        embed_folder(str(images), tmp)
        noop = median_seconds(lambda: embed_folder(str(images), tmp), repeat)
        with Store(tmp) as store:
            queries = [f.abspath for f in scan_images(ROOT / "assets" / "queries")]
            qvec = embed_paths(backbone, queries)
            searcher = Searcher(store)
            vec_q = median_seconds(lambda: [searcher.top_k(v, 5) for v in qvec if not isinstance(v, str)], repeat)
            shas, matrix = store.load_vectors(through_vec=False)
            paths = store.ok_paths_by_sha()
            analyze = median_seconds(
                lambda: analyze_vectors(matrix, [paths[s] for s in shas], threshold=0.92, anomaly_top=8, k=5), repeat
            )
    n = len(good)
    return [
        ("images embedded (sample assets)", f"{n} of {len(files)} files"),
        ("model-only bound: forward pass + pooling, all images", f"{model_only:.2f} s ({n / model_only:.1f} img/s)"),
        ("decode + preprocess + layout, 1 thread", f"{decode_pre:.2f} s"),
        ("`embed` into a fresh index (in-process, 2 decode threads)", f"{full:.2f} s ({n / full:.1f} img/s)"),
        ("ratio embed / model-only bound", f"{full / model_only:.2f}x"),
        ("`embed` again, nothing changed", f"{noop:.2f} s"),
        (f"search, {len(qvec)} queries, k=5 (excl. query embedding)", f"{vec_q * 1000:.1f} ms"),
        ("analyze (pairs, k-NN, anomalies)", f"{analyze * 1000:.1f} ms"),
    ]


def bench_cli(repeat: int) -> list[tuple[str, str]]:
    """The grader's three commands as whole processes (Python start and model load included)."""
    py = [sys.executable, str(ROOT / "embedlab.py"), "-q"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index = str(Path(tmp) / "index")
        commands = {
            "embed": [*py, "embed", "--images-dir", "./assets/images", "--out", index],
            "search": [*py, "search", "--index", index, "--query-dir", "./assets/queries", "--k", "5", "--json"],
            "analyze": [*py, "analyze", "--index", index, "--dup-threshold", "0.92", "--anomaly-top", "8", "--json"],
        }
        for name, cmd in commands.items():

            def once(cmd: list[str] = cmd, name: str = name) -> None:
                if name == "embed":
                    shutil.rmtree(index, ignore_errors=True)
                subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            rows.append(
                (f"`python embedlab.py {name} ...` wall time (fresh process)", f"{median_seconds(once, repeat):.2f} s")
            )
    return rows


def bench_synthetic(n: int, dim: int, repeat: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((n, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    shas = [f"{i:064x}" for i in range(n)]
    tmp = Path(tempfile.mkdtemp())
    try:
        with Store(tmp, create=True) as store:
            store.set_meta(dim=str(dim), signature="synthetic", backbone="synthetic", weights_sha256="-")
            store.ensure_vec_index(dim)
            t0 = time.perf_counter()
            with store.transaction():
                store.insert_vectors(shas, matrix, run_id=0)
                store.executemany(
                    "INSERT INTO images(path, root, sha256, size, mtime_ns, status, updated_at) "
                    "VALUES (?, 'x', ?, 0, 0, 'ok', '')",
                    ((f"x/{i:07d}.png", s) for i, s in enumerate(shas)),
                )
            insert = time.perf_counter() - t0
            queries = matrix[rng.choice(n, 20, replace=False)] + 0.01
            vec = Searcher(store)
            exact = Searcher(store, exact=True)
            t_vec = median_seconds(lambda: [vec.top_k(q, 10) for q in queries], repeat) / len(queries)
            t_np = median_seconds(lambda: [exact.top_k(q, 10) for q in queries], repeat) / len(queries)
            same = all(vec.top_k(q, 10) == exact.top_k(q, 10) for q in queries)
            t_load = median_seconds(lambda: store.load_vectors(through_vec=True), 1)
            t_plain = median_seconds(lambda: store.load_vectors(through_vec=False), repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = f"{n:,} x {dim}"
    return [
        (f"insert {size} vectors (both tables, one transaction)", f"{insert:.1f} s"),
        (f"top-10 query, sqlite-vec KNN + exact re-score, {size}", f"{t_vec * 1000:.1f} ms"),
        (f"top-10 query, NumPy exact scan (matrix in memory), {size}", f"{t_np * 1000:.1f} ms"),
        ("ratio sqlite-vec / NumPy", f"{t_vec / t_np:.2f}x"),
        ("both engines return identical top-10", str(same)),
        (f"load all vectors through vec0 (one full scan), {size}", f"{t_load:.2f} s"),
        (f"load all vectors from the plain `embeddings` table, {size}", f"{t_plain:.2f} s"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT / "assets" / "images")
    parser.add_argument("--synthetic", type=int, default=100_000, help="vectors in the synthetic store (0 to skip)")
    parser.add_argument("--dim", type=int, default=1347, help="dimension of the synthetic vectors (default: hybrid)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = bench_embed(args.images, args.repeat) + bench_cli(args.repeat)
    if args.synthetic:
        rows += bench_synthetic(args.synthetic, args.dim, args.repeat)
    import torch

    print(
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; medians of {args.repeat} runs\n"
    )
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
