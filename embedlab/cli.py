"""Command line: a thin layer over the library. stdout is only for results."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import __version__
from .ann import DTYPES
from .cluster import LOCAL
from .descriptor import RECIPES
from .errors import CLI_HINTS, CLI_SUBJECTS, EmbedlabError, UsageError
from .images import DEFAULT_DECODE_BUDGET_MB, DEFAULT_MAX_PIXELS
from .registry import BACKBONES
from .search import ANN_CHOICES
from .settings import Settings, applied

if TYPE_CHECKING:
    from .api import Index
    from .results import SearchResult

log = logging.getLogger("embedlab")

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 130, 143
SEED_MAX = 2**32 - 1  # NumPy's legacy seed range, which every seeded generator accepts


class CliError(UsageError):
    """A command-line mistake only the CLI can make (a flag's text): one line, exit status 1."""


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


_METRICS_HELP = "also write this run's metrics (counts, timings, rates, peak memory) to FILE as JSON"


# -- flag groups, each declared once and shared by the commands that take it ---------


def _common_flags(top_level: bool) -> _Parser:
    """Logging and metrics switches: before the command, or after it (`embed ... -q`).

    After the command, SUPPRESS keeps the top-level value when they are not repeated there.
    """
    parser = _Parser(add_help=False)
    switch: dict[str, Any] = {"default": False if top_level else argparse.SUPPRESS}
    value: dict[str, Any] = {"default": None if top_level else argparse.SUPPRESS}
    parser.add_argument("-v", "--verbose", action="store_true", help="more detail on stderr", **switch)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr", **switch)
    parser.add_argument("--log-paths", action="store_true", help=_LOG_PATHS_HELP, **switch)
    parser.add_argument("--metrics-out", metavar="FILE", help=_METRICS_HELP, **value)
    return parser


def _index_flags(help_text: str = "index folder written by embed") -> _Parser:
    parser = _Parser(add_help=False)
    parser.add_argument("--index", required=True, help=help_text)
    return parser


def _output_flags(help_text: str = "one JSON object on stdout") -> _Parser:
    parser = _Parser(add_help=False)
    parser.add_argument("--json", action="store_true", help=help_text)
    return parser


def _search_flags(query_dir_required: bool) -> _Parser:
    """What to search for and how to rank it: `search` and `report`."""
    parser = _Parser(add_help=False)
    if query_dir_required:
        parser.add_argument("--query-dir", required=True, help="folder of query images (scanned recursively)")
    else:
        parser.add_argument("--query-dir", default=None, help="also show the top-k results of these query images")
    parser.add_argument("--k", type=_positive, default=5, help="results per query (default 5)")
    parser.add_argument(
        "--threshold", type=_unit, default=None, help="only results scoring at or above this cosine similarity"
    )
    parser.add_argument(
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
    parser.add_argument(
        "--copies-first",
        action="store_true",
        help="verify the 40 best results against each query's pixels and keypoints and put verified copies "
        "first, each with its 'copy' probability (scores are then no longer in descending order)",
    )
    return parser


def _engine_flags() -> _Parser:
    """Which search engine and which backbone answer: `search`."""
    parser = _Parser(add_help=False)
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
    return parser


def _analyze_flags(k_flag: str) -> _Parser:
    """How duplicates and anomalies are found: `analyze` and `report` (where --k is the search's)."""
    parser = _Parser(add_help=False)
    parser.add_argument(
        "--dup-threshold",
        type=_unit,
        default=0.92,
        help="cosine similarity at or above which images group (default 0.92)",
    )
    parser.add_argument("--anomaly-top", type=_non_negative, default=8, help="how many anomalies to list (default 8)")
    parser.add_argument(
        k_flag,
        dest="anomaly_k",
        type=_positive,
        default=10,
        help="neighbours used to score isolation (default 10: larger than a typical duplicate group, "
        "so an image's own copies cannot hide how isolated it is)",
    )
    parser.add_argument(
        "--memory-mb",
        type=_positive,
        default=1024,
        help="working memory for similarity blocks, in MB (default 1024); never an N x N matrix",
    )
    parser.add_argument(
        "--ann",
        choices=ANN_CHOICES,
        default="auto",
        help="approximate k-NN graph (k-means cells, exact scores) instead of exact all-pairs: "
        "auto (default) above 20,000 unique vectors, always, or never",
    )
    return parser


def _dedupe_flags() -> _Parser:
    """How a group's keeper is chosen and what is never removed: `dedupe`, `export`, `report`."""
    from .dedupe import DEFAULT_FORMATS, DEFAULT_RULES, RULES

    parser = _Parser(add_help=False)
    parser.add_argument(
        "--keep",
        metavar="RULES",
        default=",".join(DEFAULT_RULES),
        help=f"ordered, comma-separated rules choosing each group's keeper, from {', '.join(RULES)} "
        f"(default {','.join(DEFAULT_RULES)}; 'original' prefers DICOM ORIGINAL over DERIVED images; "
        "ties go to the first path)",
    )
    parser.add_argument(
        "--format-priority",
        metavar="FORMATS",
        default=",".join(DEFAULT_FORMATS),
        help=f"formats best first, for the format-priority rule (default {','.join(DEFAULT_FORMATS)})",
    )
    parser.add_argument(
        "--protect",
        metavar="DIR",
        nargs="+",
        action="extend",
        default=[],
        help="folders whose files are never chosen for removal (repeatable)",
    )
    return parser


def _split_flag(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--split",
        metavar="NAME=DIR",
        action="append",
        required=required,
        default=None,
        help="a split and its folder, e.g. train=data/train (twice at least)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="embedlab",
        description="Embed image folders into one SQLite index, search it, find near-duplicates and anomalies.",
        parents=[_common_flags(top_level=True)],
    )
    parser.add_argument("--version", action="version", version=f"embedlab {__version__}")
    common = _common_flags(top_level=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, help_text: str, *groups: _Parser) -> argparse.ArgumentParser:
        parents = [common, *groups]
        return sub.add_parser(name, help=help_text, parents=parents)

    embed = add_command("embed", "embed every image under a folder into an index")
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
        help="state-dict file or a folder holding one; default: the packaged weights (efficientnet_lite0/1/2), "
        "else <backbone>*.pth in INDEX/weights/ or assets/weights/",
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

    search = add_command(
        "search",
        "top-k most similar indexed images for each query image",
        _index_flags(),
        _search_flags(query_dir_required=True),
        _output_flags("JSON Lines: one object per query on stdout"),
        _engine_flags(),
    )
    search.add_argument(
        "--explain",
        action="store_true",
        help="add per result its cosine distance and its rank in an exact full scan, and per query the "
        "backbone and engine",
    )

    add_command(
        "analyze",
        "near-duplicate groups and the most isolated images",
        _index_flags(),
        _analyze_flags("--k"),
        _output_flags(),
    )

    evaluate = add_command(
        "evaluate",
        "retrieval quality of an index whose images sit in one subfolder per class",
        _index_flags("index of a folder laid out as CLASS/image files"),
        _output_flags(),
    )
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

    calibrate = add_command(
        "calibrate",
        "suggest a --dup-threshold by planting known near-duplicates of indexed images",
        _index_flags("index folder written by embed (its image files must exist)"),
        _output_flags(),
    )
    calibrate.add_argument("--sample", type=_positive, default=40, help="indexed images to transform (default 40)")
    calibrate.add_argument(
        "--seed", type=_seed, default=0, help=f"seed for choosing the sample, 0 to {SEED_MAX} (default 0)"
    )
    calibrate.add_argument(
        "--dup-threshold", type=_unit, default=0.92, help="report recall per edit at this threshold (default 0.92)"
    )
    calibrate.add_argument("--plot", default=None, help="also write the PR curve to this PNG (needs matplotlib)")

    report = add_command(
        "report",
        "one self-contained HTML page: duplicates, anomalies, search, failures",
        _index_flags(),
        _search_flags(query_dir_required=False),
        _analyze_flags("--anomaly-k"),
        _output_flags("print what the page holds as JSON on stdout"),
    )
    report.add_argument("--out", required=True, help="HTML file to write, e.g. ./index/report.html")
    report.add_argument(
        "--max-groups",
        type=_positive,
        default=200,
        help="duplicate groups drawn; the rest are only counted (default 200)",
    )
    report.add_argument("--workers", type=_positive, default=2, help="threads making thumbnails (default 2)")
    _split_flag(report, required=False)
    for action in _dedupe_flags()._actions:
        report._add_action(action)

    forget = add_command(
        "forget",
        "drop indexed folders (renamed, moved, added by mistake) and the vectors only they used",
        _index_flags(),
        _output_flags("print what was dropped as JSON on stdout"),
    )
    forget.add_argument(
        "folders", nargs="*", metavar="FOLDER", help="a folder as `info` lists it (it need not exist any more)"
    )
    forget.add_argument("--missing", action="store_true", help="also every indexed folder that no longer exists")

    add_command(
        "info",
        "what an index holds: counts, backbone, runs, failures, size on disk",
        _index_flags(),
        _output_flags(),
    )
    _act_commands(add_command)
    return parser


def _act_commands(add_command: Any) -> None:
    """The commands that act on what analyze finds: dedupe, undo, export, mark, leaks."""
    from .dedupe import ACTIONS
    from .export import FORMATS, WHATS

    dedupe = add_command(
        "dedupe",
        "one keeper per duplicate group; list the others, or move, link or trash them (undoable)",
        _index_flags(),
        _dedupe_flags(),
        _output_flags("JSON Lines: one object per group, then one with the summary"),
    )
    dedupe.add_argument(
        "--threshold",
        "--dup-threshold",
        dest="dup_threshold",
        type=_unit,
        default=0.92,
        help="the groups analyze reports at this --dup-threshold (default 0.92)",
    )
    dedupe.add_argument(
        "--action",
        choices=ACTIONS,
        default="list",
        help="list (default: print the plan, touch nothing), move (to --dest, layout kept), hardlink or symlink "
        "(each file becomes a link to its keeper), trash (the desktop trash, or --dest)",
    )
    dedupe.add_argument(
        "--dest",
        default=None,
        help="where moved files go (move, trash), or where a linked file's different original is held "
        "(default INDEX/held/JOURNAL); must lie outside every indexed folder",
    )
    dedupe.add_argument("--yes", action="store_true", help="really act: every action but list needs it")
    dedupe.add_argument("--journal", default=None, help="journal file to write (default INDEX/journals/dedupe-*.jsonl)")
    dedupe.add_argument("--memory-mb", type=_positive, default=1024, help="as for analyze (default 1024)")

    undo = add_command(
        "undo", "reverse one dedupe action from its journal: bytes, paths and index rows", _output_flags()
    )
    undo.add_argument("journal", metavar="JOURNAL", help="the journal dedupe wrote (its summary names it)")

    export = add_command(
        "export",
        "groups, anomalies, images or search results as CSV or JSON Lines (columns in docs/GUIDE.md)",
        _index_flags(),
        _dedupe_flags(),
    )
    export.add_argument("--what", choices=WHATS, required=True, help="what to export, one row per file or result")
    export.add_argument("--format", choices=FORMATS, default="csv", help="csv (default, with a header) or jsonl")
    export.add_argument("--out", default=None, help="file to write (default: stdout)")
    export.add_argument("--query-dir", default=None, help="query images, for --what search")
    export.add_argument("--k", type=_positive, default=5, help="results per query, for --what search (default 5)")
    export.add_argument("--dup-threshold", type=_unit, default=0.92, help="as for analyze (default 0.92)")
    export.add_argument("--anomaly-top", type=_non_negative, default=8, help="as for analyze (default 8)")
    export.add_argument("--anomaly-k", type=_positive, default=10, help="as analyze's --k (default 10)")

    mark = add_command(
        "mark",
        "mark two images as not duplicates (by content: marks survive renames and re-embedding)",
        _index_flags(),
        _output_flags("JSON Lines: one object per mark"),
    )
    what = mark.add_mutually_exclusive_group(required=True)
    what.add_argument("--not-duplicate", nargs=2, metavar=("A", "B"), help="two indexed paths (or image files)")
    what.add_argument("--from", dest="from_file", metavar="FILE", help="pairs of paths, one pair a line (tab or comma)")
    what.add_argument("--list", action="store_true", help="list the marks")
    mark.add_argument("--remove", action="store_true", help="remove the marks named by --not-duplicate or --from")

    leaks = add_command(
        "leaks",
        "near-duplicate pairs that cross train/validation/test splits, and patients in two splits",
        _index_flags(),
        _output_flags(),
    )
    _split_flag(leaks, required=True)
    leaks.add_argument(
        "--threshold",
        "--dup-threshold",
        dest="dup_threshold",
        type=_unit,
        default=0.92,
        help="verified same-picture score at or above which a pair counts (default 0.92)",
    )
    leaks.add_argument(
        "--patient-key",
        action="store_true",
        help="also find DICOM patients in two splits: stores a salted hash of each file's Patient ID "
        "in the index (never the identifier)",
    )
    leaks.add_argument("--memory-mb", type=_positive, default=1024, help="as for analyze (default 1024)")


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


def _non_negative(text: str) -> int:
    value = _whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


# -- commands: parse, call the API once, print the result ---------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(
        max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS),
        log_paths=args.log_paths,
        decode_memory_mb=getattr(args, "decode_memory_mb", DEFAULT_DECODE_BUDGET_MB),
    )


