"""Command line: a thin layer over the library. stdout is only for results."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .ann import DTYPES
from .cluster import LOCAL, ClusterError
from .descriptor import RECIPES
from .images import (
    DEFAULT_DECODE_BUDGET_MB,
    DEFAULT_MAX_PIXELS,
    ImageError,
    display_root,
    path_token,
    scan_images,
    set_decode_budget,
    set_log_paths,
    set_max_pixels,
)
from .progress import Progress
from .provenance import peak_rss_mib, versions
from .registry import BACKBONES, BackboneError
from .search import ANN_CHOICES
from .store import Store, StoreError

if TYPE_CHECKING:
    from .evidence import Evidence

log = logging.getLogger("embedlab")

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 130, 143
SEED_MAX = 2**32 - 1  # NumPy's legacy seed range, which every seeded generator accepts


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every command stops (and records its run) the same way."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None


def _positive(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _cutoffs(text: str) -> list[int]:
    """``evaluate --k 1,5,10``: whole numbers of at least 1, checked at parse time like ``search --k``."""
    values = [_positive(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("must be comma-separated whole numbers, e.g. 1,5,10")
    return sorted(set(values))


def _seed(text: str) -> int:
    value = _whole(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to {SEED_MAX}")
    return value


def _non_negative_float(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"embedlab: error: {self.prog}: {message} (see {self.prog} --help)\n")


def _unit(text: str) -> float:
    value = _number(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be a cosine similarity between -1 and 1")
    return value


_LOG_PATHS_HELP = "name files by their full path in logs and errors (default: a short hash, as paths may carry names)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="embedlab",
        description="Embed image folders into one SQLite index, search it, find near-duplicates and anomalies.",
    )
    parser.add_argument("--version", action="version", version=f"embedlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    parser.add_argument("--log-paths", action="store_true", help=_LOG_PATHS_HELP)
    parser.add_argument("--metrics-out", metavar="FILE", default=None, help=_METRICS_HELP)
    # The same switches after the command name (`embed ... -q`); SUPPRESS keeps the
    # top-level value when they are not repeated there.
    common = _Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="more detail on stderr")
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and errors on stderr"
    )
    common.add_argument("--log-paths", action="store_true", default=argparse.SUPPRESS, help=_LOG_PATHS_HELP)
    common.add_argument("--metrics-out", metavar="FILE", default=argparse.SUPPRESS, help=_METRICS_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command = functools.partial(sub.add_parser, parents=[common])

    embed = add_command("embed", help="embed every image under a folder into an index")
    embed.add_argument("--images-dir", required=True, help="folder scanned recursively for images Pillow can read")
    embed.add_argument("--out", required=True, help="index folder; the store is OUT/embedlab.db (created if missing)")
    embed.add_argument(
        "--batch-size",
        type=_positive,
        default=32,
        help="images per forward pass and commit (default 32; at most 256, so memory stays bounded)",
    )
    embed.add_argument(
        "--seed", type=_seed, default=0, help=f"seed for every random generator, 0 to {SEED_MAX} (default 0)"
    )
    embed.add_argument(
        "--backbone",
        choices=BACKBONES,
        default=None,
        help="model; default: the index's own, or efficientnet_lite0 for a new index",
    )
    embed.add_argument(
        "--weights",
        default=None,
        help="state-dict file; default: the packaged weights (efficientnet_lite0) or assets/weights/<backbone>*.pth",
    )
    embed.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default=None,
        help="vector recipe: hybrid (CNN + layout, calibrated for --dup-threshold 0.92; default for a new index) "
        "or plain (pooled CNN features only)",
    )
    embed.add_argument(
        "--workers", type=_positive, default=2, help="threads decoding images beside the model (default 2)"
    )
    embed.add_argument(
        "--rehash",
        action="store_true",
        help="hash every file, even those whose size and mtime are unchanged (catches content rewritten in place)",
    )
    embed.add_argument(
        "--max-pixels",
        type=_positive,
        default=DEFAULT_MAX_PIXELS,
        help=f"larger images are recorded as errors instead of filling memory (default {DEFAULT_MAX_PIXELS:,}; "
        "JPEGs count after reduced-size decoding)",
    )
    embed.add_argument(
        "--decode-memory-mb",
        type=_positive,
        default=DEFAULT_DECODE_BUDGET_MB,
        help=f"memory all decode threads may hold at once (default {DEFAULT_DECODE_BUDGET_MB}); a picture that "
        "needs more alone is recorded as an error, large ones are decoded at reduced size",
    )
    embed.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    embed.add_argument(
        "--ann",
        choices=ANN_CHOICES,
        default="auto",
        help="keep the HNSW search sidecar (INDEX/embedlab.usearch) in sync: auto (default) from 20,000 vectors "
        "or when it exists, always, or never (search then syncs it when needed)",
    )
    embed.add_argument(
        "--ann-dtype",
        choices=DTYPES,
        default=None,
        help="how the sidecar holds vectors: f16 (default, 2 bytes/dim), i8 (1 byte/dim) or f32; "
        "scores are always re-computed from the float32 store",
    )
    _ray_flags(embed)

    search = add_command("search", help="top-k most similar indexed images for each query image")
    search.add_argument("--index", required=True, help="index folder written by embed")
    search.add_argument("--query-dir", required=True, help="folder of query images (scanned recursively)")
    search.add_argument("--k", type=_positive, default=5, help="results per query (default 5)")
    search.add_argument("--json", action="store_true", help="JSON Lines: one object per query on stdout")
    search.add_argument(
        "--threshold", type=_unit, default=None, help="only results scoring at or above this cosine similarity"
    )
    search.add_argument(
        "--diverse",
        type=_fraction,
        nargs="?",
        const=0.5,
        default=None,
        metavar="LAMBDA",
        help="re-rank by maximal marginal relevance so the top k are not copies of one image; "
        "LAMBDA weighs similarity to the query against novelty (default 0.5; 1 = plain ranking); "
        "combine with --threshold to keep unrelated images out",
    )
    search.add_argument(
        "--copies-first",
        action="store_true",
        help="verify the 20 best results against each query's pixels and keypoints and put verified copies "
        "first, each with its 'copy' probability (scores are then no longer in descending order)",
    )
    search.add_argument(
        "--explain",
        action="store_true",
        help="add per result its cosine distance and its rank in an exact full scan, and per query the "
        "backbone and engine",
    )
    _engine_flags(search)

    analyze = add_command("analyze", help="near-duplicate groups and the most isolated images")
    analyze.add_argument("--index", required=True, help="index folder written by embed")
    analyze.add_argument(
        "--dup-threshold",
        type=_unit,
        default=0.92,
        help="cosine similarity at or above which images group (default 0.92)",
    )
    analyze.add_argument("--anomaly-top", type=_non_negative, default=8, help="how many anomalies to list (default 8)")
    analyze.add_argument(
        "--k",
        type=_positive,
        default=10,
        help="neighbours used to score isolation (default 10: larger than a typical duplicate group, "
        "so an image's own copies cannot hide how isolated it is)",
    )
    analyze.add_argument("--json", action="store_true", help="one JSON object on stdout")
    analyze.add_argument(
        "--memory-mb",
        type=_positive,
        default=1024,
        help="working memory for similarity blocks, in MB (default 1024); never an N x N matrix",
    )
    analyze.add_argument(
        "--ann",
        choices=ANN_CHOICES,
        default="auto",
        help="approximate k-NN graph (k-means cells, exact scores) instead of exact all-pairs: "
        "auto (default) above 20,000 unique vectors, always, or never",
    )

    evaluate = add_command("evaluate", help="retrieval quality of an index whose images sit in one subfolder per class")
    evaluate.add_argument("--index", required=True, help="index of a folder laid out as CLASS/image files")
    evaluate.add_argument(
        "--k", type=_cutoffs, default=[1, 5, 10], help="comma-separated cut-offs for P@k and recall@k (default 1,5,10)"
    )
    evaluate.add_argument(
        "--exclude-same",
        metavar="REGEX",
        default=None,
        help="skip results whose path gives the same first regex group as the query's "
        "(e.g. '/(patient\\d+)_' keeps one patient's other images out of its results)",
    )
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")

    calibrate = add_command(
        "calibrate", help="suggest a --dup-threshold by planting known near-duplicates of indexed images"
    )
    calibrate.add_argument("--index", required=True, help="index folder written by embed (its image files must exist)")
    calibrate.add_argument("--sample", type=_positive, default=40, help="indexed images to transform (default 40)")
    calibrate.add_argument(
        "--seed", type=_seed, default=0, help=f"seed for choosing the sample, 0 to {SEED_MAX} (default 0)"
    )
    calibrate.add_argument(
        "--dup-threshold", type=_unit, default=0.92, help="report recall per edit at this threshold (default 0.92)"
    )
    calibrate.add_argument("--plot", default=None, help="also write the PR curve to this PNG (needs matplotlib)")
    calibrate.add_argument("--json", action="store_true", help="one JSON object on stdout")

    report = add_command("report", help="one self-contained HTML page: duplicates, anomalies, search, failures")
    report.add_argument("--index", required=True, help="index folder written by embed")
    report.add_argument("--out", required=True, help="HTML file to write, e.g. ./index/report.html")
    report.add_argument("--query-dir", default=None, help="also show the top-k results of these query images")
    report.add_argument("--k", type=_positive, default=5, help="results per query (default 5)")
    report.add_argument("--dup-threshold", type=_unit, default=0.92, help="as for analyze (default 0.92)")
    report.add_argument("--anomaly-top", type=_non_negative, default=8, help="anomalies to show (default 8)")
    report.add_argument(
        "--anomaly-k", type=_positive, default=10, help="neighbours used to score isolation (analyze --k, default 10)"
    )
    report.add_argument(
        "--max-groups",
        type=_positive,
        default=200,
        help="duplicate groups drawn; the rest are only counted (default 200)",
    )
    report.add_argument("--workers", type=_positive, default=2, help="threads making thumbnails (default 2)")
    report.add_argument("--json", action="store_true", help="print what the page holds as JSON on stdout")

    forget = add_command(
        "forget", help="drop indexed folders (renamed, moved, added by mistake) and the vectors only they used"
    )
    forget.add_argument("--index", required=True, help="index folder written by embed")
    forget.add_argument(
        "folders", nargs="*", metavar="FOLDER", help="a folder as `info` lists it (it need not exist any more)"
    )
    forget.add_argument("--missing", action="store_true", help="also every indexed folder that no longer exists")
    forget.add_argument("--json", action="store_true", help="print what was dropped as JSON on stdout")

    info = add_command("info", help="what an index holds: counts, backbone, runs, failures, size on disk")
    info.add_argument("--index", required=True, help="index folder written by embed")
    info.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return parser


def _ray_flags(embed: argparse.ArgumentParser) -> None:
    group = embed.add_argument_group("cluster mode (needs pip install '.[ray]'; see docs/CLUSTER.md)")
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        default=None,
        metavar="ADDRESS",
        help="decode and embed on Ray workers, writing here: no ADDRESS starts Ray on this machine, "
        "'auto' or HOST:PORT or ray://HOST:PORT joins a cluster (images must be at the same path on every node)",
    )
    group.add_argument(
        "--ray-workers", type=_positive, default=None, help="Ray workers (default: as many as the cluster holds)"
    )
    group.add_argument(
        "--ray-cpus-per-worker", type=_non_negative_float, default=1.0, help="CPUs reserved per worker (default 1)"
    )
    group.add_argument(
        "--ray-gpus-per-worker",
        type=_non_negative_float,
        default=0.0,
        help="GPUs per worker (default 0: CPU workers; GPU vectors are not bit-identical to CPU ones)",
    )


def _executor(args: argparse.Namespace) -> Any:
    """A RayExecutor for --ray, else None (the local pipeline)."""
    if args.ray is None:
        if args.ray_workers is not None or args.ray_gpus_per_worker:
            raise CliError("--ray-workers and --ray-gpus-per-worker need --ray")
        return None
    from .cluster import RayExecutor, RaySettings

    return RayExecutor(
        RaySettings(
            address=args.ray,
            workers=args.ray_workers,
            cpus_per_worker=args.ray_cpus_per_worker,
            gpus_per_worker=args.ray_gpus_per_worker,
            decode_threads=args.workers,
        )
    )


_METRICS_HELP = "also write this run's metrics (counts, timings, rates, peak memory) to FILE as JSON"


def _non_negative(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exact", action="store_true", help="exact NumPy scan instead of sqlite-vec KNN")
    parser.add_argument(
        "--ann",
        choices=ANN_CHOICES,
        default="auto",
        help="HNSW candidates + exact re-score (needs usearch): auto (default) from 20,000 vectors, always, "
        "or never (sqlite-vec's exact scan)",
    )
    parser.add_argument(
        "--backbone", choices=BACKBONES, default=None, help="must match the index (default: the index's)"
    )
    parser.add_argument("--weights", default=None, help="weights file; must match the index's weights hash")
    parser.add_argument("--batch-size", type=_positive, default=32, help="queries per forward pass (default 32)")


def _open_index(index: str, exact: bool) -> Store:
    store = Store(index, use_vec=not exact)
    if not store.meta().get("signature"):
        store.close()
        where = display_root(index)
        raise CliError(
            f"index {where} holds no embeddings yet: run `embedlab embed --images-dir IMAGES --out {where}` first"
        )
    if not store.vec_loaded and not exact:
        log.warning("sqlite-vec could not load (%s); using exact NumPy search", store.vec_reason)
    if store.vec_loaded and store.read_only and not store.vec_index_current():
        store.vec_loaded, store.vec_reason = False, "the read-only index's sqlite-vec table is out of date"
        log.warning("%s; using exact NumPy search", store.vec_reason)
    elif store.vec_loaded and not store.read_only:
        store.ensure_vec_index(int(store.meta()["dim"]))
    return store


def cmd_embed(args: argparse.Namespace) -> int:
    from .indexer import embed_folder

    set_max_pixels(args.max_pixels)
    set_decode_budget(args.decode_memory_mb)
    executor = _executor(args)
    report = embed_folder(
        args.images_dir,
        args.out,
        backbone_name=args.backbone,
        weights=args.weights,
        recipe=args.recipe,
        batch_size=args.batch_size,
        seed=args.seed,
        workers=args.workers,
        rehash=args.rehash,
        executor=executor,
    )
    _sync_sidecar(args.out, args.ann, args.ann_dtype)
    _log_embed_summary(args.out, report)
    args.metrics.update(
        run_id=report.run_id,
        counts={k: getattr(report, k) for k in ("images", "new", "reused", "unchanged", "removed", "failed")},
        embedded_vectors=report.embedded_vectors,
        images_per_second=round(report.images_per_second, 2),
        timings={k: round(v, 3) for k, v in report.timings.items()},
    )
    _store_metrics(args.out, report.run_id, args.metrics)
    if args.json:
        summary = {k: v for k, v in vars(report).items() if k not in ("timings", "run_id")}
        summary["timings"] = {k: round(v, 3) for k, v in report.timings.items()}
        summary["index"] = str(Path(args.out) / "embedlab.db")
        print(json.dumps(summary, sort_keys=True))
    return EXIT_OK


def _log_embed_summary(out: str, report: Any) -> None:
    """What the run did, in words: vectors computed, reused, unchanged, removed, failed."""
    done = [
        f"{report.embedded_vectors} embedded" if report.embedded_vectors else "",
        f"{report.reused} reused from copies already indexed" if report.reused else "",
        f"{report.unchanged} unchanged" if report.unchanged else "",
        f"{report.removed} removed" if report.removed else "",
        f"{report.failed} unreadable" if report.failed else "",
    ]
    copies = report.new - report.embedded_vectors  # new files whose bytes another new file carried
    if copies > 0:
        done.insert(1, f"{copies} {'copy' if copies == 1 else 'copies'} of those")
    log.info("%d images: %s", report.images, ", ".join(d for d in done if d) or "nothing to do")
    if report.embedded_vectors:
        log.info(
            "backbone %s (recipe %s), dim %d: %d vectors in %.2fs (%.1f images/s), total %.2fs",
            report.backbone,
            report.recipe,
            report.dim,
            report.embedded_vectors,
            report.timings.get("embed", 0.0),
            report.images_per_second,
            report.seconds,
        )
    else:
        log.info("%s (%.2fs)", "nothing new to embed" if report.new == 0 else "no vectors computed", report.seconds)
    if report.failed:
        log.info("`embedlab info --index %s` lists the files that could not be read, with the reason", out)


def _sync_sidecar(index: str, mode: str, dtype: str | None) -> None:
    """Bring the HNSW search sidecar level with the store after an embed."""
    from . import ann

    if mode == "never" or not Path(index, "embedlab.db").is_file():
        return
    with Store(index) as store:
        large = store.vector_count() >= ann.ANN_MIN_VECTORS or ann.sidecar_path(store).is_file()
        if mode == "always" or (large and ann.available()):
            started = time.perf_counter()
            size = len(ann.open_synced(store, dtype))
            log.info("search sidecar in sync: %d vectors, %.2fs", size, time.perf_counter() - started)
        elif large:
            ann.hint_install(store)


def cmd_search(args: argparse.Namespace) -> int:
    from .indexer import query_vectors, resolve_spec
    from .ranking import Ranker
    from .search import Searcher

    started = time.perf_counter()
    with _open_index(args.index, args.exact) as store:
        queries = scan_images(args.query_dir)
        if not queries:
            raise CliError(
                f"no images found in {display_root(args.query_dir)}: --query-dir needs image files "
                "(PNG, JPEG, TIFF, DICOM, ...), searched recursively"
            )
        backbone = resolve_spec(store, args.backbone, args.weights)
        t0 = time.perf_counter()
        # Queries the index already holds (same bytes) reuse their stored vector: no model load.
        evidence: dict[int, Evidence] = {}
        wanted = evidence if args.copies_first else None  # evidence only when copies are verified
        vectors, model = query_vectors(store, backbone, [q.abspath for q in queries], args.batch_size, wanted)
        embed_seconds = time.perf_counter() - t0
        failed, latencies = 0, []
        with store.snapshot():  # one committed state, even while an embed is writing
            ranker = Ranker(store, Searcher(store, exact=args.exact, ann=args.ann))
            for n, (query, vec) in enumerate(zip(queries, vectors, strict=True)):
                record: dict[str, Any] = {"query": query.path}
                if isinstance(vec, str):
                    log.warning("%s: query skipped, %s", path_token(query.path), vec)
                    record.update(results=[], error=vec)
                    failed += 1
                else:
                    t0 = time.perf_counter()
                    copies_of = evidence.get(n) if args.copies_first else None
                    record["results"] = _ranked_results(ranker, vec, args, copies_of)
                    latencies.append(time.perf_counter() - t0)
                    if args.explain:
                        record.update(backbone=backbone.signature, engine=ranker.searcher.engine)
                _print_search(record, args.json)
        log.info(
            "%d queries, k=%d, engine %s, backbone %s (dim %d, %s), %.2fs",
            len(queries),
            args.k,
            ranker.searcher.engine,
            backbone.name,
            backbone.dim,
            "model loaded" if model is not None else "stored vectors, no model",
            time.perf_counter() - started,
        )
        args.metrics.update(
            counts={"queries": len(queries), "failed": failed, "k": args.k},
            engine=ranker.searcher.engine,
            diverse=args.diverse,
            threshold=args.threshold,
            query_embed_seconds=round(embed_seconds, 3),
            search_ms_mean=round(1000 * sum(latencies) / len(latencies), 3) if latencies else None,
            search_ms_max=round(1000 * max(latencies), 3) if latencies else None,
        )
        _record_run(store, "search", started, args.metrics)
    return EXIT_ERROR if failed == len(queries) else EXIT_OK


def _ranked_results(
    ranker: Any, vec: Any, args: argparse.Namespace, evidence: Evidence | None = None
) -> list[dict[str, Any]]:
    """One query's results with the search extras applied: copies first, diverse, threshold, explain."""
    hits = ranker.top_k(vec, args.k, diverse=args.diverse, threshold=args.threshold, evidence=evidence)
    results: list[dict[str, Any]] = [
        {"path": h.path, "score": h.score, **({"copy": h.copy} if h.copy is not None else {})} for h in hits
    ]
    if args.explain:
        ranks = ranker.exact_ranks(vec)
        for item in results:
            item.update(distance=round(1.0 - item["score"], 6), exact_rank=ranks.get(item["path"]))
    return results


