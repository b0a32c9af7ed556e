"""Peer baselines for the near-duplicate benchmark: what other tools find on one folder.

Every function takes an image folder (searched recursively) and returns a
:class:`PeerResult`: predicted duplicate groups as sorted lists of paths relative to the
folder (groups sorted too, so two runs compare equal), the files that were skipped with
the reason, and the wall time. Per-file errors never stop a run; they are counted.

* :func:`phash_groups`: ``imagehash.phash`` of every image, pairs within ``max_bits``
  Hamming distance, connected components. DICOM files are decoded with pydicom (first
  frame, modality LUT, the file's own VOI window when it has one, else a min-max
  stretch, MONOCHROME1 inverted) to 8 bits; other files with Pillow, converted to RGB
  the way a plain script would (no EXIF rotation; 16-bit greyscale clips at 255).
* :func:`imagededup_groups`: ``imagededup.methods.PHash().find_duplicates`` at its
  default ``max_distance_threshold`` (10 bits), connected components of the result.
  imagededup reads only Pillow formats; DICOM and anything else it cannot read is skipped.
* :func:`fastdup_groups` / :func:`fastdup_outliers`: ``fastdup.create(work_dir,
  folder).run()`` at fastdup's defaults (similarity graph at 0.9, connected components at
  0.96, outliers at the 5th percentile); fastdup reads its own list of extensions and
  rejects images under 10x10 pixels; its DICOM reader failed on every pydicom test file
  tried (ERROR_CORRUPT_IMAGE), so count on no DICOM. All of these are reported as skipped. Both functions
  share one run per (folder, work_dir) within a process unless ``reuse=False``.
* :func:`cosine_groups`: union-find over pairs with cosine >= threshold of a given
  unit-vector matrix (the plain backbone-cosine baseline), blocked so that 20k x 1280
  fits in a few hundred MB.

Also :func:`phash_search`, the pHash nearest neighbours of query images (for copy queries).

Import from another bench script with ``sys.path.insert(0, <bench dir>)`` and
``from peers import phash_groups, ...``. fastdup's telemetry is switched off
(``SENTRY_OPT_OUT``, ``run_sentry=False``) before it is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

os.environ.setdefault("SENTRY_OPT_OUT", "1")  # fastdup reads it at import time

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})


@dataclass
class PeerResult:
    """What one peer found on one folder.

    ``groups``: duplicate groups (sorted relpaths, at least two each, groups sorted);
    ``skipped``: ``(relpath, reason)`` for each file the peer did not use;
    ``seconds``: wall time of the peer itself (decode + hash/embed + grouping);
    ``ranked`` / ``scores``: outlier peers only, most anomalous first and relpath ->
    anomaly score (higher is more anomalous); ``notes``: anything a reader should know.
    """

    groups: list[list[str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    ranked: list[str] | None = None
    scores: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


# ---------------------------------------------------------------- shared helpers


def list_files(folder: str | os.PathLike[str]) -> list[str]:
    """Every regular, non-hidden file under ``folder``, as sorted relative POSIX paths."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if full.is_file():
                out.append(full.relative_to(root).as_posix())
    return sorted(out)


