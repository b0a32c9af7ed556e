"""The Python API: `embed` a folder into an index, `open` one, and ask it questions.

    import embedlab
    idx = embedlab.embed("assets/images", "index")   # incremental: only new content is embedded
    hits = idx.search("assets/queries", k=5)         # a file, a folder or a list of files

Each `Index` method opens the store for one call, reads inside one snapshot
(a concurrent embed never shows half a batch), records the call in the index's
runs table and returns a typed result (`embedlab.results`) whose ``to_dict()``
is the JSON the matching command prints. The CLI is a thin layer over this.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .dedupe import DEFAULT_FORMATS, DEFAULT_RULES
from .errors import Hint, UsageError
from .images import ImageFileInfo, _file_info, display_root, path_token, scan_images
from .progress import Progress
from .provenance import peak_rss_mib, versions
from .results import (
    Analysis,
    CalibrationReport,
    DedupeResult,
    EmbedResult,
    Evaluation,
    ExportResult,
    IndexInfo,
    LeaksResult,
    MarksResult,
    ReportResult,
    SearchHit,
    SearchResult,
    SearchResults,
    UndoResult,
)
from .settings import Settings, applied
from .store import Store, StoreError

if TYPE_CHECKING:
    from .duplicates import Link
    from .evidence import Evidence
    from .indexer import Executor
    from .ranking import Ranker

log = logging.getLogger("embedlab")

Queries = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
DEFAULT_KEEP, DEFAULT_FORMAT_PRIORITY = DEFAULT_RULES, DEFAULT_FORMATS  # dedupe's keeper rules
APPROXIMATE = {"auto": None, "always": True, "never": False}  # the ann modes, for the k-NN graph


def embed(
    images_dir: str | os.PathLike[str],
    index: str | os.PathLike[str],
    *,
    backbone: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    recipe: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    workers: int = 2,
    rehash: bool = False,
    ann: str = "auto",
    ann_dtype: str | None = None,
    executor: Executor | None = None,
    settings: Settings | None = None,
    metrics: dict[str, Any] | None = None,
) -> Index:
    """Embed every image under ``images_dir`` into ``index`` (created if missing) and return it.

    Incremental: unchanged files are not read, known content reuses its vector,
    and the model loads only when something is new. The run's summary is
    ``Index.last_embed`` (an `EmbedResult`). ``ann`` (auto, always, never) keeps
    the HNSW search sidecar in step; ``executor`` runs decoding and the model
    elsewhere (``embedlab.cluster.RayExecutor``).
    """
    from .engines import sync_engines
    from .indexer import embed_folder

    with applied(settings) as active:
        report = embed_folder(
            os.fspath(images_dir),
            os.fspath(index),
            backbone_name=backbone,
            weights=None if weights is None else os.fspath(weights),
            recipe=recipe,
            batch_size=batch_size,
            seed=seed,
            workers=workers,
            rehash=rehash,
            executor=executor,
        )
        if ann != "never" and Path(index, "embedlab.db").is_file():
            with Store(index) as store:
                sync_engines(store, ann, ann_dtype)
    _log_embed_summary(os.fspath(index), report)
    run_metrics = {"command": "embed", **(metrics or {})}
    run_metrics.update(
        run_id=report.run_id,
        counts={k: getattr(report, k) for k in ("images", "new", "reused", "unchanged", "removed", "failed")},
        embedded_vectors=report.embedded_vectors,
        images_per_second=round(report.images_per_second, 2),
        timings={k: round(v, 3) for k, v in report.timings.items()},
    )
    run_metrics.update(_process_metrics())
    try:
        with Store(index) as store:
            store.set_run_metrics(report.run_id, run_metrics)
    except Exception as exc:  # a read-only index keeps its run without metrics
        log.debug("metrics not recorded: %s", type(exc).__name__)
    idx = Index(index, settings=active)
    idx.last_embed = EmbedResult(report, Path(index) / "embedlab.db", run_metrics)
    return idx


def _log_embed_summary(index: str, report: Any) -> None:
    """What the run did, in words: vectors computed, copies, unchanged, removed, unreadable."""
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
        log.info("`embedlab info --index %s` lists the files that could not be read, with the reason", index)


def forget(
    index: str | os.PathLike[str],
    folders: Sequence[str | os.PathLike[str]] = (),
    *,
    missing: bool = False,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Drop whole indexed folders (renamed, moved, added by mistake; they need not exist) and the
    vectors only they used; ``missing`` adds every indexed folder that no longer exists.
    Returns the folders dropped and how many rows and vectors went."""
    from .engines import sync_engines
    from .folders import forget_folders

    if not folders and not missing:
        raise UsageError("name the folders to forget (Index.info lists them) or pass missing=True")
    with applied(settings):
        report = forget_folders(os.fspath(index), [os.fspath(f) for f in folders], missing)
        with Store(index) as store:
            sync_engines(store, "auto", None)
    log.info("forgot %d folder(s): %d row(s), %d vector(s) removed", len(report.folders), report.images, report.vectors)
    return {
        "folders": report.folders,
        "removed": report.images,
        "vectors_removed": report.vectors,
        "run_id": report.run_id,
    }