def _record_run(store: Store, command: str, started: float, metrics: dict[str, Any]) -> None:
    """Add this command to the runs manifest; a read-only index just goes without.

    ``metrics`` must hold "counts"; the whole dict (with the run id and total time
    added) is stored in the run's metrics column and is what --metrics-out writes.
    """
    meta = store.meta()
    metrics["seconds"] = round(time.perf_counter() - started, 3)
    metrics.update(_process_metrics())
    if store.read_only:
        return
    try:
        run_id = store.start_run(
            command,
            backbone=meta.get("signature"),
            weights_sha256=meta.get("weights_sha256"),
            dim=int(meta.get("dim", 0)),
            versions=versions(),
        )
        metrics["run_id"] = run_id
        store.finish_run(run_id, "ok", counts=metrics["counts"], timings={"total": metrics["seconds"]}, metrics=metrics)
    except Exception as exc:  # sqlite3 and apsw share no base class
        log.debug("run not recorded: %s", type(exc).__name__)


def _process_metrics() -> dict[str, Any]:
    peak = peak_rss_mib()
    return {} if peak is None else {"peak_rss_mib": round(peak, 1)}


def _store_metrics(index: str, run_id: int, metrics: dict[str, Any]) -> None:
    """Attach metrics to a run that another module recorded (embed)."""
    metrics.update(_process_metrics())
    try:
        with Store(index) as store:
            store.set_run_metrics(run_id, metrics)
    except Exception as exc:  # a read-only index keeps its run without metrics
        log.debug("metrics not recorded: %s", type(exc).__name__)