def _open(args: argparse.Namespace) -> Index:
    """The index named by --index; each method checks that it exists when it opens the store."""
    from .api import Index

    return Index(args.index, settings=_settings(args))


def cmd_embed(args: argparse.Namespace) -> int:
    from . import api

    executor = _executor(args)
    idx = api.embed(
        args.images_dir,
        args.out,
        backbone=args.backbone,
        weights=args.weights,
        recipe=args.recipe,
        batch_size=args.batch_size,
        seed=args.seed,
        workers=args.workers,
        rehash=args.rehash,
        ann=args.ann,
        ann_dtype=args.ann_dtype,
        executor=executor,
        settings=_settings(args),
    )
    assert idx.last_embed is not None
    args.metrics = idx.last_embed.metrics
    if args.json:
        print(idx.last_embed.to_json())
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    def show(result: SearchResult) -> None:
        if args.json:
            print(result.to_json(), flush=True)
            return
        print(_shown(result.query))
        if result.error is not None:
            print(f"  error: {_shown(result.error)}")
        for rank, hit in enumerate(result.hits, 1):
            print(f"  {rank:>3}  {hit.score:.4f}  {_shown(hit.path)}")

    results = _open(args).search(
        args.query_dir,
        args.k,
        threshold=args.threshold,
        diverse=args.diverse,
        copies_first=args.copies_first,
        explain=args.explain,
        exact=args.exact,
        ann=args.ann,
        backbone=args.backbone,
        weights=args.weights,
        batch_size=args.batch_size,
        on_result=show,
    )
    args.metrics = results.metrics
    return EXIT_ERROR if results.failed == len(results) else EXIT_OK


