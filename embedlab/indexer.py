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

__all__ = ["EmbedReport", "IndexMismatch", "embed_folder", "embed_paths", "resolve_backbone"]

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
class _Job:
    info: ImageFileInfo
    sha256: str


def _decode_job(job: _Job, backbone: Backbone) -> tuple[_Job, Decoded | None, Prepared | None, str | None]:
    try:
        decoded = decode(job.info.abspath)
        return job, decoded, backbone.prepare(decoded.rgb), None
    except ImageError as exc:
        return job, None, None, str(exc)


def _batches(items: Sequence[_Job], size: int) -> Iterator[Sequence[_Job]]:
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
) -> tuple[list[ImageRow], list[_Job]]:
    """Split the scan into rows that reuse a stored vector and files that need the model."""
    have_vectors = store.embedded_shas()
    reused_rows: list[ImageRow] = []
    jobs: list[_Job] = []
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
            jobs.append(_Job(info, sha))
            report.new += 1
    return reused_rows, jobs


def _embed_jobs(
    store: Store,
    backbone: Backbone,
    root: str,
    jobs: list[_Job],
    report: EmbedReport,
    run_id: int,
    batch_size: int,
    workers: int,
) -> None:
    """Decode in worker threads, embed and commit batch by batch."""
    done: dict[str, ImageRow] = {}
    # A bar only for a person watching a terminal; never in logs or pipes.
    quiet = not sys.stderr.isatty() or not log.isEnabledFor(logging.INFO)
    with (
        ThreadPoolExecutor(max_workers=max(1, workers)) as pool,
        tqdm(total=len(jobs), unit="img", desc="embedding", file=sys.stderr, disable=quiet) as bar,
    ):
        for batch in _batches(jobs, max(1, batch_size)):
            results = list(pool.map(lambda j: _decode_job(j, backbone), batch))
            _write_batch(store, backbone, root, results, done, report, run_id)
            bar.update(len(batch))


def _write_batch(
    store: Store,
    backbone: Backbone,
    root: str,
    results: list[tuple[_Job, Decoded | None, Prepared | None, str | None]],
    done: dict[str, ImageRow],
    report: EmbedReport,
    run_id: int,
) -> None:
    """Embed one batch and commit its vectors and rows together."""
    rows: list[ImageRow] = []
    to_embed: list[tuple[str, Prepared]] = []
    batch_rows: dict[str, ImageRow] = {}
    for job, decoded, prepared, error in results:
        info = job.info
        if decoded is None or prepared is None:
            log.warning("%s: skipped, %s", path_token(info.path), error)
            rows.append(_error_row(info, root, job.sha256, error or "unreadable"))
            report.failed += 1
            report.new -= 1
            continue
        earlier = done.get(job.sha256) or batch_rows.get(job.sha256)
        if earlier is not None:  # a copy of a file embedded moments ago
            rows.append(replace(earlier, path=info.path, size=info.size, mtime_ns=info.mtime_ns))
            continue
        row = ImageRow(
            path=info.path,
            root=root,
            sha256=job.sha256,
            size=info.size,
            mtime_ns=info.mtime_ns,
            status="ok",
            width=decoded.width,
            height=decoded.height,
            format=decoded.format,
            mode=decoded.mode,
            frames=decoded.frames,
            modality=decoded.modality,
            body_part=decoded.body_part,
            **quality_metrics(decoded.rgb),  # type: ignore[arg-type]
        )
        rows.append(row)
        batch_rows[job.sha256] = row
        to_embed.append((job.sha256, prepared))
    vectors = backbone.vectors([p for _, p in to_embed]) if to_embed else None
    with store.transaction():
        if vectors is not None:
            store.insert_vectors([s for s, _ in to_embed], vectors, run_id)
        store.upsert_images(rows, run_id)
    done.update(batch_rows)
    report.embedded_vectors += len(to_embed)


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
