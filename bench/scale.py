"""Search and analyze at scale: 10k to 1M synthetic vectors in a real embedlab store.

    python bench/scale.py                                  # 10k and 100k (about 10 minutes on 2 cores)
    python bench/scale.py --sizes 10000 --analyze-sizes 10000 --queries 20 --repeat 3   # quick
    python bench/scale.py --sizes 1000000 --analyze-sizes 1000000                       # long

The vectors are synthetic but shaped like image embeddings: unit vectors of the
default recipe's dimension (1347) drawn around n/250 cluster centres (40 to
4,000) with a power-law spectrum (most variance in few directions) and one
shared component, so nearest neighbours are meaningful and recall numbers mean
something. Queries are fresh draws from the same mixture.

Per size it reports, in one run: the store's bytes per image, KNN latency
(median over queries x --repeat) of sqlite-vec's exact scan, a NumPy exact scan
of the matrix in memory, faiss IndexFlatIP (when installed), and embedlab's
HNSW sidecar with exact re-scoring, with recall@5 against exact for every
approximate path; the recall@5 of scores computed from compressed copies
(float16, int8, PCA-256) instead of float32; and, for --analyze-sizes,
`analyze` in a fresh process (wall time, peak memory) with its k-NN graph
recall@10 on a sample. Tables go to stdout (Markdown), progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedlab import ann  # noqa: E402
from embedlab.analysis import (  # noqa: E402
    evidence_loader,
    fit_budget,
    load_for_analysis,
    neighbours,
    report,
    verify_in_chunks,
)
from embedlab.duplicates import CANDIDATE_K, candidate_pairs  # noqa: E402
from embedlab.evidence import ORB_FEATURES, THUMB_SIDE, Evidence  # noqa: E402
from embedlab.provenance import peak_rss_mib  # noqa: E402
from embedlab.search import ANN_CANDIDATES, Searcher  # noqa: E402
from embedlab.store import Store  # noqa: E402

DIM = 1347
K = 5
CHUNK = 20_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- synthetic vectors ------------------------------------------------------------


def _spectrum(dim: int) -> np.ndarray:
    s = np.arange(1, dim + 1, dtype=np.float64) ** -0.75
    return (s / np.linalg.norm(s)).astype(np.float32)


class Mixture:
    """A fixed mixture of Gaussians; chunks are drawn from their own seeds, so any
    chunk can be made again without the others."""

    def __init__(self, n: int, dim: int, seed: int = 0):
        rng = np.random.default_rng([seed, 0])
        self.dim, self.seed = dim, seed
        self.sigma = _spectrum(dim)
        count = int(np.clip(n // 250, 40, 4000))
        self.centres = rng.standard_normal((count, dim), dtype=np.float32) * self.sigma
        self.spread = rng.uniform(0.4, 1.0, count).astype(np.float32)
        self.offset = np.zeros(dim, np.float32)
        self.offset[0] = 1.0  # a component every vector shares, as the hybrid recipe's constant

    def draw(self, stream: int, start: int, rows: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, stream, start])
        label = rng.integers(0, len(self.centres), rows)
        x = rng.standard_normal((rows, self.dim), dtype=np.float32) * self.sigma
        x *= self.spread[label, None]
        x += self.centres[label]
        x += self.offset
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def chunks(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, n, CHUNK):
            yield start, self.draw(1, start, min(CHUNK, n - start))

    def queries(self, count: int) -> np.ndarray:
        return self.draw(2, 0, count)


# -- helpers -----------------------------------------------------------------------


def per_query_ms(fn: Callable[[np.ndarray], object], queries: np.ndarray, repeat: int) -> float:
    """Median latency of one query, over every query and repeat."""
    times = []
    for _ in range(repeat):
        for q in queries:
            t0 = time.perf_counter()
            fn(q)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def recall(found: list[list[int]] | list[np.ndarray] | np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(map(int, f)) & set(map(int, t))) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def top_k_stream(score_chunks: Iterator[tuple[int, np.ndarray]], k: int) -> np.ndarray:
    """Row indices of the k best scores per query, over (offset, (queries, rows)) chunks."""
    best_idx: np.ndarray | None = None
    best_val: np.ndarray | None = None
    for offset, scores in score_chunks:
        idx = np.argsort(-scores, axis=1, kind="stable")[:, :k] + offset
        val = np.take_along_axis(scores, idx - offset, axis=1)
        if best_idx is None or best_val is None:
            best_idx, best_val = idx, val
            continue
        all_idx, all_val = np.hstack([best_idx, idx]), np.hstack([best_val, val])
        order = np.lexsort((all_idx, -all_val), axis=-1)[:, :k]
        best_idx, best_val = np.take_along_axis(all_idx, order, axis=1), np.take_along_axis(all_val, order, axis=1)
    assert best_idx is not None
    return best_idx


def pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def peak_rss_gib() -> float:
    """This process's own peak memory (embedlab's run metric; see provenance.peak_rss_mib)."""
    return (peak_rss_mib() or 0.0) / 1024


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# -- one store ---------------------------------------------------------------------


def build_store(folder: Path, mix: Mixture, n: int, matrix: np.ndarray) -> float:
    """A real embedlab store of n synthetic vectors (both tables, one image row each)."""
    t0 = time.perf_counter()
    with Store(folder, create=True) as store:
        store.set_meta(dim=str(mix.dim), signature="synthetic", backbone="synthetic", weights_sha256="-")
        store.ensure_vec_index(mix.dim)
        for start, x in mix.chunks(n):
            matrix[start : start + len(x)] = x
            shas = [f"{i:064x}" for i in range(start, start + len(x))]
            with store.transaction():
                store.insert_vectors(shas, x, run_id=0)
                store.insert_evidence(shas, synthetic_evidence(mix.seed, start, len(x)))
                store.executemany(
                    "INSERT INTO images(path, root, sha256, size, mtime_ns, status, updated_at) "
                    "VALUES (?, 'x', ?, 0, 0, 'ok', '')",
                    ((f"x/{int(s, 16):07d}.png", s) for s in shas),
                )
            log(f"  inserted {start + len(x):,} / {n:,}")
        store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - t0


def synthetic_evidence(seed: int, start: int, rows: int) -> list[Evidence]:
    """Same-picture evidence of the full size (thumbnail, ORB_FEATURES keypoints) with random content:
    what verifying a pair of distinct pictures costs, which is nearly every candidate."""
    rng = np.random.default_rng([seed, 3, start])
    thumbs = rng.integers(0, 256, (rows, THUMB_SIDE, THUMB_SIDE), dtype=np.uint8)
    points = rng.random((rows, ORB_FEATURES, 2), dtype=np.float32)
    descriptors = rng.integers(0, 256, (rows, ORB_FEATURES, 32), dtype=np.uint8)
    return [Evidence(640, 480, thumbs[i], points[i], descriptors[i]) for i in range(rows)]


def _complete(folder: Path, n: int) -> bool:
    if not (folder / "embedlab.db").is_file():
        return False
    with Store(folder) as store:
        return store.vector_count() == n and store.referenced_vector_count() == n


def compressed_recall(matrix: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """recall@5 when scores come from a compressed copy instead of float32 (no re-score)."""
    sample = matrix[np.linspace(0, len(matrix) - 1, min(len(matrix), 20_000)).astype(int)]
    _, vectors = np.linalg.eigh(sample.T.astype(np.float64) @ sample.astype(np.float64))
    basis = np.ascontiguousarray(vectors[:, ::-1][:, :256], dtype=np.float32)
    qp = queries @ basis

    def f16(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float16).astype(np.float32) @ queries.T

    def i8(x: np.ndarray) -> np.ndarray:
        scale = np.abs(x).max(axis=1, keepdims=True) / 127  # per-vector scale: cosine does not see it
        codes = np.round(x / scale).astype(np.int8)
        return (codes.astype(np.float32) @ queries.T) * scale

    def pca(x: np.ndarray) -> np.ndarray:
        return (x @ basis) @ qp.T

    out = {}
    for name, fn in (("float16", f16), ("int8 (per-vector scale)", i8), ("PCA to 256 dims", pca)):
        chunks = ((s, fn(matrix[s : s + CHUNK]).T) for s in range(0, len(matrix), CHUNK))
        out[name] = recall(top_k_stream(chunks, K), truth)
    return out


def bench_size(n: int, args: argparse.Namespace, work: Path) -> dict[str, object]:
    log(f"== {n:,} vectors (load {load()})")
    mix = Mixture(n, args.dim, seed=0)
    queries = mix.queries(args.queries)
    folder = work / f"store-{n}"
    row: dict[str, object] = {"n": n}
    matrix = np.empty((n, args.dim), dtype=np.float32)
    if _complete(folder, n):  # --reuse: a store this script built before
        log("  reusing the store built earlier")
        for start, x in mix.chunks(n):
            matrix[start : start + len(x)] = x
        row["insert_s"] = None
    else:
        shutil.rmtree(folder, ignore_errors=True)
        row["insert_s"] = build_store(folder, mix, n, matrix)
    log(f"  insert: {row['insert_s']}")
    db = folder / "embedlab.db"
    row["db_bytes_per_image"] = db.stat().st_size / n
    with Store(folder) as store:
        row["embeddings_bytes_per_vector"] = store.execute("SELECT avg(length(vector)) FROM embeddings")[0][0]

    log("numpy exact")
    truth = top_k_stream(((s, queries @ matrix[s : s + CHUNK].T) for s in range(0, n, CHUNK)), K)

    def numpy_exact(q: np.ndarray) -> np.ndarray:
        scores = matrix @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    row["numpy_ms"] = per_query_ms(numpy_exact, queries, args.repeat)
    log(f"  numpy: {row['numpy_ms']:.1f} ms")
    log("compressed copies")
    row["compressed_recall"] = compressed_recall(matrix, queries, truth)
    log(f"  compressed: {row['compressed_recall']}")
    matrix = np.empty((0, args.dim), np.float32)  # free 5.4 GB at 1M before the next peer

    try:
        row["faiss_ms"], row["faiss_recall"] = faiss_flat(mix, n, queries, truth, args.repeat)
        log(f"  faiss: {row['faiss_ms']:.1f} ms")
    except ImportError:
        row["faiss_ms"] = None

    def ids(hits: list) -> list[int]:
        return [int(h.path[2:9]) for h in hits]

    with Store(folder) as store:
        log("sqlite-vec exact")
        vec = Searcher(store, ann="never")
        slow = queries[: args.slow_queries]
        row["sqlite_vec_ms"] = per_query_ms(lambda q: vec.top_k(q, K), slow, args.slow_repeat)
        row["sqlite_vec_recall"] = recall([ids(vec.top_k(q, K)) for q in slow], truth[: len(slow)])
        log(f"  sqlite-vec: {row['sqlite_vec_ms']:.1f} ms, recall {row['sqlite_vec_recall']}")
    if n in args.analyze_sizes:  # before the sidecar, the longest step at 1M
        row.update(bench_analyze(folder, args))
    with Store(folder) as store:
        for dtype in args.sidecar_dtypes:
            log(f"HNSW sidecar {dtype} ({args.build_threads}-thread build)")
            t0 = time.perf_counter()
            if args.reuse_sidecar and ann.sidecar_path(store).is_file():
                row[f"ann_{dtype}_build_s"] = None  # built by an earlier run; `search` checks it is in sync
            else:
                ann.remove_sidecar(store)  # embedlab's own build; one thread unless --build-threads
                ann.open_synced(store, dtype, threads=args.build_threads)
                row[f"ann_{dtype}_build_s"] = time.perf_counter() - t0
            row[f"ann_{dtype}_bytes_per_vector"] = ann.sidecar_path(store).stat().st_size / n
            t0 = time.perf_counter()
            fast = Searcher(store, ann="always")
            row[f"ann_{dtype}_open_ms"] = (time.perf_counter() - t0) * 1000
            row[f"ann_{dtype}_ms"] = per_query_ms(lambda q, f=fast: f.top_k(q, K), queries, args.repeat)  # type: ignore[misc]
            row[f"ann_{dtype}_recall"] = recall([ids(fast.top_k(q, K)) for q in queries], truth)
            log(f"  HNSW {dtype}: " + json.dumps({k: v for k, v in row.items() if k.startswith(f"ann_{dtype}")}))
            del fast
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    log(json.dumps(row, default=str))
    return row


def faiss_flat(mix: Mixture, n: int, queries: np.ndarray, truth: np.ndarray, repeat: int) -> tuple[float, float]:
    """faiss IndexFlatIP, the exact peer: (median ms per query, recall@5). The index is freed on
    return (its reset() keeps the 5.4 GB buffer at 1M, which the analyze child must not start beside)."""
    import faiss

    log("faiss IndexFlatIP")
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    flat = faiss.IndexFlatIP(mix.dim)
    for _, x in mix.chunks(n):
        flat.add(x)
    ms = per_query_ms(lambda q: flat.search(q[None, :], K), queries, repeat)
    return ms, recall(flat.search(queries, K)[1], truth)


def bench_analyze(folder: Path, args: argparse.Namespace) -> dict[str, object]:
    """`analyze` in a fresh process: wall time, peak memory, k-NN graph recall."""
    log(f"analyze (fresh process, load {load()})")
    cmd = [sys.executable, __file__, "--analyze-child", str(folder), "--memory-mb", str(args.memory_mb)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"analyze child failed with status {proc.returncode}")
    child = json.loads(out)
    log(f"  analyze: wall {wall:.0f} s {out.strip()}")
    return {"analyze_wall_s": wall, **child}


def analyze_child(folder: Path, memory_mb: int) -> None:
    """Runs in its own process so that its peak memory is its own."""
    t0 = time.perf_counter()
    with Store(folder) as store:
        shas, matrix = load_for_analysis(store)
        t_load = time.perf_counter() - t0
        done = [0, 0]  # rows, next rows count to log at

        def progress(rows: int) -> None:
            done[0] += rows
            if done[0] >= done[1]:
                log(f"  analyze graph: {done[0]:,} / {len(shas):,} rows, {time.perf_counter() - t0:.0f} s")
                done[1] += max(1, len(shas) // 20)

        # As `analyze --k 10` does: the graph holds CANDIDATE_K neighbours, the anomalies use 10.
        hood = neighbours(matrix, max(10, CANDIDATE_K), 2.0, memory_mb=memory_mb, approximate=None, on_rows=progress)
        t_graph = time.perf_counter() - t0 - t_load
        candidates = candidate_pairs(hood.index, hood.sim)
        log(f"  verifying {len(candidates):,} candidate pairs, {time.perf_counter() - t0:.0f} s")
        checked = [0]

        def verified(pairs: int) -> None:
            checked[0] += pairs
            log(f"  verified {checked[0]:,} / {len(candidates):,} pairs, {time.perf_counter() - t0:.0f} s")

        budget = fit_budget(len(shas))
        log(f"  keypoint fits: each item's {budget.rank} nearest, {budget.keypoints} keypoints a side")
        links = verify_in_chunks(candidates, evidence_loader(store, shas), on_pairs=verified, budget=budget)
        t_verify = time.perf_counter() - t0 - t_load - t_graph
        by_sha = store.ok_paths_by_sha()
        paths = [by_sha[s] for s in shas]
        result = report(hood.nearest(10), paths, anomaly_top=8, quality=store.quality(), links=links, threshold=0.92)
        seconds = time.perf_counter() - t0
        peak_gb = peak_rss_gib()
        # Ground truth for a sample of items: an exact scan of the float32 store, streamed.
        rng = np.random.default_rng(1)
        sample = np.sort(rng.choice(len(shas), size=min(len(shas), 300), replace=False))
        q = store.vectors_for([shas[i] for i in sample])
        best = []
        for offset, chunk in _offsets(store.iter_referenced_vectors(CHUNK)):
            scores = q @ chunk.T
            hit = (sample >= offset) & (sample < offset + len(chunk))
            scores[np.nonzero(hit)[0], sample[hit] - offset] = -np.inf
            best.append((offset, scores))
        truth = top_k_stream(iter(best), 10)
    print(
        json.dumps(
            {
                "analyze_s": seconds,
                "analyze_load_s": t_load,
                "analyze_graph_s": t_graph,
                "analyze_verify_s": t_verify,
                "verified_pairs": len(candidates),
                "analyze_peak_gb": peak_gb,
                "analyze_matrix_dtype": str(matrix.dtype),
                "knn_graph_recall10": recall(hood.index[sample, :10], truth),
                "duplicate_groups": len(result["duplicate_groups"]),
            }
        )
    )


def _offsets(chunks: Iterator[tuple[list[str], np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
    offset = 0
    for _, chunk in chunks:
        yield offset, chunk
        offset += len(chunk)


def hnsw_only(n: int, args: argparse.Namespace) -> None:
    """The sidecar's graph (same settings) straight from the vectors, without a store: build time,
    candidate latency and recall@5 after re-scoring (from the graph's own copies). embedlab builds
    on one thread (reproducible bytes); --build-threads only shortens this measurement, the graph's
    query speed and recall do not depend on it beyond noise."""
    mix = Mixture(n, args.dim, seed=0)
    queries = mix.queries(args.queries)
    log(f"== HNSW only, {n:,} vectors (load {load()})")
    truth = top_k_stream(((s, queries @ x.T) for s, x in mix.chunks(n)), K)
    index = ann._new_index(args.dim, args.sidecar_dtypes[0])
    t0 = time.perf_counter()
    for start, x in mix.chunks(n):
        index.add(np.arange(start, start + len(x)), x, threads=args.build_threads)
        log(f"  added {start + len(x):,} / {n:,} ({time.perf_counter() - t0:.0f} s)")
    build = time.perf_counter() - t0
    graph = ann.AnnIndex(index, args.sidecar_dtypes[0])

    def query(q: np.ndarray) -> np.ndarray:
        keys = graph.search(q, max(K + 16, ANN_CANDIDATES))
        scores = np.vstack(index.get(keys)).astype(np.float64) @ q.astype(np.float64)
        return keys[np.lexsort((keys, -scores))[:K]]

    ms = per_query_ms(query, queries, args.repeat)
    found = recall([query(q) for q in queries], truth)
    peak = peak_rss_gib()
    print(f"HNSW {args.sidecar_dtypes[0]}, {n:,} vectors: {args.build_threads}-thread build {build:.0f} s, "
          f"{ms:.2f} ms/query (candidates + re-score, no SQL), recall@5 {found:.3f}, "
          f"process peak memory {peak:.2f} GB; load {load()}")  # fmt: skip


def print_tables(rows: list[dict[str, object]], args: argparse.Namespace, started: str, load_before: str) -> None:
    def ms(v: object) -> str:
        return "-" if v is None else f"{float(v):.1f} ms"  # type: ignore[arg-type]

    print(f"Machine: {machine()}; load average (1/5/15 min) {load_before} at start, {load()} at end")
    print(f"Date: {started}; numpy {np.__version__}, sqlite-vec {pkg('sqlite-vec')}, usearch {pkg('usearch')}, "
          f"faiss-cpu {pkg('faiss-cpu')}")  # fmt: skip
    print(f"Command: python bench/scale.py {' '.join(sys.argv[1:])}")
    print(f"Latency: median per query over {args.queries} queries x {args.repeat} runs (sqlite-vec: "
          f"{args.slow_queries} queries x {args.slow_repeat}); k = {K}; recall@5 against exact\n")  # fmt: skip
    print("| vectors | sqlite-vec exact | NumPy exact (in RAM) | faiss IndexFlatIP | "
          + " | ".join(f"HNSW {d} + exact re-score (recall@5)" for d in args.sidecar_dtypes) + " |")  # fmt: skip
    print("|---" * (4 + len(args.sidecar_dtypes)) + "|")
    for r in rows:
        cells = [f"{int(r['n']):,}", ms(r["sqlite_vec_ms"]), ms(r["numpy_ms"]), ms(r.get("faiss_ms"))]  # type: ignore[call-overload]
        cells += [f"{ms(r[f'ann_{d}_ms'])} ({float(r[f'ann_{d}_recall']):.3f})" for d in args.sidecar_dtypes]  # type: ignore[arg-type]
        print("| " + " | ".join(cells) + " |")
    heads = [
        f"HNSW {d} build ({args.build_threads} thread) | {d} sidecar bytes/vector | open" for d in args.sidecar_dtypes
    ]
    print("\n| vectors | store insert | DB bytes/image | " + " | ".join(heads) + " |")
    print("|---" * (3 + 3 * len(args.sidecar_dtypes)) + "|")
    for r in rows:
        insert = "-" if r["insert_s"] is None else f"{float(r['insert_s']):.0f} s"  # type: ignore[arg-type]
        cells = [f"{int(r['n']):,}", insert, f"{float(r['db_bytes_per_image']):,.0f}"]  # type: ignore[call-overload, arg-type]
        for d in args.sidecar_dtypes:
            build, size = r[f"ann_{d}_build_s"], float(r[f"ann_{d}_bytes_per_vector"])  # type: ignore[arg-type]
            cells += ["-" if build is None else f"{float(build):.0f} s", f"{size:,.0f}", ms(r[f"ann_{d}_open_ms"])]  # type: ignore[arg-type]
        print("| " + " | ".join(cells) + " |")
    names = list(rows[0]["compressed_recall"])  # type: ignore[call-overload]
    print("\n| vectors | recall@5 from float32 (exact) | " + " | ".join(f"from {n}" for n in names) + " |")
    print("|---" * (2 + len(names)) + "|")
    for r in rows:
        rec = r["compressed_recall"]
        print(f"| {int(r['n']):,} | 1.000 | " + " | ".join(f"{rec[n]:.3f}" for n in names) + " |")  # type: ignore[index, call-overload]
    done = [r for r in rows if "analyze_s" in r]
    if done:
        print("\n| vectors | `analyze` total (fresh process) | load | k-NN graph | peak memory | vectors held as | "
              "k-NN graph recall@10 (300 items) |")  # fmt: skip
        print("|---" * 7 + "|")
        for r in done:
            print(f"| {int(r['n']):,} | {float(r['analyze_wall_s']):.0f} s | {float(r['analyze_load_s']):.0f} s | "  # type: ignore[call-overload, arg-type]
                  f"{float(r['analyze_graph_s']):.0f} s | {float(r['analyze_peak_gb']):.2f} GB | "  # type: ignore[arg-type]
                  f"{r['analyze_matrix_dtype']} | {float(r['knn_graph_recall10']):.3f} |")  # type: ignore[arg-type]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated store sizes")
    parser.add_argument("--analyze-sizes", default="10000,100000", help="sizes at which to time `analyze` too")
    parser.add_argument("--dim", type=int, default=DIM)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slow-queries", type=int, default=10, help="queries for sqlite-vec's full scan")
    parser.add_argument("--slow-repeat", type=int, default=1)
    parser.add_argument("--sidecar-dtypes", default="f16", help="HNSW sidecar dtypes to build (f16,i8,f32)")
    parser.add_argument("--memory-mb", type=int, default=1024, help="analyze --memory-mb")
    parser.add_argument("--workdir", type=Path, default=None, help="where the stores go (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="folder of stores kept by an earlier --keep run (store-N); implies --keep",
    )
    parser.add_argument("--hnsw-only", type=int, default=0, help="only build and query the HNSW graph at this size")
    parser.add_argument(
        "--build-threads",
        type=int,
        default=1,
        help="threads for the HNSW builds (1: embedlab's own one-thread, reproducible build)",
    )
    parser.add_argument(
        "--reuse-sidecar", action="store_true", help="with --reuse: query the sidecar a kept store already has"
    )
    parser.add_argument("--analyze-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analyze_child:
        analyze_child(args.analyze_child, args.memory_mb)
        return
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    args.analyze_sizes = {int(x) for x in args.analyze_sizes.split(",") if x}
    args.sidecar_dtypes = [d for d in args.sidecar_dtypes.split(",") if d]
    if args.hnsw_only:
        hnsw_only(args.hnsw_only, args)
        return
    started, load_before = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), load()
    work = args.reuse or Path(tempfile.mkdtemp(prefix="embedlab-scale-", dir=args.workdir))
    keep = args.keep or args.reuse is not None
    args.keep = keep
    try:
        rows = [bench_size(n, args, work) for n in args.sizes]
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    print_tables(rows, args, started, load_before)


if __name__ == "__main__":
    main()