def components(n: int, pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components (size >= 2) of ``n`` nodes joined by ``pairs``, by union-find."""
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(find(i), []).append(i)
    return [m for m in members.values() if len(m) > 1]


def groups_from_pairs(names: Sequence[str], pairs: Iterable[tuple[int, int]]) -> list[list[str]]:
    """Sorted groups of names from index pairs (connected components)."""
    return canonical_groups([names[i] for i in comp] for comp in components(len(names), pairs))


def canonical_groups(groups: Iterable[Iterable[str]]) -> list[list[str]]:
    """Each group sorted and de-duplicated, singletons dropped, groups sorted."""
    out = [sorted(set(g)) for g in groups]
    return sorted(g for g in out if len(g) > 1)


def groups_from_mapping(mapping: dict[str, Iterable[str]]) -> list[list[str]]:
    """Connected components of a ``{name: [duplicate names]}`` mapping (imagededup's output)."""
    names = sorted(set(mapping) | {d for dups in mapping.values() for d in dups})
    index = {n: i for i, n in enumerate(names)}
    pairs = [(index[a], index[b]) for a, dups in mapping.items() for b in dups]
    return groups_from_pairs(names, pairs)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 (Python and native code) to stderr for the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


# ---------------------------------------------------------------- decoding


def dicom_to_pil(path: str | os.PathLike[str]) -> Image.Image:
    """First frame of a DICOM file as an 8-bit Pillow image (RGB stays RGB)."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path, force=True)  # also files without the 128-byte preamble
    arr = ds.pixel_array  # pydicom 3 converts YBR colour to RGB
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        arr = arr[0]
    if samples == 3:
        if arr.dtype != np.uint8:
            arr = _stretch(arr.astype(np.float64))
        return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), "RGB")
    values = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_voi_lut(values, ds)
    grey = _stretch(np.asarray(values, dtype=np.float64))
    if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, "L")


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.round((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Pillow decode converted to RGB, or the DICOM reader for .dcm/.dicom files."""
    if Path(path).suffix.lower() in DICOM_EXTENSIONS:
        return dicom_to_pil(path).convert("RGB")
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


# ---------------------------------------------------------------- pHash (imagehash)


def _phash_all(folder: str | os.PathLike[str]) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    import imagehash

    names: list[str] = []
    hashes: list[int] = []
    skipped: list[tuple[str, str]] = []
    root = Path(folder)
    for rel in list_files(folder):
        try:
            value = int(str(imagehash.phash(load_rgb(root / rel))), 16)
        except Exception as exc:  # any decode error of one file
            skipped.append((rel, _one_line(exc)))
            continue
        names.append(rel)
        hashes.append(value)
    return names, np.array(hashes, dtype=np.uint64), skipped


def _hamming_pairs(hashes: np.ndarray, max_bits: int, block: int = 2048) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    n = len(hashes)
    for start in range(0, n, block):
        rows = hashes[start : start + block]
        dist = np.bitwise_count(rows[:, None] ^ hashes[None, start:])
        i, j = np.nonzero(dist <= max_bits)
        keep = j > i  # j is offset by start, the upper triangle of this block
        pairs.extend(zip((i[keep] + start).tolist(), (j[keep] + start).tolist(), strict=True))
    return pairs


def phash_groups(folder: str | os.PathLike[str], max_bits: int = 2) -> PeerResult:
    """Groups of images whose 64-bit pHash differ in at most ``max_bits`` bits."""
    t0 = time.perf_counter()
    names, hashes, skipped = _phash_all(folder)
    groups = groups_from_pairs(names, _hamming_pairs(hashes, max_bits))
    return PeerResult(
        groups=groups,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
        notes=[f"imagehash.phash, Hamming <= {max_bits}; DICOM decoded with pydicom (first frame, 8-bit window)"],
    )


def phash_search(
    folder: str | os.PathLike[str], query_folder: str | os.PathLike[str], k: int = 10
) -> tuple[dict[str, list[str]], PeerResult]:
    """Top-``k`` indexed images per query by pHash Hamming distance (ties by path).

    Returns ``{query relpath: [result relpaths]}`` and a :class:`PeerResult` with the
    skipped files (indexed and query) and the time.
    """
    t0 = time.perf_counter()
    names, hashes, skipped = _phash_all(folder)
    qnames, qhashes, qskipped = _phash_all(query_folder)
    results: dict[str, list[str]] = {}
    for q, h in zip(qnames, qhashes, strict=True):  # names are sorted, so a stable sort breaks ties by path
        best = np.argsort(np.bitwise_count(hashes ^ h), kind="stable")[:k]
        results[q] = [names[i] for i in best]
    res = PeerResult(
        skipped=skipped + [(f"<query>/{q}", r) for q, r in qskipped],
        seconds=time.perf_counter() - t0,
        notes=["imagehash.phash nearest neighbours by Hamming distance"],
    )
    return results, res


# ---------------------------------------------------------------- imagededup


def imagededup_groups(folder: str | os.PathLike[str]) -> PeerResult:
    """imagededup's PHash at its default threshold, single process (deterministic)."""
    from imagededup.methods import PHash

    t0 = time.perf_counter()
    for name, logger in logging.Logger.manager.loggerDict.items():  # its INFO lines, not its warnings
        if name.startswith("imagededup") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.WARNING)
    hasher = PHash(verbose=False)
    with stdout_to_stderr(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Parameter num_enc_workers has no effect")
        encodings = hasher.encode_images(image_dir=str(folder), recursive=True, num_enc_workers=0)
        # find_duplicates(image_dir=...) encodes exactly like this; passing the map lets
        # us report which files it could not read.
        mapping = hasher.find_duplicates(encoding_map=encodings, num_dist_workers=0)
    names = {Path(k).as_posix() for k in encodings}
    skipped = [(rel, "not read by imagededup") for rel in list_files(folder) if rel not in names]
    groups = groups_from_mapping({Path(k).as_posix(): [Path(v).as_posix() for v in vs] for k, vs in mapping.items()})
    return PeerResult(
        groups=groups,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
        notes=["imagededup PHash, default max_distance_threshold (10 bits); Pillow formats only (no DICOM)"],
    )


# ---------------------------------------------------------------- fastdup


@dataclass
class _FastdupRun:
    groups: PeerResult
    outliers: PeerResult


_FASTDUP_RUNS: dict[tuple[str, str], _FastdupRun] = {}


def fastdup_run(folder: str | os.PathLike[str], work_dir: str | os.PathLike[str], reuse: bool = True) -> _FastdupRun:
    """One fastdup run at its defaults; both its groups and its outliers."""
    key = (os.path.realpath(folder), os.path.realpath(work_dir))
    if reuse and key in _FASTDUP_RUNS:
        return _FASTDUP_RUNS[key]
    root = key[0]
    note = "fastdup defaults: threshold 0.9, cc_threshold 0.96, outlier_percentile 0.05, k=2"
    t0 = time.perf_counter()
    try:
        with stdout_to_stderr():
            import fastdup

            fd = fastdup.create(work_dir=str(work_dir), input_dir=root)
            fd.run(overwrite=True, run_sentry=False)
            cc, _info = fd.connected_components()
            outliers = fd.outliers()
            invalid = fd.invalid_instances()
            valid = fd.annotations(valid_only=True)
    except Exception as exc:  # fastdup raises on e.g. fewer than two readable images
        seconds = time.perf_counter() - t0
        why = f"fastdup run failed: {_one_line(exc)}"
        failed = [(r, why) for r in list_files(root)]
        return _FastdupRun(
            groups=PeerResult(skipped=failed, seconds=seconds, notes=[note, why]),
            outliers=PeerResult(skipped=failed, seconds=seconds, ranked=[], scores={}, notes=[note, why]),
        )
    seconds = time.perf_counter() - t0

    def rel(p: Any) -> str:
        return Path(os.path.relpath(str(p), root)).as_posix()

    skipped: list[tuple[str, str]] = []
    seen = set()
    if invalid is not None and len(invalid):
        for name, code in zip(invalid["filename"], invalid["error_code"], strict=True):
            skipped.append((rel(name), f"fastdup: {code}"))
            seen.add(rel(name))
    used = {rel(n) for n in valid["filename"]} if valid is not None and len(valid) else set()
    for r in list_files(root):
        if r not in used and r not in seen:
            skipped.append((r, "not read by fastdup (extension)"))
    skipped.sort()

    groups: list[list[str]] = []
    if cc is not None and len(cc):
        by_comp: dict[Any, list[str]] = {}
        for comp, name in zip(cc["component_id"], cc["filename"], strict=True):
            by_comp.setdefault(comp, []).append(rel(name))
        groups = canonical_groups(by_comp.values())

    ranked: list[str] = []
    scores: dict[str, float] = {}
    if outliers is not None and len(outliers):
        rows = sorted(
            zip(outliers["distance"].astype(float), map(rel, outliers["filename_outlier"]), strict=True),
        )
        for sim, name in rows:  # lowest similarity to the nearest image first
            if name not in scores:
                scores[name] = round(1.0 - sim, 6)
                ranked.append(name)
    run = _FastdupRun(
        groups=PeerResult(groups=groups, skipped=skipped, seconds=seconds, notes=[note]),
        outliers=PeerResult(
            skipped=skipped,
            seconds=seconds,
            ranked=ranked,
            scores=scores,
            notes=[note, "outliers: only the images fastdup lists (5th percentile), scored 1 - nearest similarity"],
        ),
    )
    _FASTDUP_RUNS[key] = run
    return run


def fastdup_groups(folder: str | os.PathLike[str], work_dir: str | os.PathLike[str], reuse: bool = True) -> PeerResult:
    """fastdup's connected components at its default thresholds."""
    return fastdup_run(folder, work_dir, reuse=reuse).groups


def fastdup_outliers(
    folder: str | os.PathLike[str], work_dir: str | os.PathLike[str], reuse: bool = True
) -> PeerResult:
    """fastdup's outliers, most anomalous (least similar to its nearest image) first, in ``ranked``."""
    return fastdup_run(folder, work_dir, reuse=reuse).outliers


# ---------------------------------------------------------------- plain cosine


def cosine_pairs(matrix: np.ndarray, threshold: float, block: int = 1024) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` with ``matrix[i] @ matrix[j] >= threshold``, computed in row blocks."""
    m = np.ascontiguousarray(matrix, dtype=np.float32)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(m), block):
        sims = m[start : start + block] @ m[start:].T
        i, j = np.nonzero(sims >= threshold)
        keep = j > i
        pairs.extend(zip((i[keep] + start).tolist(), (j[keep] + start).tolist(), strict=True))
    return pairs


def cosine_groups(paths: Sequence[str], matrix: np.ndarray, threshold: float, block: int = 1024) -> PeerResult:
    """Connected components of cosine >= ``threshold`` over unit vectors (one row per path).

    Rows that are not finite or have zero norm are skipped (and reported).
    """
    if len(paths) != len(matrix):
        raise ValueError(f"{len(paths)} paths but {len(matrix)} rows")
    t0 = time.perf_counter()
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1) if len(m) else np.zeros(0)
    ok = np.isfinite(norms) & (norms > 0)
    skipped = [(str(paths[i]), "zero or non-finite vector") for i in np.nonzero(~ok)[0]]
    kept = [str(p) for p, good in zip(paths, ok, strict=True) if good]
    groups = groups_from_pairs(kept, cosine_pairs(m[ok], threshold, block=block))
    return PeerResult(
        groups=groups,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
        notes=[f"cosine >= {threshold}, connected components"],
    )
