"""Anomaly benchmark: embedlab's anomaly score against the plain mean k-NN distance and fastdup.

    python bench/dupset.py                          # build the collection once (bench/.cache/dupset)
    python bench/anomalybench.py                    # holdout table (Markdown on stdout)
    python bench/anomalybench.py --half tune --sweep  # the grid the constants were chosen on

Each half is embedded once (the default recipe, as ``embed`` writes it) into
bench/.cache/anomalybench/<dataset folder>/<half>, its vectors read exactly as ``analyze``
reads them (``load_for_analysis`` with the index's ``semantic_columns``) and its exact
k-NN graph computed; every method ranks the same images. Scored by
``dupscore.score_anomalies`` against the half's ``truth.json`` (planted oddballs):
AUROC, oddballs in the top 8 and in the top N (N = number of oddballs). fastdup scores
only the outliers it lists (its 5th percentile); for its AUROC the others tie below them.
The constants of embedlab/anomaly.py were chosen with ``--sweep`` on the tune half only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dupscore import collection_key, markdown_table, score_anomalies  # noqa: E402

from embedlab import anomaly  # noqa: E402
from embedlab.analysis import load_for_analysis, neighbourhood  # noqa: E402
from embedlab.indexer import embed_folder  # noqa: E402
from embedlab.registry import semantic_columns  # noqa: E402
from embedlab.store import Store  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
DATASET = CACHE / "dupset"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Half:
    name: str
    images: Path
    truth: dict[str, Any]
    paths: list[list[str]]  # relpaths per unique content (row of the graph)
    metrics: list[dict[str, Any] | None]
    index: np.ndarray
    sim: np.ndarray


def load_half(name: str, dataset: Path, k: int, indexes: Path | None = None) -> Half:
    """Embed one half (reusing its index) and compute its exact k-NN graph."""
    images = dataset / name / "images"
    truth = json.loads((dataset / name / "truth.json").read_text())
    out = (indexes or CACHE / "anomalybench" / collection_key(dataset)) / name  # one index per collection and half
    t0 = time.perf_counter()
    embed_folder(str(images), str(out))  # the default recipe, as `embed` writes it
    log(f"{name}: index ready in {time.perf_counter() - t0:.1f} s")
    with Store(out) as store, store.snapshot():
        # Exactly as `analyze` reads them: the backbone's own features of the composed vectors.
        shas, matrix = load_for_analysis(store, semantic_columns(store.meta()))
        by_sha = store.ok_paths_by_sha()
        quality = store.quality()
    prefix = str(images) + os.sep
    paths = [sorted(p[len(prefix) :] if p.startswith(prefix) else p for p in by_sha[s]) for s in shas]
    metrics = [quality.get(by_sha[s][0]) for s in shas]
    hood = neighbourhood(matrix, k, 2.0)
    return Half(name, images, truth, paths, metrics, hood.index, hood.sim)


def rank(half: Half, values: np.ndarray) -> tuple[list[str], dict[str, float]]:
    """Paths most anomalous first (ties by path) and relpath -> score, every copy of a content included."""
    scores = {p: float(v) for ps, v in zip(half.paths, values, strict=True) for p in ps}
    return sorted(scores, key=lambda p: (-round(scores[p], 9), p)), scores


def evaluate(half: Half, values: np.ndarray, seconds: float) -> dict[str, Any]:
    ranked, scores = rank(half, values)
    row = score_anomalies(half.truth, ranked, scores)
    row["seconds"] = round(seconds, 3)
    return row


def embedlab_score(half: Half, **constants: Any) -> np.ndarray:
    """anomaly.score with some module constants replaced (for the sweep)."""
    saved = {name: getattr(anomaly, name) for name in constants}
    try:
        for name, value in constants.items():
            setattr(anomaly, name, value)
        return anomaly.score(half.index, half.sim, half.metrics).score
    finally:
        for name, value in saved.items():
            setattr(anomaly, name, value)


def timed(fn: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    values = fn()
    return values, time.perf_counter() - t0


def fastdup_row(half: Half, work: Path | None) -> dict[str, Any]:
    from peers import fastdup_outliers

    with tempfile.TemporaryDirectory(prefix="fastdup-") as tmp:
        res = fastdup_outliers(half.images, work or tmp)
    known = {p for ps in half.paths for p in ps} | set(half.truth["images"])
    listed = res.scores or {}
    floor = min(listed.values(), default=0.0) - 1.0  # unlisted images tie below every listed outlier
    scores = {p: listed.get(p, floor) for p in known}
    row = score_anomalies(half.truth, res.ranked or [], scores)
    row["seconds"] = round(res.seconds, 3)
    row["listed"] = len(res.ranked or [])
    return row


def table(half: Half, fastdup: bool, work: Path | None) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    rows["mean k-NN distance"] = evaluate(half, *timed(lambda: anomaly.mean_distance(half.sim)))
    rows["embedlab isolation only"] = evaluate(half, *timed(lambda: anomaly.isolation_scores(half.index, half.sim)))
    rows["embedlab (isolation + rare flags)"] = evaluate(
        half, *timed(lambda: anomaly.score(half.index, half.sim, half.metrics).score)
    )
    if fastdup:
        rows["fastdup outliers"] = fastdup_row(half, work)
    return rows


def flag_census(half: Half) -> dict[str, Any]:
    """How often each flag fires, and on how many oddballs / low-contrast normals."""
    flags, _ = anomaly.flag_table(half.metrics)
    odd = set(half.truth.get("oddballs", {}))
    low = set(half.truth.get("low_contrast_normals", []))
    out = {}
    for name, held in flags.items():
        hit = [p for ps, h in zip(half.paths, held, strict=True) if h for p in ps]
        out[name] = {
            "images": len(hit),
            "oddballs": sum(p in odd for p in hit),
            "low_contrast": sum(p in low for p in hit),
            "counted": anomaly.rare({name: held})[name],
        }
    return out


def sweep(half: Half) -> None:
    """The grid the constants were chosen on: AUROC, top-8 and top-N hits per setting."""
    grid: dict[str, list[float]] = {
        "GLOBAL_WEIGHT": [0.5, 0.75],
        "BROKEN_WEIGHT": [1.0, 2.0, 3.0],
        "LOOK_WEIGHT": [0.5, 1.0],
        "STATISTICS_WEIGHT": [0.1, 0.25, 0.5],
        "CROSS_WEIGHT": [0.0, 0.1, 0.25, 0.5],
        "STATISTICS_CUT": [3.0, 4.0, float("inf")],
        "STATISTICS_K": [5, 10],  # whole numbers: used as k
    }
    print("| " + " | ".join(grid) + " | AUROC | top 8 | top N |")
    print("|" + "---:|" * (len(grid) + 3))
    for values in itertools.product(*grid.values()):
        constants = dict(zip(grid, values, strict=True))
        scores = embedlab_score(half, **constants)
        m = score_anomalies(half.truth, *rank(half, scores))
        print(
            f"| {' | '.join(str(v) for v in values)} | {m['auroc']:.3f} | {m['top8_hits']} | "
            f"{m['topN_hits']}/{m['oddballs']} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, default=DATASET, help="the dupset folder (default bench/.cache/dupset)")
    ap.add_argument(
        "--indexes",
        type=Path,
        help="index folder per half (default bench/.cache/anomalybench/<dataset folder name>)",
    )
    ap.add_argument("--half", default="holdout", choices=["tune", "holdout"], help="which half (default holdout)")
    ap.add_argument("--k", type=int, default=10, help="neighbours (analyze --k, default 10)")
    ap.add_argument("--sweep", action="store_true", help="print the constants grid instead of the table")
    ap.add_argument("--no-fastdup", action="store_true", help="leave fastdup out")
    ap.add_argument("--fastdup-work", type=Path, help="fastdup work folder (default: a temporary one)")
    ap.add_argument("--census", action="store_true", help="also print how often each flag fires")
    args = ap.parse_args(argv)
    half = load_half(args.half, args.dataset, args.k, args.indexes)
    if args.sweep:
        sweep(half)
        return 0
    rows = table(half, not args.no_fastdup, args.fastdup_work)
    n = sum(len(p) for p in half.paths)
    print(f"### {args.half}: {n} images, {len(half.truth.get('oddballs', {}))} oddballs, k = {args.k}\n")
    print(markdown_table(rows))
    if args.census:
        print("\n" + markdown_table(flag_census(half)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