def open(index: str | os.PathLike[str], *, settings: Settings | None = None) -> Index:
    """An existing index; StoreError when there is none or it holds no embeddings yet."""
    idx = Index(index, settings=settings)
    with idx._store(exact=True, quiet=True):
        pass
    return idx


class Index:
    """One index folder (``INDEX/embedlab.db``); every method is one command's worth of work."""

    def __init__(self, path: str | os.PathLike[str], *, settings: Settings | None = None):
        self.path = Path(path)
        self.settings = settings or Settings()
        self.last_embed: EmbedResult | None = None

    def __repr__(self) -> str:
        return f"Index({os.fspath(self.path)!r})"

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _store(self, *, exact: bool, quiet: bool = False) -> Iterator[Store]:
        """The store, settings applied; ``exact`` skips loading sqlite-vec (no KNN needed)."""
        with applied(self.settings):
            store = Store(self.path, use_vec=not exact)
            try:
                if not store.meta().get("signature"):
                    where = display_root(self.path)
                    raise StoreError(
                        f"index {where} holds no embeddings yet", hint=Hint("empty_index", {"index": where}, sep=": ")
                    )
                if not store.vec_loaded and not exact and not quiet:
                    log.warning("sqlite-vec could not load (%s); using exact NumPy search", store.vec_reason)
                if store.vec_loaded and store.read_only and not store.vec_index_current():
                    store.vec_loaded, store.vec_reason = False, "the read-only index's sqlite-vec table is out of date"
                    if not exact and not quiet:
                        log.warning("%s; using exact NumPy search", store.vec_reason)
                elif store.vec_loaded and not store.read_only:
                    store.ensure_vec_index(int(store.meta()["dim"]))
                yield store
            finally:
                store.close()

    # -- search ---------------------------------------------------------------------

    def search(
        self,
        queries: Queries,
        k: int = 5,
        *,
        threshold: float | None = None,
        diverse: float | None = None,
        copies_first: bool = False,
        explain: bool = False,
        exact: bool = False,
        ann: str = "auto",
        backbone: str | None = None,
        weights: str | os.PathLike[str] | None = None,
        batch_size: int = 32,
        on_result: Callable[[SearchResult], None] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> SearchResults:
        """Top ``k`` indexed images for each query image (a file, a folder searched recursively, or a list).

        ``threshold`` drops results below that cosine; ``diverse`` (MMR's lambda)
        re-ranks so the top k are not copies of one image; ``copies_first`` puts
        verified copies of the query first; ``explain`` adds distances and exact
        ranks. ``on_result`` sees each query's result as soon as it is ready.
        Queries the index already holds reuse their stored vector: no model load.
        """
        started = time.perf_counter()
        with self._store(exact=exact) as store:
            files = query_files(queries)
            results = _search(
                store,
                files,
                k=k,
                threshold=threshold,
                diverse=diverse,
                copies_first=copies_first,
                explain=explain,
                exact=exact,
                ann=ann,
                backbone=backbone,
                weights=weights,
                batch_size=batch_size,
                on_result=on_result,
            )
            results.metrics = {"command": "search", **(metrics or {}), **results.metrics}
            _record_run(store, "search", started, results.metrics)
        return results

    # -- analyze --------------------------------------------------------------------

    def analyze(
        self,
        dup_threshold: float = 0.92,
        anomaly_top: int = 8,
        *,
        k: int = 10,
        memory_mb: int = 1024,
        ann: str = "auto",
        metrics: dict[str, Any] | None = None,
    ) -> Analysis:
        """Near-duplicate groups (verified same picture at ``dup_threshold`` or above) and the
        ``anomaly_top`` most anomalous images, scored on each image's ``k`` nearest neighbours."""
        started = time.perf_counter()
        with self._store(exact=True) as store:
            analysis = _analyze(store, dup_threshold, anomaly_top, k=k, memory_mb=memory_mb, ann=ann)
            data = analysis.data
            analysis.metrics = {
                "command": "analyze",
                **(metrics or {}),
                "counts": {
                    "images": data["images"],
                    "groups": len(data["duplicate_groups"]),
                    "k": k,
                    "dup_threshold": dup_threshold,
                },
                "anomalies": len(data["anomalies"]),
                "unreadable": len(data["unreadable"]),
                "unique_vectors": data["unique_vectors"],
            }
            _record_run(store, "analyze", started, analysis.metrics)
        log.info(
            "%d duplicate groups, %d anomalies, %d unreadable, %.2fs",
            len(data["duplicate_groups"]),
            len(data["anomalies"]),
            len(data["unreadable"]),
            time.perf_counter() - started,
        )
        return analysis

    # -- evaluate, calibrate --------------------------------------------------------

    def evaluate(
        self, ks: Sequence[int] = (1, 5, 10), *, exclude_same: str | None = None, metrics: dict[str, Any] | None = None
    ) -> Evaluation:
        """P@k, recall@k and mAP, every image querying the others; the indexed folder holds one
        subfolder per class. ``exclude_same`` (a regex with one group) skips results from the same
        source as the query, such as one patient's other images."""
        from .evaluation import class_of, retrieval_metrics, same_group

        cut_offs = sorted({int(x) for x in ks})
        if not cut_offs or cut_offs[0] < 1:
            raise UsageError("cut-offs must be at least 1")
        exclude = None
        if exclude_same:
            try:
                same = same_group(exclude_same)
            except re.error as exc:
                raise UsageError(f"is not a valid regex: {exc}", subject="exclude_same") from None
        with self._store(exact=True) as store, store.snapshot():
            shas, matrix = store.load_vectors(through_vec=False)
            by_sha, roots = store.ok_paths_by_sha(), store.roots()
        rows = [(path, i) for i, sha in enumerate(shas) for path in by_sha[sha]]
        labels = [class_of(path, roots[path]) for path, _ in rows]
        if len(set(labels) - {""}) < 2:
            raise UsageError("evaluate needs images in at least two class subfolders under the indexed folder")
        names = [path for path, _ in rows]
        if exclude_same:
            exclude = lambda i, j: same(names[i], names[j])  # noqa: E731
        found = retrieval_metrics(matrix[[i for _, i in rows]], labels, ks=cut_offs, exclude=exclude)
        data = {"images": len(rows), "classes": len(set(labels)), **{k: round(v, 4) for k, v in found.items()}}
        return Evaluation(data, {"command": "evaluate", **(metrics or {}), **data})

    def calibrate(
        self, sample: int = 40, *, seed: int = 0, dup_threshold: float = 0.92, metrics: dict[str, Any] | None = None
    ) -> CalibrationReport:
        """Plant known edits of ``sample`` indexed images (their files must exist) and measure how the
        same-picture judgement scores them: per-edit recall at ``dup_threshold`` and a suggested threshold."""
        from .analysis import evidence_loader
        from .calibration import calibrate
        from .indexer import resolve_backbone

        with self._store(exact=True) as store:
            backbone = resolve_backbone(store, None, None)
            with store.snapshot():
                shas, matrix = store.load_vectors(through_vec=False)
                by_sha = store.ok_paths_by_sha()
            if len(shas) < 2:
                raise UsageError("calibrate needs an index of at least two images")
            loader = evidence_loader(store, shas)
            found = calibrate(backbone, shas, matrix, [by_sha[s] for s in shas], loader, sample=sample, seed=seed)
        if found.sampled == 0:
            raise UsageError("none of the sampled images could be read from disk; run calibrate where they live")
        result = CalibrationReport(found, dup_threshold)
        data = result.to_dict()
        result.metrics = {
            "command": "calibrate",
            **(metrics or {}),
            "sampled_images": data["sampled_images"],
            "suggested_dup_threshold": data["suggested_dup_threshold"],
        }
        return result

    # -- report, info ---------------------------------------------------------------

    def report(
        self,
        out: str | os.PathLike[str],
        *,
        queries: Queries | None = None,
        k: int = 5,
        threshold: float | None = None,
        diverse: float | None = None,
        copies_first: bool = False,
        dup_threshold: float = 0.92,
        anomaly_top: int = 8,
        anomaly_k: int = 10,
        memory_mb: int = 1024,
        ann: str = "auto",
        max_groups: int = 200,
        workers: int = 2,
        keep: str | Sequence[str] = DEFAULT_KEEP,
        format_priority: str | Sequence[str] = DEFAULT_FORMAT_PRIORITY,
        protect: Sequence[str | os.PathLike[str]] = (),
        splits: dict[str, str | os.PathLike[str]] | Sequence[str] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> ReportResult:
        """One self-contained HTML page of the same Analysis `analyze` returns (and, with ``queries``,
        the same results `search` returns with these options): thumbnails, scores, reasons, failures,
        each group's keeper and planned action (``keep``, ``protect`` as for `dedupe`), the marks and,
        with ``splits``, the near-duplicates that cross them (as `leaks`)."""
        from . import dedupe as dd
        from . import leaks as lk
        from .report import ReportOptions, build_report, write_report

        rules, formats = dd.parse_rules(keep), dd.parse_formats(format_priority)
        folders = None
        if splits is not None:
            folders = lk.parse_splits(
                splits if not isinstance(splits, dict) else {n: os.fspath(f) for n, f in splits.items()}
            )

        started = time.perf_counter()
        target = Path(out)
        if target.is_dir():
            raise UsageError(
                f"{os.fspath(out)} is a folder: name the HTML file, e.g. {target / 'report.html'}", subject="report_out"
            )
        files = query_files(queries, hint="no_report_queries") if queries is not None else None
        options = ReportOptions(
            dup_threshold=dup_threshold,
            anomaly_top=anomaly_top,
            anomaly_k=anomaly_k,
            max_groups=max_groups,
            query_dir=None if queries is None else str(queries),
            k=k,
            workers=workers,
        )
        with self._store(exact=files is None) as store:
            t0 = time.perf_counter()
            searches = (
                _search(store, files, k=k, threshold=threshold, diverse=diverse, copies_first=copies_first)
                if files is not None
                else SearchResults([], k=k)
            )
            search_seconds = time.perf_counter() - t0
            with store.snapshot():  # the analysis and every row the page shows: one committed state
                t0 = time.perf_counter()
                analysis = _analyze(
                    store, dup_threshold, anomaly_top, k=anomaly_k, memory_mb=memory_mb, ann=ann, snapshot_held=True
                )
                timings = {"analyze": time.perf_counter() - t0, "search": search_seconds}
                rows = store.image_rows()
                protected = [os.fspath(p) for p in protect]
                plans = dd.plan_groups(
                    [dd.members_of(rows, g, protected) for g in analysis.duplicate_groups], rules, formats
                )
                found = store.marks()
                paths = store.ok_paths_for(sorted({s for a, b, _ in found for s in (a, b)}))
                marks = [{"a": a, "b": b, "paths_a": paths.get(a, []), "paths_b": paths.get(b, []), "created_at": t}
                         for a, b, t in found]  # fmt: skip
                leaks = None
                if folders is not None:
                    keys = store.patient_keys() if store.patient_salt(create=False) else None
                    leaks = lk.find_leaks(analysis.rows, analysis.shas, analysis.links, folders, dup_threshold, keys)
                text, stats = build_report(store, analysis, searches, options, plans=plans, marks=marks, leaks=leaks)
            stats.timings = {**timings, **stats.timings}
            try:
                write_report(text, target)
            except OSError as exc:
                raise UsageError(
                    f"cannot write {os.fspath(out)}: {exc.strerror}", hint=Hint("report_unwritable")
                ) from None
            result = ReportResult(target, stats)
            summary = {key: value for key, value in result.to_dict().items() if key != "out"}
            result.metrics = {
                "command": "report",
                **(metrics or {}),
                "counts": {"groups": stats.groups, "anomalies": stats.anomalies, "queries": stats.queries},
                **summary,
                "timings": {key: round(value, 3) for key, value in stats.timings.items()},
            }
            _record_run(store, "report", started, result.metrics)
        log.info(
            "wrote %s: %d duplicate groups, %d anomalies, %d queries, %d unreadable, %d thumbnails (%.1f MB), %.2fs",
            target.name,
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
        return result

    def info(self) -> IndexInfo:
        """Counts, backbone, recipe, weights, failures, the last five runs and the size on disk."""
        with self._store(exact=True) as store:
            meta = store.meta()
            data: dict[str, Any] = {
                "index": str(store.path),
                "backbone": meta.get("backbone"),
                "recipe": meta.get("recipe"),
                "dim": int(meta["dim"]),
                "weights_file": meta.get("weights_file"),
                "weights_sha256": meta.get("weights_sha256"),
                # Every inference engine that wrote vectors here, and their precision (issue 15).
                "runtimes": [r for r in meta.get("runtimes", "").split(",") if r],
                "precision": meta.get("precision", "fp32"),
                **store.summary(),
                "roots": _folder_list(store),
                "failures": [{"path": p, "error": e} for p, e in store.errors()],
                "last_runs": [
                    {k: run.get(k) for k in ("id", "command", "started_at", "status", "counts", "timings", "metrics")}
                    for run in store.runs(limit=5)
                ],
            }
        return IndexInfo(data, {"command": "info"})

    # -- act on what analyze finds: dedupe, undo, export, marks, leaks ---------------

    def dedupe_plan(
        self,
        dup_threshold: float = 0.92,
        *,
        keep: str | Sequence[str] = DEFAULT_KEEP,
        format_priority: str | Sequence[str] = DEFAULT_FORMAT_PRIORITY,
        protect: Sequence[str | os.PathLike[str]] = (),
        k: int = 10,
        memory_mb: int = 1024,
        ann: str = "auto",
    ) -> DedupeResult:
        """For each group `analyze` reports at ``dup_threshold``: the keeper by the ordered ``keep`` rules,
        files under ``protect`` folders kept, every other file planned for removal. Touches nothing."""
        return self.dedupe(
            "list",
            dup_threshold=dup_threshold,
            keep=keep,
            format_priority=format_priority,
            protect=protect,
            k=k,
            memory_mb=memory_mb,
            ann=ann,
        )

    def dedupe(
        self,
        action: str = "list",
        *,
        dest: str | os.PathLike[str] | None = None,
        dup_threshold: float = 0.92,
        keep: str | Sequence[str] = DEFAULT_KEEP,
        format_priority: str | Sequence[str] = DEFAULT_FORMAT_PRIORITY,
        protect: Sequence[str | os.PathLike[str]] = (),
        journal: str | os.PathLike[str] | None = None,
        k: int = 10,
        memory_mb: int = 1024,
        ann: str = "auto",
        metrics: dict[str, Any] | None = None,
    ) -> DedupeResult:
        """The plan of `dedupe_plan`, carried out: ``move`` (to ``dest``, layout kept), ``hardlink`` or
        ``symlink`` (to the keeper), ``trash`` (the freedesktop trash, or ``dest``). Every file is
        re-checked against the index first; every step is journalled (``journal``, default
        INDEX/journals/...) so that `undo` reverses it; the index is brought level."""
        from . import dedupe as dd

        started = time.perf_counter()
        rules, formats = dd.parse_rules(keep), dd.parse_formats(format_priority)
        if action not in dd.ACTIONS:
            raise UsageError(f"must be one of {', '.join(dd.ACTIONS)}", subject="action")
        if action == "move" and dest is None:
            raise UsageError("is needed by move: name a folder for the moved files", subject="dest")
        folders = [os.fspath(p) for p in protect]
        with self._store(exact=True) as store:
            with store.snapshot():
                analysis = _analyze(store, dup_threshold, 0, k=k, memory_mb=memory_mb, ann=ann, snapshot_held=True)
                rows = store.image_rows()
            plans = dd.plan_groups([dd.members_of(rows, g, folders) for g in analysis.duplicate_groups], rules, formats)
            result = DedupeResult(plans, action=action, rules=rules)
            if action != "list":
                _check_dest(dest, set(store.roots().values()))
                target = Path(journal) if journal is not None else store.dir / "journals" / dd.journal_name()
                with store.writer_lock():
                    run_id = store.start_run("dedupe", versions=versions())
                    counts = dd.apply_plan(store, plans, action, dest=dest, journal_path=target, run_id=run_id)
                    store.finish_run(run_id, "ok", counts=counts)
                result.journal, result.counts = target, counts
            result.metrics = {"command": "dedupe", **(metrics or {}), "counts": result.summary}
            if action == "list":
                _record_run(store, "dedupe", started, result.metrics)
        return result

    def undo(self, journal: str | os.PathLike[str]) -> UndoResult:
        """Reverse a dedupe journal of this index (see `embedlab.undo`)."""
        return undo(journal, settings=self.settings)

    def export(
        self,
        what: str,
        format: str = "csv",
        *,
        out: str | os.PathLike[str] | None = None,
        queries: Queries | None = None,
        k: int = 5,
        dup_threshold: float = 0.92,
        anomaly_top: int = 8,
        anomaly_k: int = 10,
        keep: str | Sequence[str] = DEFAULT_KEEP,
        format_priority: str | Sequence[str] = DEFAULT_FORMAT_PRIORITY,
        protect: Sequence[str | os.PathLike[str]] = (),
        memory_mb: int = 1024,
        ann: str = "auto",
    ) -> ExportResult:
        """``what`` (groups, anomalies, images, search) as ``format`` (csv, jsonl), written to ``out``
        or returned as ``text``; the columns are `embedlab.export.COLUMNS`."""
        from . import dedupe as dd
        from . import export as ex

        if what not in ex.WHATS:
            raise UsageError(f"must be one of {', '.join(ex.WHATS)}", subject="what")
        if format not in ex.FORMATS:
            raise UsageError(f"must be one of {', '.join(ex.FORMATS)}", subject="format")
        if what == "search" and queries is None:
            raise UsageError("exporting search results needs query images", hint=Hint("export_queries", sep=": "))
        files = query_files(queries) if what == "search" and queries is not None else None
        with self._store(exact=files is None) as store:
            if files is not None:
                records = ex.search_rows(_search(store, files, k=k))
            else:
                with store.snapshot():
                    rows = store.image_rows()
                    if what == "images":
                        records = ex.image_rows(rows)
                    else:
                        top = anomaly_top if what == "anomalies" else 0
                        analysis = _analyze(
                            store, dup_threshold, top, k=anomaly_k, memory_mb=memory_mb, ann=ann, snapshot_held=True
                        )
                if what == "anomalies":
                    records = ex.anomaly_rows(analysis)
                elif what == "groups":
                    members = [
                        dd.members_of(rows, g, [os.fspath(p) for p in protect]) for g in analysis.duplicate_groups
                    ]
                    plans = dd.plan_groups(members, dd.parse_rules(keep), dd.parse_formats(format_priority))
                    records = ex.group_rows(analysis, rows, plans)
        text = ex.render(what, records, format)
        target = ex.write(text, out) if out is not None else None
        return ExportResult(what, format, text, len(records), target, {"command": "export", "rows": len(records)})

    def mark_not_duplicate(
        self, a: str | Sequence[tuple[str, str]], b: str | None = None, *, remove: bool = False
    ) -> MarksResult:
        """Mark ``a`` and ``b`` (or every pair in ``a``) as not the same picture, by content; ``remove``
        drops such marks instead. Paths are indexed paths or files on disk (hashed)."""
        from .marks import content_of

        if isinstance(a, str):
            if b is None:
                raise UsageError("marks take two paths (or a list of path pairs)")
            pairs = [(a, b)]
        else:
            pairs = [(str(x), str(y)) for x, y in a]
        with self._store(exact=True) as store:
            by_path = {p: s for s, paths in store.ok_paths_by_sha().items() for p in paths}
            shas = []
            for x, y in pairs:
                sx, sy = content_of(x, by_path), content_of(y, by_path)
                if sx == sy:
                    raise UsageError(f"{path_token(x)} and {path_token(y)} hold the same bytes: one content, never two")
                shas.append((sx, sy))
            with store.transaction():
                changed = store.remove_marks(shas) if remove else store.add_marks(shas)
        result = self.marks()
        result.changed = changed
        return result

    def marks(self) -> MarksResult:
        """Every "not a duplicate" mark, with the indexed paths that hold each side now."""
        with self._store(exact=True) as store, store.snapshot():
            found = store.marks()
            paths = store.ok_paths_for(sorted({s for a, b, _ in found for s in (a, b)}))
        items = [
            {"a": a, "b": b, "paths_a": paths.get(a, []), "paths_b": paths.get(b, []), "created_at": t}
            for a, b, t in found
        ]
        return MarksResult(items, metrics={"command": "mark", "counts": {"marks": len(items)}})

    def leaks(
        self,
        splits: dict[str, str | os.PathLike[str]] | Sequence[str],
        dup_threshold: float = 0.92,
        *,
        patient_key: bool = False,
        k: int = 10,
        memory_mb: int = 1024,
        ann: str = "auto",
        metrics: dict[str, Any] | None = None,
    ) -> LeaksResult:
        """Near-duplicate pairs (verified, at ``dup_threshold`` or above; marks respected) whose files lie
        in different ``splits`` (name -> folder, or "name=folder" items), with counts per split pair.
        ``patient_key``: also the DICOM patients found in two splits, by a salted hash stored in the
        index (never the identifier)."""
        from . import leaks as lk

        started = time.perf_counter()
        folders = lk.parse_splits(
            splits if not isinstance(splits, dict) else {n: os.fspath(f) for n, f in splits.items()}
        )
        lk.warn_outside(folders)
        with self._store(exact=True) as store:
            with store.snapshot():
                analysis = _analyze(store, dup_threshold, 0, k=k, memory_mb=memory_mb, ann=ann, snapshot_held=True)
                rows = store.image_rows() if patient_key else {}
            keys = lk.update_patient_keys(store, rows) if patient_key else None
            data = lk.find_leaks(analysis.rows, analysis.shas, analysis.links, folders, dup_threshold, keys)
            result = LeaksResult(data)
            result.metrics = {
                "command": "leaks",
                **(metrics or {}),
                "counts": {"pairs": len(data["pairs"]), "split_pairs": len(data["counts"])},
            }
            _record_run(store, "leaks", started, result.metrics)
        return result


def undo(journal: str | os.PathLike[str], *, settings: Settings | None = None) -> UndoResult:
    """Reverse what one `Index.dedupe` action did, from its journal: files back at their paths with
    their bytes and modification times, their index rows back. A step whose files moved on since
    is skipped and reported; undoing a journal twice is refused."""
    from .dedupe import undo_journal

    with applied(settings):
        _, steps = undo_journal(journal, lambda index: Store(index))
    return UndoResult(Path(journal), steps, {"command": "undo"})


def _check_dest(dest: str | os.PathLike[str] | None, roots: set[str]) -> None:
    """A destination inside an indexed folder would be embedded again: the index would never be level."""
    if dest is None:
        return
    here = os.path.abspath(dest)
    for root in roots:
        top = os.path.abspath(root)
        if here == top or here.startswith(top.rstrip(os.sep) + os.sep):
            raise UsageError("is inside an indexed folder; choose a folder outside it", subject="dest")


# -- the work, on an open store -------------------------------------------------------


def query_files(queries: Queries, *, hint: str = "no_queries") -> list[ImageFileInfo]:
    """Query images from a folder (searched recursively), one file, or a list of files."""
    if isinstance(queries, (str, os.PathLike)):
        if os.path.isfile(queries):
            items: Sequence[str | os.PathLike[str]] = [queries]
        else:
            found = scan_images(queries)
            if not found:
                raise UsageError(f"no images found in {display_root(queries)}", hint=Hint(hint, sep=": "))
            return found
    else:
        items = queries
    files = []
    for item in items:
        text = os.fspath(item)
        info = _file_info(text, text) if os.path.exists(text) else None
        if info is None:
            raise UsageError(f"not a file: {path_token(text)}")
        files.append(info)
    if not files:
        raise UsageError("no query images given")
    return files


def _search(
    store: Store,
    queries: list[ImageFileInfo],
    *,
    k: int,
    threshold: float | None = None,
    diverse: float | None = None,
    copies_first: bool = False,
    explain: bool = False,
    exact: bool = False,
    ann: str = "auto",
    backbone: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    on_result: Callable[[SearchResult], None] | None = None,
) -> SearchResults:
    from .indexer import query_vectors, resolve_spec
    from .ranking import Ranker
    from .search import Searcher

    started = time.perf_counter()
    spec = resolve_spec(store, backbone, None if weights is None else os.fspath(weights))
    t0 = time.perf_counter()
    # Queries the index already holds (same bytes) reuse their stored vector: no model load.
    evidence: dict[int, Evidence] = {}
    turned: dict[int, Any] = {}
    wanted = evidence if copies_first else None  # evidence only when copies are verified
    vectors, model = query_vectors(
        store, spec, [q.abspath for q in queries], batch_size, wanted, turned if copies_first else None
    )
    embed_seconds = time.perf_counter() - t0
    results: list[SearchResult] = []
    latencies: list[float] = []
    with store.snapshot():  # one committed state, even while an embed is writing
        ranker = Ranker(store, Searcher(store, exact=exact, ann=ann))
        for n, (query, vec) in enumerate(zip(queries, vectors, strict=True)):
            if isinstance(vec, str):
                log.warning("%s: query skipped, %s", path_token(query.path), vec)
                result = SearchResult(query.path, error=vec)
            else:
                t0 = time.perf_counter()
                copy = (evidence.get(n), turned.get(n, ())) if copies_first else (None, ())
                hits = _ranked(ranker, vec, k, threshold, diverse, copy, explain)
                latencies.append(time.perf_counter() - t0)
                result = SearchResult(query.path, hits)
                if explain:
                    result.backbone, result.engine = spec.signature, ranker.searcher.engine
            results.append(result)
            if on_result is not None:
                on_result(result)
    engine = ranker.searcher.engine
    log.info(
        "%d queries, k=%d, engine %s, backbone %s (dim %d, %s), %.2fs",
        len(queries),
        k,
        engine,
        spec.name,
        spec.dim,
        "model loaded" if model is not None else "stored vectors, no model",
        time.perf_counter() - started,
    )
    failed = sum(r.error is not None for r in results)
    metrics = {
        "counts": {"queries": len(queries), "failed": failed, "k": k},
        "engine": engine,
        "diverse": diverse,
        "threshold": threshold,
        "query_embed_seconds": round(embed_seconds, 3),
        "search_ms_mean": round(1000 * sum(latencies) / len(latencies), 3) if latencies else None,
        "search_ms_max": round(1000 * max(latencies), 3) if latencies else None,
    }
    return SearchResults(results, engine=engine, backbone=spec.signature, k=k, metrics=metrics)


def _ranked(
    ranker: Ranker,
    vec: Any,
    k: int,
    threshold: float | None,
    diverse: float | None,
    copy: tuple[Evidence | None, Any],
    explain: bool,
) -> list[SearchHit]:
    """One query's hits with the search extras applied: copies first, diverse, threshold, explain.

    ``copy``: the query's same-picture evidence and its quarter-turned vectors (copies first), or (None, ())."""
    evidence, turned = copy
    hits = ranker.top_k(vec, k, diverse=diverse, threshold=threshold, evidence=evidence, turned=turned)
    if not explain:
        return [SearchHit(h.path, h.score, h.copy) for h in hits]
    ranks = ranker.exact_ranks(vec)
    return [SearchHit(h.path, h.score, h.copy, round(1.0 - h.score, 6), ranks.get(h.path)) for h in hits]


def _analyze(
    store: Store,
    dup_threshold: float,
    anomaly_top: int,
    *,
    k: int,
    memory_mb: int,
    ann: str,
    snapshot_held: bool = False,
) -> Analysis:
    """`analyze` on an open store, every read (vectors, paths, metrics, evidence) in one snapshot."""
    from .analysis import analyze_vectors, evidence_loader, item_slices, load_for_analysis
    from .marks import blocked_pairs
    from .registry import semantic_columns
    from .verify import TINY_SIDE

    meta = store.meta()
    with _held(store, snapshot_held):
        # Streamed, float16 when float32 would not fit; the backbone's own features only. All-pairs
        # work needs every vector in memory; the plain table reads them far faster than a vec0 scan.
        shas, matrix = load_for_analysis(store, semantic_columns(meta))
        by_sha, quality, errors = store.ok_paths_by_sha(), store.quality(), store.errors()
        rows = [by_sha[s] for s in shas]
        blocked = blocked_pairs(shas, [(a, b) for a, b, _ in store.marks()])
        slices = item_slices(rows, store.series_slices())
        tiny = store.small_contents(TINY_SIDE)
        small = [n for n, s in enumerate(shas) if s in tiny]
        links: list[Link] = []
        with Progress(len(shas), "analyzing", unit="vec") as bar:
            data = analyze_vectors(
                matrix,
                rows,
                threshold=dup_threshold,
                anomaly_top=anomaly_top,
                k=k,
                quality=quality,
                evidence=evidence_loader(store, shas),
                on_rows=bar.update,
                memory_mb=memory_mb,
                approximate=APPROXIMATE[ann],
                blocked=blocked or None,
                links_out=links,
                slices=slices,
                small=small,
            )
    data["unreadable"] = [{"path": p, "error": e} for p, e in errors]
    data.update(
        backbone=meta.get("backbone"),
        dim=int(meta["dim"]),
        images=sum(len(p) for p in by_sha.values()),
        unique_vectors=len(shas),
        dup_threshold=dup_threshold,
        k=k,
    )
    if blocked:  # only with marks: an index without any answers exactly as before
        data["marks_applied"] = len(blocked)
    return Analysis(data, matrix, rows, shas=shas, links=links)


@contextmanager
def _held(store: Store, snapshot_held: bool) -> Iterator[None]:
    """A snapshot, unless the caller already holds one (SQLite transactions do not nest)."""
    if snapshot_held:
        yield
    else:
        with store.snapshot():
            yield


def _folder_list(store: Store) -> list[dict[str, Any]]:
    """Each indexed folder: its root, real path (None before schema v9), rows and whether it still exists."""
    counts = store.folder_counts()
    return [
        {"root": root, "real_path": real, "images": counts.get(root, 0), "exists": os.path.isdir(real or root)}
        for root, real in store.folders().items()
    ]


def _record_run(store: Store, command: str, started: float, metrics: dict[str, Any]) -> None:
    """Add this call to the runs manifest; a read-only index just goes without.

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
