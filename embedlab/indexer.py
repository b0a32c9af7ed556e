"""`embed`: bring an index level with a folder, embedding only what is new.

Files are matched by path, size and mtime first (no read), then by content
hash: a renamed or copied file reuses its vector, a changed one is embedded
again, a vanished one leaves the index. Each batch commits on its own, so an
interrupted run keeps everything finished before it.

The model is loaded only when there is something to embed: planning needs the
index's signature and the weights file's hash, never torch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from .descriptor import DEFAULT_RECIPE
from .errors import Hint
from .evidence import QUERY_FEATURES, Evidence
from .evidence import compute as compute_evidence
from .folders import choose_root, real_folder, warn_about_folders
from .images import (
    ImageError,
    ImageFileInfo,
    decode,
    display_root,
    path_text,
    path_token,
    quality_metrics,
    read_file,
    scan_images,
    sha256_file,
)
from .progress import Progress
from .provenance import versions
from .registry import (
    DEFAULT_BACKBONE,
    LEGACY_DRAFT_SIDE,
    BackboneSpec,
    backbone_spec,
    explicit_precision,
    weights_folders,
)
from .store import DB_NAME, LOCK_NAME, ImageRow, IndexMismatch, Store

if TYPE_CHECKING:  # the model code imports torch: only where a model runs
    from .backbones import Backbone, Prepared

__all__ = [
    "EmbedReport",
    "Embedded",
    "Executor",
    "IndexMismatch",
    "Job",
    "embed_folder",
    "embed_jobs",
    "embed_paths",
    "query_vectors",
    "resolve_backbone",
    "resolve_spec",
    "write_batch",
]

log = logging.getLogger("embedlab")
# Batches decoded ahead of the one in the forward pass: decoding the next batch
# overlaps inference, and memory stays bounded (workers keep only the network
# input, never the full-size picture).
PREFETCH_BATCHES = 2
# Most images decoded, embedded and committed at a time, whatever --batch-size
# says: up to (1 + PREFETCH_BATCHES) batches of network inputs (0.6 MB each) sit
# in memory, so 256 keeps that near 0.5 GB, and a crash loses at most one batch.
MAX_BATCH = 256


@dataclass
class EmbedReport:
    images: int = 0
    new: int = 0
    reused: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    embedded_vectors: int = 0
    unlisted_folders: int = 0  # folders that could not be listed: their indexed files are kept, not removed
    backbone: str = ""
    recipe: str = ""
    runtime: str = ""  # the engine that computed this run's vectors (empty: none loaded)
    dim: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    run_id: int = 0  # the row of this run in the runs manifest

    @property
    def images_per_second(self) -> float:
        return self.embedded_vectors / self.timings["embed"] if self.timings.get("embed") else 0.0


def check_compatible(store: Store, spec: BackboneSpec) -> None:
    """Refuse to mix vectors of two recipes, weights or precisions in one index.

    Runtimes of one precision may share an index: fp32 OpenVINO and fp32 torch
    vectors of the same image differ by about 1e-5 in cosine (tested below 2e-5),
    far below any score this tool prints or thresholds on, so an index built with
    torch keeps working where OpenVINO is installed. bf16 moves vectors far more
    (1 - cosine up to 0.07 against torch, measured) and is a different signature.
    """
    meta = store.meta()
    if "signature" not in meta:
        return
    held = meta.get("precision", "fp32")
    if meta["signature"] != spec.signature and held != spec.precision:
        raise IndexMismatch(
            f"index holds {held} vectors but this run computes {spec.precision} (EMBEDLAB_PRECISION); "
            "precisions are never mixed in one index",
            hint=Hint("other_precision"),
        )
    if meta["signature"] != spec.signature:
        # Name what differs: the backbone, else the recipe (the signature's middle part).
        if meta.get("backbone") and meta["backbone"] != spec.name:
            hint = Hint("other_backbone", {"backbone": meta["backbone"]})
        else:
            hint = Hint("other_recipe", {"recipe": meta.get("recipe") or meta["signature"].split("/")[1]})
        raise IndexMismatch(
            f"index was built with {meta['signature']} but this run uses {spec.signature}",
            hint=hint,
        )
    if meta["weights_sha256"] != spec.weights_sha256:
        raise IndexMismatch(
            f"index was built with weights {meta['weights_sha256'][:12]} but {spec.weights_path.name} "
            f"is {spec.weights_sha256[:12]}",
            hint=Hint("other_weights"),
        )


def resolve_spec(
    store: Store, name: str | None, weights: str | None, recipe: str | None = None, precision: str | None = None
) -> BackboneSpec:
    """The index's own backbone, recipe and precision unless the user names one (which must then match); no torch.

    Local weights are looked for in ``INDEX/weights`` and the documented folders
    (``registry.weights_folders``), preferring the file the index was built with."""
    meta = store.meta()
    chosen = name or meta.get("backbone") or DEFAULT_BACKBONE
    prefer = meta.get("weights_file") if chosen == meta.get("backbone") else None
    spec = backbone_spec(
        chosen,
        weights,
        recipe or meta.get("recipe") or DEFAULT_RECIPE,
        folders=weights_folders(store.dir),
        prefer=prefer,
        precision=precision or explicit_precision() or meta.get("precision"),
    )
    # JPEG draft scale: what the index was made with (an index older than the key: 512 px).
    side = meta.get("draft_side") or (str(LEGACY_DRAFT_SIDE) if "signature" in meta else "")
    spec = replace(spec, draft_side=int(side) if side else spec.decode_side)
    check_compatible(store, spec)
    return spec


def resolve_backbone(store: Store, name: str | None, weights: str | None, recipe: str | None = None) -> Backbone:
    """Like resolve_spec, then load the model."""
    return load_model(resolve_spec(store, name, weights, recipe))


def load_model(spec: BackboneSpec) -> Backbone:
    """Import torch and build the model: seconds, so only when something needs embedding."""
    log.debug("loading backbone %s", spec.name)
    from .backbones import build_backbone

    return build_backbone(spec)


@dataclass(frozen=True)
class Job:
    """One file to embed. Plain data, so it can cross to worker threads, processes or Ray actors."""

    info: ImageFileInfo
    sha256: str


@dataclass(frozen=True)
class Embedded:
    """A worker's answer for one file: its images row (``ok`` or ``error``) and, if it decoded, its vector."""

    job: Job
    row: ImageRow
    vector: np.ndarray | None
    evidence: Evidence | None = None