def _shown(text: str) -> str:
    """A path or message for plain-text output: control characters from a file name (an escape
    sequence, a newline) are printed as ``\\xNN``, so they can neither drive the terminal nor forge
    lines. JSON output escapes them itself."""
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _print_search(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, separators=(",", ":")), flush=True)
        return
    print(_shown(record["query"]))
    if "error" in record:
        print(f"  error: {_shown(record['error'])}")
    for rank, hit in enumerate(record["results"], 1):
        print(f"  {rank:>3}  {hit['score']:.4f}  {_shown(hit['path'])}")


def cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis import analyze_vectors, evidence_loader, load_for_analysis
    from .registry import semantic_columns

    started = time.perf_counter()
    with _open_index(args.index, exact=True) as store:
        meta = store.meta()
        # All-pairs work needs every vector in memory; the plain table reads them
        # far faster than a full vec0 scan (bench/speed.py), bit for bit the same.
        with store.snapshot():  # one committed state, even while an embed is writing
            # Streamed, float16 when float32 would not fit; the backbone's own features only.
            shas, matrix = load_for_analysis(store, semantic_columns(meta))
            by_sha, quality, errors = store.ok_paths_by_sha(), store.quality(), store.errors()
        with Progress(len(shas), "analyzing", unit="vec") as bar:
            result = analyze_vectors(
                matrix,
                [by_sha[s] for s in shas],
                threshold=args.dup_threshold,
                anomaly_top=args.anomaly_top,
                k=args.k,
                quality=quality,
                evidence=evidence_loader(store, shas),
                on_rows=bar.update,
                memory_mb=args.memory_mb,
                approximate={"auto": None, "always": True, "never": False}[args.ann],
            )
        result["unreadable"] = [{"path": p, "error": e} for p, e in errors]
        result.update(
            backbone=meta.get("backbone"),
            dim=int(meta["dim"]),
            images=sum(len(p) for p in by_sha.values()),
            unique_vectors=len(shas),
            dup_threshold=args.dup_threshold,
            k=args.k,
        )
        counts = {"images": result["images"], "groups": len(result["duplicate_groups"]), "k": args.k}
        args.metrics.update(
            counts={**counts, "dup_threshold": args.dup_threshold},
            anomalies=len(result["anomalies"]),
            unreadable=len(result["unreadable"]),
            unique_vectors=len(shas),
        )
        _record_run(store, "analyze", started, args.metrics)
    log.info(
        "%d duplicate groups, %d anomalies, %d unreadable, %.2fs",
        len(result["duplicate_groups"]),
        len(result["anomalies"]),
        len(result["unreadable"]),
        time.perf_counter() - started,
    )
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        _print_analysis(result)
    return EXIT_OK