def cmd_analyze(args: argparse.Namespace) -> int:
    analysis = _open(args).analyze(
        args.dup_threshold, args.anomaly_top, k=args.anomaly_k, memory_mb=args.memory_mb, ann=args.ann
    )
    args.metrics = analysis.metrics
    if args.json:
        print(analysis.to_json())
        return EXIT_OK
    result = analysis.to_dict()
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
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    evaluation = _open(args).evaluate(args.k, exclude_same=args.exclude_same)
    args.metrics = evaluation.metrics
    if args.json:
        print(evaluation.to_json())
    else:
        for key, value in evaluation.to_dict().items():
            print(f"{key:>12}  {value}")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    calibration = _open(args).calibrate(args.sample, seed=args.seed, dup_threshold=args.dup_threshold)
    args.metrics = calibration.metrics
    if args.plot and not calibration.save_plot(args.plot):
        log.warning("matplotlib is not installed; no plot written")
    if args.json:
        print(calibration.to_json())
        return EXIT_OK
    report = calibration.to_dict()
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
    result = _open(args).report(
        args.out,
        queries=args.query_dir,
        k=args.k,
        threshold=args.threshold,
        diverse=args.diverse,
        copies_first=args.copies_first,
        dup_threshold=args.dup_threshold,
        anomaly_top=args.anomaly_top,
        anomaly_k=args.anomaly_k,
        memory_mb=args.memory_mb,
        ann=args.ann,
        max_groups=args.max_groups,
        workers=args.workers,
        keep=args.keep,
        format_priority=args.format_priority,
        protect=args.protect,
        splits=args.split,
    )
    args.metrics = result.metrics
    if args.json:
        print(result.to_json())
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    found = _open(args).info()
    args.metrics = found.metrics
    info = found.to_dict()
    if args.json:
        print(found.to_json())
        return EXIT_OK
    print(f"index            {info['index']} ({info['database_bytes'] / 1e6:.1f} MB, schema v{info['schema_version']})")
    print(f"backbone         {info['backbone']} (recipe {info['recipe']}, dim {info['dim']})")
    print(f"weights          {info['weights_file']} sha256 {str(info['weights_sha256'])[:12]}")
    print(f"runtime          {', '.join(info['runtimes']) or 'not recorded (an index made before runtimes were)'}")
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