@dataclass(frozen=True)
class DecodedJob:
    """A decode worker's answer: the file's row and the network input, without the full-size picture."""

    job: Job
    row: ImageRow
    prepared: Prepared | None
    evidence: Evidence | None = None


def decode_job(backbone: Backbone, root: str, job: Job) -> DecodedJob:
    """Everything per file except the forward pass: read, hash, decode, measure, preprocess (thread-safe).

    The file is read once and its row is keyed by the hash of those very bytes,
    with the stat taken as they were read: a file replaced since planning is
    stored under its new content (``row.sha256 != job.sha256``), never under the
    planned hash, and one gone since planning is a ``cannot read`` error with
    no hash. Either way the row says nothing about other files planned with it.
    """
    info = job.info
    try:
        data, st = read_file(info.abspath)
    except OSError as exc:
        return DecodedJob(job, _error_row(info, root, "", f"cannot read: {exc.strerror}"), None)
    sha = hashlib.sha256(data).hexdigest()
    if sha != job.sha256:
        log.warning("%s: changed while embedding; stored as its new content", path_token(info.path))
    info = replace(info, size=len(data), mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
    try:
        image = decode(info.abspath, data, backbone.decode_side)
        grey = image.rgb.convert("L")  # shared by the layout part, the evidence and the quality metrics
        prepared = backbone.prepare(image.rgb, grey)
        evidence = compute_evidence(image.rgb, grey)
    except ImageError as exc:
        return DecodedJob(job, _error_row(info, root, sha, str(exc)), None)
    row = ImageRow(
        path=info.path,
        root=root,
        sha256=sha,
        size=info.size,
        mtime_ns=info.mtime_ns,
        status="ok",
        width=image.width,
        height=image.height,
        format=image.format,
        mode=image.mode,
        frames=image.frames,
        modality=image.modality,
        body_part=image.body_part,
        series_key=image.series_key,
        slice_key=image.slice_key,
        ctime_ns=info.ctime_ns,
        **quality_metrics(image.rgb, grey),  # type: ignore[arg-type]
    )
    return DecodedJob(job, row, prepared, evidence)


def embed_decoded(backbone: Backbone, decoded: Sequence[DecodedJob]) -> list[Embedded]:
    """The forward pass for a batch of decoded files; a copy inside the batch shares the first one's vector.

    Copies are found by the hash of the bytes each file was decoded from, not by the planned one."""
    out: list[Embedded] = []
    first: dict[str, int] = {}
    to_embed: list[tuple[int, Prepared]] = []
    for item in decoded:
        job, row = item.job, item.row
        if item.prepared is None:
            out.append(Embedded(job, row, None))
            continue
        if row.sha256 in first:
            twin = out[first[row.sha256]].row
            out.append(Embedded(job, _restat(twin, row), None))
            continue
        first[row.sha256] = len(out)
        out.append(Embedded(job, row, None, item.evidence))
        to_embed.append((len(out) - 1, item.prepared))
    if to_embed:
        for (slot, _), vec in zip(to_embed, backbone.vectors([p for _, p in to_embed]), strict=True):
            out[slot] = replace(out[slot], vector=vec)
    return out


def embed_jobs(
    backbone: Backbone, root: str, jobs: Sequence[Job], pool: ThreadPoolExecutor | None = None
) -> list[Embedded]:
    """Decode, measure and embed a batch of files, touching no store.

    This is the whole per-file computation: the local path runs it in this
    process, a cluster runs it on workers, and the driver alone writes the
    results. Vectors do not depend on how files are batched (see
    ``backbones.MICRO_BATCH``), so any split gives the same bytes.
    """
    if pool is None:
        decoded = [decode_job(backbone, root, j) for j in jobs]
    else:
        decoded = list(pool.map(lambda j: decode_job(backbone, root, j), jobs))
    return embed_decoded(backbone, decoded)


class Executor(Protocol):
    """Somewhere else to run ``embed_jobs`` (a cluster); the caller stays the single writer."""

    def describe(self) -> dict[str, Any]:
        """What to record with the run (engine, versions, worker layout)."""
        ...

    def run(
        self, spec: BackboneSpec, root: str, jobs: Sequence[Job], batch_size: int, seed: int
    ) -> Generator[Sequence[Embedded], None, None]:
        """Results of ``embed_jobs`` over ``jobs``, in batches, as they finish; workers build the model."""
        ...


def _batches(items: Sequence[Job], size: int) -> Iterator[Sequence[Job]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def embed_folder(
    images_dir: str,
    out: str,
    *,
    backbone_name: str | None = None,
    weights: str | None = None,
    recipe: str | None = None,
    batch_size: int = 32,
    seed: int = 0,
    workers: int = 2,
    rehash: bool = False,
    executor: Executor | None = None,
) -> EmbedReport:
    """Embed every image under ``images_dir`` into the index at ``out``.

    ``batch_size`` is capped at MAX_BATCH (the transactions stay bounded).
    ``rehash`` hashes every file even when its size and mtime are unchanged,
    for file systems or tools that rewrite content but keep both. ``executor``
    runs the per-file work elsewhere (``cluster.RayExecutor``); planning and
    every write stay here, as in a local run.
    """
    started = time.perf_counter()
    if batch_size > MAX_BATCH:
        log.warning(
            "--batch-size %d is above %d: embedding and committing %d images at a time, so memory stays bounded",
            batch_size,
            MAX_BATCH,
            MAX_BATCH,
        )
        batch_size = MAX_BATCH
    typed = display_root(images_dir)
    unlisted: list[str] = []
    files = scan_images(images_dir, unlisted)
    if not files:  # refuse before touching the index: an empty mount must not wipe it
        why = f" ({len(unlisted)} folder(s) could not be listed)" if unlisted else ""
        raise ImageError(f"no images found in {typed}{why}")
    real = real_folder(images_dir)
    report = EmbedReport(images=len(files), unlisted_folders=len(unlisted))
    fresh = not Path(out).exists()  # a folder this run creates is removed again if nothing lands in it
    try:
        with Store(out, create=True) as store:
            spec = resolve_spec(store, backbone_name, weights, recipe)  # before the lock: a mismatch writes nothing
            report.backbone, report.recipe, report.dim = spec.name, spec.recipe.name, spec.dim
            with store.writer_lock():
                root = choose_root(store.folders(), typed, real)
                if root != typed:  # the folder is known under another name: its rows keep that one
                    files = [replace(f, path=_reroot(f.path, typed, root)) for f in files]
                    unlisted[:] = [_reroot(u, typed, root) for u in unlisted]
                warn_about_folders(store, root, real)
                with store.transaction():
                    store.set_folder(root, real)
                _run(store, spec, root, files, unlisted, report, batch_size, workers, seed, rehash, executor, started)
    except BaseException:
        if fresh:
            _remove_unused_index(Path(out))
        raise
    return report


def _reroot(path: str, typed: str, root: str) -> str:
    """A scanned display path under ``typed`` rewritten under ``root`` (both display roots)."""
    old = "" if typed == "." else path_text(typed.replace(os.sep, "/") + "/")
    new = "" if root == "." else path_text(root.replace(os.sep, "/") + "/")
    return new + path[len(old) :] if path.startswith(old) else path


def _run(
    store: Store,
    spec: BackboneSpec,
    root: str,
    files: list[ImageFileInfo],
    unlisted: list[str],
    report: EmbedReport,
    batch_size: int,
    workers: int,
    seed: int,
    rehash: bool,
    executor: Executor | None,
    started: float,
) -> None:
    """One recorded embed run of ``root``: its status says how it ended (ok, failed, interrupted)."""
    run_id = store.start_run(
        "embed",
        backbone=spec.signature,
        weights_sha256=spec.weights_sha256,
        dim=spec.dim,
        seed=seed,
        batch_size=batch_size,
        images_dir=root,
        versions=versions() | (executor.describe() if executor else {}),
    )
    report.run_id = run_id
    try:
        _sync(store, spec, root, files, unlisted, report, run_id, batch_size, workers, seed, rehash, executor)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, like a run killed outright
        store.finish_run(run_id, "interrupted", counts=_counts(report))
        raise
    except BaseException:
        store.finish_run(run_id, "failed", counts=_counts(report))
        raise
    report.seconds = report.timings["total"] = time.perf_counter() - started
    store.finish_run(run_id, "ok", counts=_counts(report), timings={k: round(v, 3) for k, v in report.timings.items()})


def _remove_unused_index(folder: Path) -> None:
    """Undo the index folder of a first run that failed before any model was built (bad weights,
    an unknown recipe): nothing was embedded, and an empty index would only mislead the next command."""
    db = folder / DB_NAME
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            signed = bool(conn.execute("SELECT 1 FROM meta WHERE key = 'signature'").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        signed = False  # no meta table: the schema was not even written
    if signed:
        return
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", LOCK_NAME):
        with suppress(FileNotFoundError):
            (folder / name).unlink()
    with suppress(OSError):  # left alone if anything else is in it
        folder.rmdir()


def _counts(report: EmbedReport) -> dict[str, int]:
    keys = ("images", "new", "reused", "unchanged", "removed", "failed", "embedded_vectors", "unlisted_folders")
    return {k: getattr(report, k) for k in keys}


def _sync(
    store: Store,
    spec: BackboneSpec,
    root: str,
    files: list[ImageFileInfo],
    unlisted: list[str],
    report: EmbedReport,
    run_id: int,
    batch_size: int,
    workers: int,
    seed: int,
    rehash: bool,
    executor: Executor | None = None,
) -> None:
    t0 = time.perf_counter()
    known = store.images_under(root)
    reused_rows, jobs = _plan(store, root, files, known, report, rehash)
    report.timings["scan"] = time.perf_counter() - t0

    # The meta is written only by a run that built the model: a weights file
    # that does not load must never become an index's signature.
    if (jobs and executor is None) or "signature" not in store.meta():
        t0 = time.perf_counter()
        backbone = load_model(spec)
        from .backbones import set_determinism

        set_determinism(seed)
        report.timings["load_model"] = time.perf_counter() - t0
        _record_signature(store, spec, backbone.runtime)
        report.runtime = backbone.runtime
    store.ensure_vec_index(spec.dim)

    with store.transaction():
        store.upsert_images(reused_rows, run_id)

    if jobs:
        t0 = time.perf_counter()
        if executor is None:
            _embed_jobs(store, backbone, root, jobs, report, run_id, batch_size, workers)
        else:  # the workers build the model; this process only writes
            _write_all(store, executor.run(spec, root, jobs, batch_size, seed), len(jobs), report, run_id)
        report.timings["embed"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    seen = {f.path for f in files}
    hidden = tuple(folder + "/" for folder in unlisted)  # unknown, not gone: their rows stay
    gone = sorted(p for p in known if p not in seen and not p.startswith(hidden))
    if unlisted:
        kept = sum(p.startswith(hidden) for p in known)
        log.warning(
            "%d folder(s) could not be listed: their %d indexed file(s) are kept, not removed", len(unlisted), kept
        )
    with store.transaction():
        store.delete_images(gone)
        store.delete_orphan_vectors()
    report.removed = len(gone)
    report.timings["cleanup"] = time.perf_counter() - t0


def _plan(
    store: Store,
    root: str,
    files: list[ImageFileInfo],
    known: dict[str, ImageRow],
    report: EmbedReport,
    rehash: bool = False,
) -> tuple[list[ImageRow], list[Job]]:
    """Split the scan into rows that reuse a stored vector and files that need the model.

    A failed file is tried again when its status-change time moves (chmod,
    chown, a rewrite), not only its size or mtime. ``rehash`` hashes every
    file and trusts a stored vector only when it is known to come from bytes
    with that hash (``Store.checked_shas``): others, and every failed file,
    are decoded again.
    """
    # A content counts as embedded when it has its vector, this version's evidence, the pixel
    # statistics and (DICOM) its place in a series; an index written before those existed gets
    # them on the next embed.
    have = store.embedded_shas() & store.shas_with_evidence() & store.shas_with_statistics()
    have_vectors = have - store.shas_without_series()
    trusted = store.checked_shas() & have_vectors if rehash else have_vectors
    reused_rows: list[ImageRow] = []
    jobs: list[Job] = []
    for info in files:
        old = known.get(info.path)
        same = old if old is not None and old.size == info.size and old.mtime_ns == info.mtime_ns else None
        if same is not None and same.status == "error" and same.ctime_ns != info.ctime_ns:
            same = None  # failed before, and its metadata moved since: try again
        if same is not None and same.status == "ok" and same.sha256 not in have_vectors:
            same = None  # no evidence, statistics or series yet (an older index): embed it once more
        if same is not None and not rehash:
            report.unchanged += 1
            report.failed += same.status == "error"
            continue
        if info.error is not None:  # found but unusable: a broken link, a name that is not UTF-8
            log.warning("%s: skipped, %s", path_token(info.path), info.error)
            reused_rows.append(_error_row(info, root, "", info.error))
            report.failed += 1
            continue
        try:
            sha = sha256_file(info.abspath)
        except OSError as exc:
            log.warning("%s: cannot read (%s)", path_token(info.path), exc.strerror)
            reused_rows.append(_error_row(info, root, "", f"cannot read: {exc.strerror}"))
            report.failed += 1
            continue
        if same is not None and same.status == "ok" and same.sha256 == sha and sha in trusted:
            report.unchanged += 1  # --rehash confirmed the content
            continue
        template = store.image_row_for_sha(sha) if sha in trusted else None
        if template is not None:
            reused_rows.append(replace(_restat(template, info), root=root))
            report.reused += 1
        else:
            jobs.append(Job(info, sha))
            report.new += 1
    return reused_rows, jobs


def _embed_jobs(
    store: Store,
    backbone: Backbone,
    root: str,
    jobs: list[Job],
    report: EmbedReport,
    run_id: int,
    batch_size: int,
    workers: int,
) -> None:
    """Decode ahead in worker threads while the model embeds the current batch; commit batch by batch.

    A file whose content another job of this run already carries is neither
    decoded nor embedded: it is written with that job's row, in the same batch.
    """
    done: dict[str, ImageRow] = {}
    copies: dict[str, list[Job]] = {}
    unique: list[Job] = []
    for job in jobs:
        if job.sha256 in copies:
            copies[job.sha256].append(job)
        else:
            copies[job.sha256] = []
            unique.append(job)
    batches = list(_batches(unique, max(1, batch_size)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, progress(len(jobs), "embedding") as bar:
        try:
            _embed_batches(store, backbone, root, batches, copies, pool, bar, done, report, run_id)
        except BaseException:  # stop now: the batches decoded ahead would only be thrown away
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _embed_batches(
    store: Store,
    backbone: Backbone,
    root: str,
    batches: list[Sequence[Job]],
    copies: dict[str, list[Job]],
    pool: ThreadPoolExecutor,
    bar: Progress,
    done: dict[str, ImageRow],
    report: EmbedReport,
    run_id: int,
) -> None:
    """The decode-ahead loop of ``_embed_jobs``: one committed transaction per batch."""
    ahead: deque[list[Future[DecodedJob]]] = deque()
    for index in range(len(batches)):
        while len(ahead) <= PREFETCH_BATCHES and index + len(ahead) < len(batches):
            ahead.append([pool.submit(decode_job, backbone, root, job) for job in batches[index + len(ahead)]])
        results = embed_decoded(backbone, [future.result() for future in ahead.popleft()])
        twins: list[Embedded] = []
        reread: list[Job] = []
        for item in results:
            if item.row.sha256 == item.job.sha256:  # decoded from the planned bytes: true of its copies too
                twins += [_copy_of(item, job) for job in copies[item.job.sha256]]
            else:  # replaced or gone since planning: its copies are read for themselves
                reread += copies[item.job.sha256]
        if reread:
            twins += embed_decoded(backbone, list(pool.map(lambda j: decode_job(backbone, root, j), reread)))
        write_batch(store, results + twins, done, report, run_id)
        bar.update(len(results) + len(twins))


def _copy_of(item: Embedded, job: Job) -> Embedded:
    """Another file with the same bytes: the same row (ok or error) under its own path and stat."""
    info = job.info
    return Embedded(job, _restat(item.row, info), None)


def _restat(row: ImageRow, info: ImageFileInfo | ImageRow) -> ImageRow:
    """``row`` (another file's, same bytes) under the path and stat of ``info``."""
    return replace(row, path=info.path, size=info.size, mtime_ns=info.mtime_ns, ctime_ns=info.ctime_ns)


def _record_signature(store: Store, spec: BackboneSpec, runtime: str) -> None:
    """The index's making; ``runtimes`` lists every engine that has written vectors into it."""
    runtimes = [r for r in store.meta().get("runtimes", "").split(",") if r]
    store.set_meta(
        backbone=spec.name,
        recipe=spec.recipe.name,
        signature=spec.signature,
        weights_sha256=spec.weights_sha256,
        weights_file=spec.weights_path.name,
        dim=str(spec.dim),
        precision=spec.precision,
        draft_side=str(spec.decode_side),
        runtimes=",".join(sorted(set(runtimes) | {runtime})),
    )


def _write_all(
    store: Store, batches: Generator[Sequence[Embedded], None, None], total: int, report: EmbedReport, run_id: int
) -> None:
    """The single writer for results computed elsewhere: one transaction per batch as it arrives."""
    done: dict[str, ImageRow] = {}
    with closing(batches) as stream, progress(total, "embedding") as bar:  # a failed write stops the workers
        for results in stream:
            write_batch(store, results, done, report, run_id)
            bar.update(len(results))


def progress(total: int, desc: str) -> Progress:
    """A bar for a person watching a terminal; occasional plain log lines in logs or pipes."""
    return Progress(total, desc)


def write_batch(
    store: Store, results: Sequence[Embedded], done: dict[str, ImageRow], report: EmbedReport, run_id: int
) -> None:
    """Commit one batch of worker results: vectors and rows in one transaction.

    ``done`` maps every sha256 this run has written to its row, so a copy met in
    a later batch reuses that vector instead of inserting it twice.
    """
    rows: list[ImageRow] = []
    shas: list[str] = []
    vectors: list[np.ndarray] = []
    evidence: list[Evidence] = []
    batch_rows: dict[str, ImageRow] = {}
    for item in results:
        info, row = item.job.info, item.row
        if row.status != "ok":
            log.warning("%s: skipped, %s", path_token(info.path), row.error)
            rows.append(row)
            report.failed += 1
            report.new -= 1
            continue
        # A copy of a file embedded in an earlier batch, or earlier in this one when
        # copies were embedded apart (on two cluster workers) and arrive together.
        earlier = done.get(row.sha256) or batch_rows.get(row.sha256)
        if earlier is not None:
            rows.append(_restat(earlier, row))
            continue
        rows.append(row)
        if item.vector is not None:
            batch_rows[row.sha256] = row
            shas.append(row.sha256)
            vectors.append(item.vector)
            if item.evidence is not None:
                evidence.append(item.evidence)
    if len(evidence) != len(vectors):  # every vector this version writes has its evidence
        raise RuntimeError("a worker returned a vector without its same-picture evidence")
    with store.transaction():
        if vectors:
            store.insert_vectors(shas, np.stack(vectors), run_id)
            store.insert_evidence(shas, evidence)
        store.upsert_images(rows, run_id)
    done.update(batch_rows)
    report.embedded_vectors += len(vectors)


def _error_row(info: ImageFileInfo, root: str, sha: str, error: str) -> ImageRow:
    return ImageRow(
        path=info.path,
        root=root,
        sha256=sha,
        size=info.size,
        mtime_ns=info.mtime_ns,
        status="error",
        error=error,
        ctime_ns=info.ctime_ns,
    )


def embed_paths(backbone: Backbone, paths: Sequence[Path], batch_size: int = 32) -> list[np.ndarray | str]:
    """Embed loose files (queries): a vector per file, or the error that stopped it."""
    out: list[np.ndarray | str] = []
    for start in range(0, len(paths), max(1, batch_size)):
        chunk = paths[start : start + batch_size]
        prepared: list[Prepared] = []
        slots: list[int] = []
        for path in chunk:
            try:
                prepared.append(backbone.prepare(decode(path, draft_side=backbone.decode_side).rgb))
                slots.append(len(out))
                out.append("")
            except ImageError as exc:
                out.append(str(exc))
        if prepared:
            for slot, vec in zip(slots, backbone.vectors(prepared), strict=True):
                out[slot] = vec
    return out


# Counter-clockwise quarter turns of a query, for the copy search (``query_vectors(turned=...)``).
QUARTER_TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def query_vectors(
    store: Store,
    spec: BackboneSpec,
    paths: Sequence[Path],
    batch_size: int = 32,
    evidence: dict[int, Evidence] | None = None,
    turned: dict[int, np.ndarray] | None = None,
) -> tuple[list[np.ndarray | str], Backbone | None]:
    """Vectors for query files: the stored one for content the index already holds, else the model's.

    A stored vector is the one the model would compute for the same bytes
    (vectors are deterministic), so a query batch the index has seen loads no
    model at all; otherwise the model is loaded once for the new files.
    Returns the vectors (or per-file errors) and the model, if one was loaded.
    ``evidence``, when given, is filled with each readable query's same-picture
    evidence (stored, or computed from the pixels decoded for the model).
    ``turned``, when given, is filled with the vectors (3, dim) of each new query
    turned by 90, 180 and 270 degrees: the vectors are not rotation-invariant, so a
    turned copy's source is often not among the nearest of the query as it is.
    """
    out: list[np.ndarray | str] = [""] * len(paths)
    shas: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            shas[i] = sha256_file(path)
        except OSError as exc:
            out[i] = f"cannot read: {exc.strerror}"
    stored = store.vectors_by_sha(sorted(set(shas.values())))
    missing = [i for i, sha in shas.items() if sha not in stored]
    for i, sha in shas.items():
        if sha in stored:
            out[i] = stored[sha]
    if evidence is not None:
        known = store.evidence_for(sorted({sha for sha in shas.values() if sha in stored}))
        evidence.update({i: known[sha] for i, sha in shas.items() if sha in known})
    backbone = None
    for start in range(0, len(missing), max(1, batch_size)):
        images: dict[int, Image.Image] = {}
        for i in missing[start : start + batch_size]:
            try:
                images[i] = decode(paths[i], draft_side=spec.decode_side).rgb
            except ImageError as exc:  # unreadable queries need no model either
                out[i] = str(exc)
        if images:
            backbone = backbone or load_model(spec)
            vectors = backbone.vectors([backbone.prepare(rgb) for rgb in images.values()])
            for i, vec in zip(images, vectors, strict=True):
                out[i] = vec
            if evidence is not None:
                evidence.update({i: compute_evidence(rgb, features=QUERY_FEATURES) for i, rgb in images.items()})
            if turned is not None:
                quarter = [rgb.transpose(move) for rgb in images.values() for move in QUARTER_TURNS]
                rows = backbone.vectors([backbone.prepare(rgb) for rgb in quarter])
                moves = len(QUARTER_TURNS)
                turned.update({i: rows[n * moves : (n + 1) * moves] for n, i in enumerate(images)})
    return out, backbone