def _print_analysis(result: dict[str, Any]) -> None:
    print(f"duplicate groups ({len(result['duplicate_groups'])}):")
    for group in result["duplicate_groups"]:
        print("  " + "  ".join(_shown(p) for p in group))
    print(f"anomalies ({len(result['anomalies'])}), most isolated first:")
    for item in result["anomaly_details"]:
        print(f"  {item['score']:.4f}  {_shown(item['path'])}")
    if result["unreadable"]:
        print(f"unreadable ({len(result['unreadable'])}):")
        for item in result["unreadable"]:
            print(f"  {_shown(item['path'])}: {_shown(item['error'])}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluation import class_of, retrieval_metrics, same_group

    ks = args.k
    with _open_index(args.index, exact=True) as store:
        shas, matrix = store.load_vectors(through_vec=False)
        by_sha, roots = store.ok_paths_by_sha(), store.roots()
    rows = [(path, i) for i, sha in enumerate(shas) for path in by_sha[sha]]
    labels = [class_of(path, roots[path]) for path, _ in rows]
    if len(set(labels) - {""}) < 2:
        raise CliError("evaluate needs images in at least two class subfolders under the indexed folder")
    names = [path for path, _ in rows]
    exclude = None
    if args.exclude_same:
        try:
            same = same_group(args.exclude_same)
        except re.error as exc:
            raise CliError(f"--exclude-same is not a valid regex: {exc}") from None
        exclude = lambda i, j: same(names[i], names[j])  # noqa: E731
    metrics = retrieval_metrics(matrix[[i for _, i in rows]], labels, ks=ks, exclude=exclude)
    result = {"images": len(rows), "classes": len(set(labels)), **{k: round(v, 4) for k, v in metrics.items()}}
    args.metrics.update(result)
    if args.json:
        print(json.dumps(result, separators=(",", ":")))
    else:
        for key, value in result.items():
            print(f"{key:>12}  {value}")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .analysis import evidence_loader
    from .calibration import calibrate, save_plot
    from .indexer import resolve_backbone

    with _open_index(args.index, exact=True) as store:
        backbone = resolve_backbone(store, None, None)
        shas, matrix = store.load_vectors(through_vec=False)
        by_sha = store.ok_paths_by_sha()
        if len(shas) < 2:
            raise CliError("calibrate needs an index of at least two images")
        loader = evidence_loader(store, shas)
        result = calibrate(
            backbone, shas, matrix, [by_sha[s] for s in shas], loader, sample=args.sample, seed=args.seed
        )
    if result.sampled == 0:
        raise CliError("none of the sampled images could be read from disk; run calibrate where they live")
    report = result.as_dict(args.dup_threshold)
    args.metrics.update(
        sampled_images=report["sampled_images"], suggested_dup_threshold=report["suggested_dup_threshold"]
    )
    if args.plot and not save_plot(result, Path(args.plot)):
        log.warning("matplotlib is not installed; no plot written")
    if args.json:
        print(json.dumps(report, separators=(",", ":")))
        return EXIT_OK
    print(f"sampled {report['sampled_images']} images x {len(report['per_variant'])} transforms")
    print("threshold  precision  recall   f1")
    for row in report["pr_table"]:
        print(f"{row['threshold']:>9.2f}  {row['precision']:>9.3f}  {row['recall']:>6.3f}  {row['f1']:.3f}")
    print(f"recall per edit at --dup-threshold {args.dup_threshold}:")
    for name, row in report["per_variant"].items():
        print(f"  {name:>12}  {row['recall']:.3f}  (median {row['median']:.3f})")
    print(f"suggested --dup-threshold {report['suggested_dup_threshold']}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .report import ReportOptions, build_report, write_report

    started = time.perf_counter()
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {args.out} is a folder: name the HTML file, e.g. {out / 'report.html'}")
    if args.query_dir is not None and not scan_images(args.query_dir):
        raise CliError(f"no images found in {display_root(args.query_dir)}: drop --query-dir or point it at images")
    options = ReportOptions(
        dup_threshold=args.dup_threshold,
        anomaly_top=args.anomaly_top,
        anomaly_k=args.anomaly_k,
        max_groups=args.max_groups,
        query_dir=args.query_dir,
        k=args.k,
        workers=args.workers,
    )
    with _open_index(args.index, exact=args.query_dir is None) as store:
        text, stats = build_report(store, options)
        try:
            write_report(text, out)
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror}; choose another --out") from None
        summary = {k: v for k, v in vars(stats).items() if k != "timings"}
        args.metrics.update(
            counts={"groups": stats.groups, "anomalies": stats.anomalies, "queries": stats.queries},
            **summary,
            timings={k: round(v, 3) for k, v in stats.timings.items()},
        )
        _record_run(store, "report", started, args.metrics)
    log.info(
        "wrote %s: %d duplicate groups, %d anomalies, %d queries, %d unreadable, %d thumbnails (%.1f MB), %.2fs",
        out.name,
        stats.groups,
        stats.anomalies,
        stats.queries,
        stats.unreadable,
        stats.thumbnails,
        stats.bytes / 1e6,
        time.perf_counter() - started,
    )
    if stats.thumbnails_missing:
        log.warning(
            "%d pictures could not be read for thumbnails (moved or unreadable files)", stats.thumbnails_missing
        )
    if args.json:
        print(json.dumps({"out": str(out), **summary}, sort_keys=True))
    return EXIT_OK


def cmd_forget(args: argparse.Namespace) -> int:
    from .folders import forget_folders

    if not args.folders and not args.missing:
        raise CliError("name the FOLDER(s) to forget (`embedlab info --index INDEX` lists them) or pass --missing")
    report = forget_folders(args.index, args.folders, args.missing)
    _sync_sidecar(args.index, "auto", None)
    log.info(
        "forgot %d folder(s): %d row(s) and %d vector(s) removed", len(report.folders), report.images, report.vectors
    )
    result = {"folders": report.folders, "removed": report.images, "vectors_removed": report.vectors}
    args.metrics.update(run_id=report.run_id, counts=result)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    with _open_index(args.index, exact=True) as store:
        meta = store.meta()
        info: dict[str, Any] = {
            "index": str(store.path),
            "backbone": meta.get("backbone"),
            "recipe": meta.get("recipe"),
            "dim": int(meta["dim"]),
            "weights_file": meta.get("weights_file"),
            "weights_sha256": meta.get("weights_sha256"),
            **store.summary(),
            "roots": _folder_list(store),
            "failures": [{"path": p, "error": e} for p, e in store.errors()],
            "last_runs": [
                {k: run.get(k) for k in ("id", "command", "started_at", "status", "counts", "timings", "metrics")}
                for run in store.runs(limit=5)
            ],
        }
    if args.json:
        print(json.dumps(info, sort_keys=True, separators=(",", ":")))
        return EXIT_OK
    print(f"index            {info['index']} ({info['database_bytes'] / 1e6:.1f} MB, schema v{info['schema_version']})")
    print(f"backbone         {info['backbone']} (recipe {info['recipe']}, dim {info['dim']})")
    print(f"weights          {info['weights_file']} sha256 {str(info['weights_sha256'])[:12]}")
    print(f"images           {info['images']} in {info['folders']} folder(s), {info['unique_vectors']} unique vectors")
    for item in info["roots"]:
        state = "" if item["exists"] else "  (no longer exists: embedlab forget)"
        print(f"  {_shown(item['root'])}: {item['images']} file(s){state}")
    print(f"failures         {info['failed']}")
    for item in info["failures"][:10]:
        print(f"  {_shown(item['path'])}: {_shown(item['error'])}")
    if len(info["failures"]) > 10:
        print(f"  ... {len(info['failures']) - 10} more (--json lists all)")
    print("runs             " + (", ".join(f"{k} x{v}" for k, v in info["runs"].items()) or "none"))
    for run in info["last_runs"]:
        seconds = (run.get("timings") or {}).get("total")
        took = f"{seconds:.2f}s" if isinstance(seconds, (int, float)) else "-"
        print(f"  #{run['id']:<4} {run['started_at']}  {run['command']:<9} {run['status']:<7} {took}")
    return EXIT_OK


def _folder_list(store: Store) -> list[dict[str, Any]]:
    """Each indexed folder: its root, real path (None before schema v9), rows and whether it still exists."""
    counts = store.folder_counts()
    return [
        {"root": root, "real_path": real, "images": counts.get(root, 0), "exists": os.path.isdir(real or root)}
        for root, real in store.folders().items()
    ]


COMMANDS = {
    "embed": cmd_embed,
    "search": cmd_search,
    "analyze": cmd_analyze,
    "evaluate": cmd_evaluate,
    "calibrate": cmd_calibrate,
    "report": cmd_report,
    "forget": cmd_forget,
    "info": cmd_info,
}


def _configure_logging(level: int) -> None:
    """Our own logger on the current stderr, so repeated in-process calls each get their level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("embedlab: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _check_metrics_out(target: str) -> None:
    """Refuse an unwritable --metrics-out before any work, not after an embed has committed."""
    path = Path(target)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CliError(f"--metrics-out {target} is a folder: name a file, e.g. {path / 'metrics.json'}")
    if not parent.is_dir():
        raise CliError(f"cannot write --metrics-out {target}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"cannot write --metrics-out {target}: permission denied")


def _write_metrics(target: str, metrics: dict[str, Any]) -> None:
    try:
        Path(target).write_text(json.dumps(metrics, sort_keys=True, indent=1) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write --metrics-out {target}: {exc.strerror}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    set_log_paths(args.log_paths)
    args.metrics = {"command": args.command}
    # SIGTERM (kill, a container stopping) stops a command the way Ctrl-C does: the batch in
    # flight rolls back, the run is recorded 'interrupted', one line says so (exit 143).
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        if args.metrics_out:
            _check_metrics_out(args.metrics_out)
        status = COMMANDS[args.command](args)
        if args.metrics_out:
            _write_metrics(args.metrics_out, args.metrics)
        return status
    except (CliError, ClusterError, ImageError, StoreError, BackboneError) as exc:
        print(f"embedlab: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Terminated:
        print("embedlab: terminated (SIGTERM); committed batches are kept", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("embedlab: interrupted; committed batches are kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as exc:  # last line of defence: never show a traceback
        if args.verbose:
            raise
        print(f"embedlab: internal error: {type(exc).__name__}: {exc} (re-run with -v for details)", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