def cmd_forget(args: argparse.Namespace) -> int:
    from . import api

    if not args.folders and not args.missing:
        raise CliError("name the FOLDER(s) to forget (`embedlab info --index INDEX` lists them) or pass --missing")
    result = api.forget(args.index, args.folders, missing=args.missing, settings=_settings(args))
    run_id = result.pop("run_id")
    args.metrics = {"command": "forget", "run_id": run_id, "counts": result}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return EXIT_OK


def _shown(text: str) -> str:
    """A path or message for plain-text output: control characters from a file name (an escape
    sequence, a newline) are printed as ``\\xNN``, so they can neither drive the terminal nor forge
    lines. JSON output escapes them itself."""
    return "".join(c if c.isprintable() or c == " " else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def cmd_dedupe(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.yes:
        raise CliError(f"--action {args.action} changes files: add --yes (or run --action list to see the plan)")
    result = _open(args).dedupe(
        args.action,
        dest=args.dest,
        dup_threshold=args.dup_threshold,
        keep=args.keep,
        format_priority=args.format_priority,
        protect=args.protect,
        journal=args.journal,
        memory_mb=args.memory_mb,
    )
    args.metrics = result.metrics
    summary = result.summary
    if args.json:
        for record in result.to_dicts():
            print(json.dumps(record, separators=(",", ":")))
        print(json.dumps({"summary": summary}, separators=(",", ":")))
    else:
        for group in result.to_dicts():
            print(f"group {group['group']}  keeper {_shown(group['keeper'])}  ({group['reason']})")
            for f in group["files"][1:]:
                status = f" [{f['status']}{': ' + f['why'] if 'why' in f else ''}]" if "status" in f else ""
                print(f"  {f['action']:<9} {_shown(f['path'])}{status}")
    mb = summary["planned_bytes"] / 1e6
    log.info(
        "%d groups, %d files planned for removal (%.1f MB), %d protected",
        summary["groups"],
        summary["planned"],
        mb,
        summary["protected"],
    )
    if result.journal is not None:
        log.info(
            "%d done, %d skipped; undo with: embedlab undo %s", summary["done"], summary["skipped"], result.journal
        )
    return EXIT_OK


def cmd_undo(args: argparse.Namespace) -> int:
    from .api import undo

    result = undo(args.journal, settings=_settings(args))
    args.metrics = result.metrics
    data = result.to_dict()
    if args.json:
        print(result.to_json())
    else:
        for step in data["steps"]:
            print(f"  {step['status']:<9} {_shown(step['path'])}{': ' + step['why'] if 'why' in step else ''}")
    log.info("%d restored, %d skipped", data["restored"], data["skipped"])
    return EXIT_OK if data["skipped"] == 0 else EXIT_ERROR


def cmd_export(args: argparse.Namespace) -> int:
    result = _open(args).export(
        args.what,
        args.format,
        out=args.out,
        queries=args.query_dir,
        k=args.k,
        dup_threshold=args.dup_threshold,
        anomaly_top=args.anomaly_top,
        anomaly_k=args.anomaly_k,
        keep=args.keep,
        format_priority=args.format_priority,
        protect=args.protect,
    )
    args.metrics = result.metrics
    if result.out is None:
        sys.stdout.write(result.text)
    else:
        log.info("wrote %d rows to %s", result.rows, result.out.name)
    return EXIT_OK


def cmd_mark(args: argparse.Namespace) -> int:
    from .marks import read_pairs

    idx = _open(args)
    if args.remove and args.list:
        raise CliError("--remove needs --not-duplicate A B or --from FILE")
    if args.list:
        result = idx.marks()
    else:
        pairs = [tuple(args.not_duplicate)] if args.not_duplicate else read_pairs(args.from_file)
        result = idx.mark_not_duplicate(pairs, remove=args.remove)
        log.info(
            "%d marks %s, %d in the index", result.changed, "removed" if args.remove else "added", len(result.marks)
        )
    args.metrics = result.metrics
    if args.json or not args.list:
        if args.list:
            for item in result.to_dicts():
                print(json.dumps(item, separators=(",", ":")))
        return EXIT_OK
    for item in result.to_dicts():
        a = ", ".join(item["paths_a"]) or f"(not indexed) {item['a'][:12]}"
        b = ", ".join(item["paths_b"]) or f"(not indexed) {item['b'][:12]}"
        print(f"{_shown(a)}  !=  {_shown(b)}")
    return EXIT_OK


def cmd_leaks(args: argparse.Namespace) -> int:
    from .leaks import table

    result = _open(args).leaks(args.split, args.dup_threshold, patient_key=args.patient_key, memory_mb=args.memory_mb)
    args.metrics = result.metrics
    if args.json:
        print(result.to_json())
    else:
        print("\n".join(table(result.to_dict())))
    return EXIT_OK


COMMANDS = {
    "embed": cmd_embed,
    "search": cmd_search,
    "analyze": cmd_analyze,
    "evaluate": cmd_evaluate,
    "calibrate": cmd_calibrate,
    "report": cmd_report,
    "forget": cmd_forget,
    "info": cmd_info,
    "dedupe": cmd_dedupe,
    "undo": cmd_undo,
    "export": cmd_export,
    "mark": cmd_mark,
    "leaks": cmd_leaks,
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
    args.metrics = {"command": args.command}
    # SIGTERM (kill, a container stopping) stops a command the way Ctrl-C does: the batch in
    # flight rolls back, the run is recorded 'interrupted', one line says so (exit 143).
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        if args.metrics_out:
            _check_metrics_out(args.metrics_out)
        with applied(_settings(args)):  # Pillow's and pydicom's process-wide settings, for this command only
            status = COMMANDS[args.command](args)
        if args.metrics_out:
            _write_metrics(args.metrics_out, args.metrics)
        return status
    except EmbedlabError as exc:
        print(f"embedlab: error: {exc.render(CLI_HINTS, CLI_SUBJECTS)}", file=sys.stderr)
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
