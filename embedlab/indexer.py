"""`embed`: bring an index level with a folder, embedding only what is new.

Files are matched by path, size and mtime first (no read), then by content
hash: a renamed or copied file reuses its vector, a changed one is embedded
again, a vanished one leaves the index. Each batch commits on its own, so an
interrupted run keeps everything finished before it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .backbones import DEFAULT_BACKBONE, Backbone, Prepared, load_backbone, set_determinism
from .descriptor import DEFAULT_RECIPE
from .images import (
    Decoded,
    ImageError,
    ImageFileInfo,
    decode,
    display_root,
    path_token,
    quality_metrics,
    scan_images,
    sha256_file,
)
from .provenance import versions
from .store import ImageRow, IndexMismatch, Store

__all__ = [
    "EmbedReport",
    "Embedded",
    "IndexMismatch",
    "Job",
    "embed_folder",
    "embed_jobs",
    "embed_paths",
    "resolve_backbone",
    "write_batch",
]

log = logging.getLogger("embedlab")


@dataclass
class EmbedReport:
    images: int = 0
    new: int = 0
    reused: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: int = 0
    embedded_vectors: int = 0
    backbone: str = ""
    recipe: str = ""
    dim: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.embedded_vectors / self.timings["embed"] if self.timings.get("embed") else 0.0


def check_compatible(store: Store, backbone: Backbone) -> None:
    """Refuse to mix vectors of two recipes in one index."""
    meta = store.meta()
    if "signature" not in meta:
        return
    if meta["signature"] != backbone.signature:
        raise IndexMismatch(
            f"index was built with {meta['signature']} but this run uses {backbone.signature}; "
            f"use --backbone {meta.get('backbone', '?')} or a new --out folder"
        )
    if meta["weights_sha256"] != backbone.weights_sha256:
        raise IndexMismatch(
            f"index was built with weights {meta['weights_sha256'][:12]} but {backbone.weights_path.name} "
            f"is {backbone.weights_sha256[:12]}; pass the original --weights or use a new --out folder"
        )


def resolve_backbone(store: Store, name: str | None, weights: str | None, recipe: str | None = None) -> Backbone:
    """The index's own backbone and recipe unless the user names one (which must then match)."""
    meta = store.meta()
    chosen = name or meta.get("backbone") or DEFAULT_BACKBONE
    backbone = load_backbone(chosen, weights, recipe or meta.get("recipe") or DEFAULT_RECIPE)
    check_compatible(store, backbone)
    return backbone


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


def _decode_job(job: Job, backbone: Backbone) -> tuple[Job, Decoded | None, Prepared | None, str | None]:
    try:
        decoded = decode(job.info.abspath)
        return job, decoded, backbone.prepare(decoded.rgb), None
    except ImageError as exc:
        return job, None, None, str(exc)


def embed_jobs(
    backbone: Backbone, root: str, jobs: Sequence[Job], pool: ThreadPoolExecutor | None = None
) -> list[Embedded]:
    """Decode, measure and embed a batch of files, touching no store.

    This is the whole per-file computation: the local path runs it in this
    process, a cluster runs it on workers, and the driver alone writes the
    results. Vectors do not depend on how files are batched (see
    ``backbones.MICRO_BATCH``), so any split gives the same bytes.
    """
    decoded = (
        list(pool.map(lambda j: _decode_job(j, backbone), jobs)) if pool else [_decode_job(j, backbone) for j in jobs]
    )
    out: list[Embedded] = []
    first: dict[str, int] = {}  # a copy inside the batch shares the first one's vector
    to_embed: list[tuple[int, Prepared]] = []
    for job, image, prepared, error in decoded:
        info = job.info
        if image is None or prepared is None:
            out.append(Embedded(job, _error_row(info, root, job.sha256, error or "unreadable"), None))
            continue
        if job.sha256 in first:
            twin = out[first[job.sha256]].row
            out.append(Embedded(job, replace(twin, path=info.path, size=info.size, mtime_ns=info.mtime_ns), None))
            continue
        row = ImageRow(
            path=info.path,
            root=root,
            sha256=job.sha256,
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
            **quality_metrics(image.rgb),  # type: ignore[arg-type]
        )
        first[job.sha256] = len(out)
        out.append(Embedded(job, row, None))
        to_embed.append((len(out) - 1, prepared))
    if to_embed:
        for (slot, _), vec in zip(to_embed, backbone.vectors([p for _, p in to_embed]), strict=True):
            out[slot] = replace(out[slot], vector=vec)
    return out


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
) -> EmbedReport:
    """Embed every image under ``images_dir`` into the index at ``out``."""
    started = time.perf_counter()
    set_determinism(seed)
    root = display_root(images_dir)
    files = scan_images(images_dir)
    if not files:  # refuse before touching the index: an empty mount must not wipe it
        raise ImageError(f"no images found in {root}")
    report = EmbedReport(images=len(files))
    with Store(out, create=True) as store, store.writer_lock():
        t0 = time.perf_counter()
        backbone = resolve_backbone(store, backbone_name, weights, recipe)
        report.backbone, report.recipe, report.dim = backbone.name, backbone.recipe.name, backbone.dim
        report.timings["load_model"] = time.perf_counter() - t0
        store.set_meta(
            backbone=backbone.name,
            recipe=backbone.recipe.name,
            signature=backbone.signature,
            weights_sha256=backbone.weights_sha256,
            weights_file=backbone.weights_path.name,
            dim=str(backbone.dim),
        )
        store.ensure_vec_index(backbone.dim)
        run_id = store.start_run(
            "embed",
            backbone=backbone.signature,
            weights_sha256=backbone.weights_sha256,
            dim=backbone.dim,
            seed=seed,
            batch_size=batch_size,
            images_dir=root,
            versions=versions(),
        )
        try:
            _sync(store, backbone, root, files, report, run_id, batch_size, workers)
        except BaseException:
            store.finish_run(run_id, "failed", counts=_counts(report))
            raise
        report.seconds = time.perf_counter() - started
        report.timings["total"] = report.seconds
        store.finish_run(
            run_id, "ok", counts=_counts(report), timings={k: round(v, 3) for k, v in report.timings.items()}
        )
    return report


def _counts(report: EmbedReport) -> dict[str, int]:
    keys = ("images", "new", "reused", "unchanged", "removed", "failed", "embedded_vectors")
    return {k: getattr(report, k) for k in keys}


def _sync(
    store: Store,
    backbone: Backbone,
    root: str,
    files: list[ImageFileInfo],
    report: EmbedReport,
    run_id: int,
    batch_size: int,
    workers: int,
) -> None:
    t0 = time.perf_counter()
    known = store.images_under(root)
    reused_rows, jobs = _plan(store, root, files, known, report)
    report.timings["scan"] = time.perf_counter() - t0

    with store.transaction():
        store.upsert_images(reused_rows, run_id)

    t0 = time.perf_counter()
    _embed_jobs(store, backbone, root, jobs, report, run_id, batch_size, workers)
    report.timings["embed"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    seen = {f.path for f in files}
    gone = sorted(p for p in known if p not in seen)
    with store.transaction():
        store.delete_images(gone)
        store.delete_orphan_vectors()
    report.removed = len(gone)
    report.timings["cleanup"] = time.perf_counter() - t0


def _plan(
    store: Store, root: str, files: list[ImageFileInfo], known: dict[str, ImageRow], report: EmbedReport
) -> tuple[list[ImageRow], list[Job]]:
    """Split the scan into rows that reuse a stored vector and files that need the model."""
    have_vectors = store.embedded_shas()
    reused_rows: list[ImageRow] = []
    jobs: list[Job] = []
    for info in files:
        old = known.get(info.path)
        if old is not None and old.size == info.size and old.mtime_ns == info.mtime_ns:
            report.unchanged += 1
            report.failed += old.status == "error"
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
        template = store.image_row_for_sha(sha) if sha in have_vectors else None
        if template is not None:
            reused_rows.append(replace(template, path=info.path, root=root, size=info.size, mtime_ns=info.mtime_ns))
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
    """Decode in worker threads, embed and commit batch by batch."""
    done: dict[str, ImageRow] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, progress(len(jobs), "embedding") as bar:
        for batch in _batches(jobs, max(1, batch_size)):
            write_batch(store, embed_jobs(backbone, root, batch, pool), done, report, run_id)
            bar.update(len(batch))


def progress(total: int, desc: str) -> tqdm:
    """A bar only for a person watching a terminal; never in logs or pipes."""
    quiet = not sys.stderr.isatty() or not log.isEnabledFor(logging.INFO)
    return tqdm(total=total, unit="img", desc=desc, file=sys.stderr, disable=quiet)


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
    batch_rows: dict[str, ImageRow] = {}
    for item in results:
        info, row = item.job.info, item.row
        if row.status != "ok":
            log.warning("%s: skipped, %s", path_token(info.path), row.error)
            rows.append(row)
            report.failed += 1
            report.new -= 1
            continue
        earlier = done.get(row.sha256)
        if earlier is not None:  # a copy of a file embedded in an earlier batch
            rows.append(replace(earlier, path=info.path, size=info.size, mtime_ns=info.mtime_ns))
            continue
        rows.append(row)
        if item.vector is not None:
            batch_rows[row.sha256] = row
            shas.append(row.sha256)
            vectors.append(item.vector)
    with store.transaction():
        if vectors:
            store.insert_vectors(shas, np.stack(vectors), run_id)
        store.upsert_images(rows, run_id)
    done.update(batch_rows)
    report.embedded_vectors += len(vectors)


def _error_row(info: ImageFileInfo, root: str, sha: str, error: str) -> ImageRow:
    return ImageRow(
        path=info.path, root=root, sha256=sha, size=info.size, mtime_ns=info.mtime_ns, status="error", error=error
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
                prepared.append(backbone.prepare(decode(path).rgb))
                slots.append(len(out))
                out.append("")
            except ImageError as exc:
                out.append(str(exc))
        if prepared:
            for slot, vec in zip(slots, backbone.vectors(prepared), strict=True):
                out[slot] = vec
    return out
