"""Materialise small labeled image-retrieval sets for benchmarking embedlab.

Each set is a folder whose subfolders are classes, so it can be indexed like any user
folder and scored by class agreement of neighbours. Sources are Debian packages fetched
with ``apt-get download`` (a registry this project can reach), unpacked with ``dpkg-deb``
into the cache and parsed with numpy only; nothing is loaded from the network at run time
beyond that. Selection uses a fixed seed and PNGs carry no timestamps, so two builds write
identical bytes.

Sets:

* ``fashion``: a balanced subset of the Fashion-MNIST test split (``dataset-fashion-mnist``,
  MIT/Expat), 28x28 grayscale, ``<cache>/fashion/<class>/<test index:04d>.png``.
* ``medical``: 2-D slices of 3-D brain volumes shipped with MRIcron (``mricron-data``):
  T1 MRI intensity volumes and atlas label maps, each cut in three planes. Classes are
  ``<modality>_<plane>``; files are ``<volume>_<plane>_<slice:03d>.png`` so a scorer can
  drop neighbours from the same volume within a few slices (see :func:`same_volume_near`),
  and ``manifest.json`` lists class, volume, plane, slice index and source of each file.

Run ``python bench/datasets.py --which all`` (``--cache`` defaults to ``bench/.cache``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"

FASHION_PACKAGE = "dataset-fashion-mnist"
MEDICAL_PACKAGE = "mricron-data"

# Label order of the Fashion-MNIST idx files; names made filesystem-safe.
FASHION_CLASSES = (
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
)

PLANES = ("axial", "coronal", "sagittal")
MEDICAL_SIZE = 256  # slices are padded to a square and resized so every image has one shape
SLICE_NAME = re.compile(r"^(?P<volume>.+)_(?P<plane>axial|coronal|sagittal)_(?P<slice>\d{3,})$")


@dataclass(frozen=True)
class VolumeSpec:
    """One NIfTI file of ``mricron-data`` and how it is labeled.

    ``volume`` is the id written into file names. It names the subject/atlas rather than
    the file so that near-identical variants could never pass as different volumes.
    """

    volume: str
    filename: str
    modality: str  # "mri" (intensities, windowed) or "labelmap" (integer labels)
    brain_mask: str | None = None  # same-grid brain-only file; slices are picked where the brain is


# Intensity volumes: Colin27 (human, 1 mm, with skull) and INIA19 (rhesus macaque, 0.5 mm,
# brain only). ch2bet/ch2better are the same Colin27 brain, so they are left out: their
# slices would be near-duplicates of ch2 under another volume id and inflate scores
# (ch2bet, on ch2's grid, only serves as the brain mask that picks which slices to keep).
# Label maps: one file per distinct atlas (the 2 mm JHU white-matter map duplicates the 1 mm
# one and both are mostly empty, so neither is used).
MEDICAL_VOLUMES = (
    VolumeSpec("colin27", "ch2.nii.gz", "mri", brain_mask="ch2bet.nii.gz"),
    VolumeSpec("inia19", "inia19-t1-brain.nii.gz", "mri"),
    VolumeSpec("aal", "aal.nii.gz", "labelmap"),
    VolumeSpec("aicha", "AICHAmc.nii.gz", "labelmap"),
    VolumeSpec("brodmann", "brodmann.nii.gz", "labelmap"),
    VolumeSpec("harvardoxford", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz", "labelmap"),
    VolumeSpec("jhu189", "jhu189.nii.gz", "labelmap"),
    VolumeSpec("natbrainlab", "natbrainlab.nii.gz", "labelmap"),
    VolumeSpec("inia19atlas", "inia19-NeuroMaps.nii.gz", "labelmap"),
)
MEDICAL_PER_CLASS = 64  # target images per class, split evenly over that modality's volumes

# NIfTI-1 datatype codes -> numpy kinds (byte order added at read time).
NIFTI_DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4"}


# --------------------------------------------------------------------------- packages


def fetch_deb(package: str, cache: Path) -> Path:
    """Download and unpack a Debian package into ``<cache>/debs/<package>``; reuse it if present.

    ``apt-get download`` needs no root and no install, and only reaches Debian's archive.
    """
    root = cache / "debs" / package
    if (root / ".complete").exists():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for old in debs.glob(f"{package}_*.deb"):
        old.unlink()
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise RuntimeError(f"apt-get and dpkg-deb are needed to fetch {package}")
    result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True, check=False)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        raise RuntimeError(f"apt-get download {package} failed (try 'apt-get update' first):\n{result.stderr.strip()}")
    if root.exists():
        shutil.rmtree(root)
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
    (root / ".complete").write_text(found[-1].name + "\n")
    return root


def _find_one(root: Path, name: str) -> Path:
    """Locate a file by name anywhere inside an unpacked package (paths differ by release)."""
    hits = sorted(root.rglob(name))
    if not hits:
        raise FileNotFoundError(f"{name} not found under {root}")
    return hits[0]


def _fresh_dir(path: Path) -> Path:
    """Empty ``path`` so a rebuild never leaves files from an earlier, different build."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _save_png(array: np.ndarray, path: Path) -> None:
    """Write an 8-bit grayscale PNG; PIL adds no timestamp, so bytes depend only on pixels."""
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, format="PNG", optimize=False)


# --------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: Path) -> np.ndarray:
    """Parse a (optionally gzip'd) idx file: 2 zero bytes, type code, ndim, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if data[:2] != b"\x00\x00":
        raise ValueError(f"{path} is not an idx file")
    kinds = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    kind, ndim = data[2], data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    return np.frombuffer(data, kinds[kind], count=int(np.prod(dims)), offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(cache: Path = DEFAULT_CACHE, per_class: int = 30, seed: int = 0) -> Path:
    """Write ``per_class`` random test images of each of the 10 classes; return the set's folder.

    The test split is used so that a model trained on the train split would not have seen them.
    """
    cache = Path(cache)
    root = fetch_deb(FASHION_PACKAGE, cache)
    images = read_idx(_find_one(root, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx(_find_one(root, "t10k-labels-idx1-ubyte.gz"))
    rng = np.random.default_rng(seed)
    out = _fresh_dir(cache / "fashion")
    for label, name in enumerate(FASHION_CLASSES):
        pool = np.flatnonzero(labels == label)
        if per_class > pool.size:
            raise ValueError(f"only {pool.size} test images of class {name}")
        chosen = np.sort(rng.choice(pool, size=per_class, replace=False))
        folder = out / name
        folder.mkdir()
        for index in chosen:
            _save_png(images[index], folder / f"{int(index):04d}.png")
    return out


# --------------------------------------------------------------------------- NIfTI volumes


def read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a single-file NIfTI-1 (.nii/.nii.gz) volume; return (data[x, y, z], 3x3 voxel->world).

    Only what slicing needs: 3-D data, scl_slope/inter, and the sform (qform or pixdim as
    fallbacks) to learn axis order and flips.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    endian = "<" if int(np.frombuffer(data, "<i4", count=1)[0]) == 348 else ">"
    if int(np.frombuffer(data, endian + "i4", count=1)[0]) != 348 or data[344:347] not in (b"n+1", b"ni1"):
        raise ValueError(f"{path} is not a NIfTI-1 file")

    def field(kind: str, offset: int, count: int = 1) -> np.ndarray:
        return np.frombuffer(data, endian + kind, count=count, offset=offset)

    dim = field("i2", 40, 8)
    if dim[0] < 3 or any(int(d) > 1 for d in dim[4 : int(dim[0]) + 1]):
        raise ValueError(f"{path}: expected a 3-D volume, got dim={dim.tolist()}")
    nx, ny, nz = (int(d) for d in dim[1:4])
    datatype = int(field("i2", 70)[0])
    if datatype not in NIFTI_DTYPES:
        raise ValueError(f"{path}: unsupported NIfTI datatype {datatype}")
    dtype = np.dtype(endian + NIFTI_DTYPES[datatype])
    vox_offset = int(field("f4", 108)[0])
    volume = np.frombuffer(data, dtype, count=nx * ny * nz, offset=vox_offset)
    volume = volume.reshape((nz, ny, nx)).transpose(2, 1, 0)  # file order is x fastest
    slope, inter = (float(v) for v in field("f4", 112, 2))
    if slope not in (0.0, 1.0) or inter != 0.0:
        volume = volume.astype(np.float64) * (slope or 1.0) + inter

    qform_code, sform_code = (int(v) for v in field("i2", 252, 2))
    pixdim = field("f4", 76, 8).astype(np.float64)
    if sform_code > 0:
        matrix = field("f4", 280, 12).astype(np.float64).reshape(3, 4)[:, :3]
    elif qform_code > 0:
        b, c, d = field("f4", 256, 3).astype(np.float64)
        a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
        rotation = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - b * b - c * c],
            ]
        )
        qfac = -1.0 if pixdim[0] < 0 else 1.0
        matrix = rotation * np.array([pixdim[1], pixdim[2], pixdim[3] * qfac])
    else:
        matrix = np.diag(pixdim[1:4])
    return np.asarray(volume), matrix


def to_ras(volume: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Permute and flip voxel axes so that axes 0, 1, 2 run toward Right, Anterior, Superior.

    Then every plane can be cut the same way whatever order the file stored its voxels in.
    """
    world_axis = [int(np.argmax(np.abs(matrix[:, j]))) for j in range(3)]
    if sorted(world_axis) != [0, 1, 2]:
        raise ValueError("oblique volume: voxel axes do not map one-to-one onto world axes")
    order = [world_axis.index(w) for w in range(3)]
    volume = volume.transpose(order)
    for w, j in enumerate(order):
        if matrix[w, j] < 0:
            volume = np.flip(volume, axis=w)
    return volume


def cut(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Return one slice of a RAS volume, oriented as viewers show it (superior/anterior up)."""
    if plane == "axial":  # rows: anterior -> posterior, cols: left -> right
        return volume[:, :, index].T[::-1]
    if plane == "coronal":  # rows: superior -> inferior, cols: left -> right
        return volume[:, index, :].T[::-1]
    if plane == "sagittal":  # rows: superior -> inferior, cols: posterior -> anterior
        return volume[index, :, :].T[::-1]
    raise ValueError(plane)


def _plane_axis(plane: str) -> int:
    return {"sagittal": 0, "coronal": 1, "axial": 2}[plane]


def pick_slices(foreground: np.ndarray, plane: str, count: int, rng: np.random.Generator) -> list[int]:
    """Choose ``count`` evenly spaced slices among those with a real cross-section.

    A slice counts when its foreground area is at least 35% of the largest one in
    that plane; this skips the near-empty caps at the ends of each axis. Even spacing
    (offset by the seed) covers the whole anatomy instead of clustering.
    """
    axis = _plane_axis(plane)
    other = tuple(a for a in range(3) if a != axis)
    area = foreground.sum(axis=other)
    valid = np.flatnonzero(area >= 0.35 * area.max())
    if valid.size <= count:
        return [int(v) for v in valid]
    step = valid.size / count
    offset = float(rng.uniform(0.0, step))
    positions = np.minimum((offset + step * np.arange(count)).astype(int), valid.size - 1)
    return [int(valid[p]) for p in positions]


def _window(volume: np.ndarray, foreground: np.ndarray) -> tuple[float, float]:
    """Intensity window from the 0.5th-99.5th percentile of brain/head voxels, robust to outliers."""
    low, high = np.percentile(volume[foreground], [0.5, 99.5])
    return float(low), float(high)


def _label_gray(labels: np.ndarray) -> np.ndarray:
    """Map integer labels to distinct mid-to-bright grays (background stays black).

    A fixed multiplicative hash spreads neighbouring ids apart so regions stay visible.
    """
    ids = np.rint(labels).astype(np.int64)
    gray = 48 + (ids * 97) % 208
    return np.where(ids > 0, gray, 0).astype(np.uint8)


def _square(image: np.ndarray, size: int, resample: Image.Resampling) -> np.ndarray:
    """Pad to a centred square (black), then resize, so any resize/crop keeps the anatomy whole."""
    h, w = image.shape
    side = max(h, w)
    canvas = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = image
    return np.asarray(Image.fromarray(canvas).resize((size, size), resample))


def medical_planes(cache: Path = DEFAULT_CACHE, seed: int = 0) -> Path:
    """Write brain slices classed by modality and plane plus ``manifest.json``; return the folder.

    Plane and modality are what a retrieval model should pick up; the volume id in each file
    name lets a scorer ignore near neighbours that are simply adjacent slices of the query.
    """
    cache = Path(cache)
    root = fetch_deb(MEDICAL_PACKAGE, cache)
    rng = np.random.default_rng(seed)
    out = _fresh_dir(cache / "medical")
    per_modality: dict[str, int] = {}
    for spec in MEDICAL_VOLUMES:
        per_modality[spec.modality] = per_modality.get(spec.modality, 0) + 1
    manifest: list[dict[str, str | int]] = []
    for spec in MEDICAL_VOLUMES:
        path = _find_one(root, spec.filename)
        raw, matrix = read_nifti(path)
        volume = to_ras(raw, matrix)
        count = -(-MEDICAL_PER_CLASS // per_modality[spec.modality])  # ceil division
        if spec.modality == "labelmap":
            foreground = volume > 0
            gray = _label_gray(volume)
            resample = Image.Resampling.NEAREST
        else:
            head = volume > 0.15 * np.percentile(volume[volume > 0], 99.0)
            low, high = _window(volume, head)
            foreground = head
            if spec.brain_mask is not None:
                mask, mask_matrix = read_nifti(_find_one(root, spec.brain_mask))
                foreground = to_ras(mask, mask_matrix) > 0
                if foreground.shape != volume.shape:
                    raise ValueError(f"{spec.brain_mask} is not on the grid of {spec.filename}")
            gray = np.clip((volume - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)
            resample = Image.Resampling.BILINEAR
        for plane in PLANES:
            klass = f"{spec.modality}_{plane}"
            folder = out / klass
            folder.mkdir(exist_ok=True)
            for index in pick_slices(foreground, plane, count, rng):
                name = f"{spec.volume}_{plane}_{index:03d}.png"
                _save_png(_square(cut(gray, plane, index), MEDICAL_SIZE, resample), folder / name)
                manifest.append(
                    {
                        "file": f"{klass}/{name}",
                        "class": klass,
                        "volume": spec.volume,
                        "plane": plane,
                        "slice": index,
                        "source": f"{MEDICAL_PACKAGE}:{spec.filename}",
                    }
                )
    manifest.sort(key=lambda row: str(row["file"]))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out


def parse_slice_name(name: str) -> tuple[str, str, int] | None:
    """Split ``<volume>_<plane>_<slice>.png`` (any folder, any extension) into its parts."""
    match = SLICE_NAME.match(Path(name).stem)
    if match is None:
        return None
    return match["volume"], match["plane"], int(match["slice"])


def same_volume_near(a: str, b: str, window: int = 12) -> bool:
    """True when two medical file names are slices of one volume, same plane, within ``window``.

    Such pairs are near-copies of each other, so a fair scorer skips them as neighbours.
    Names that do not follow the medical naming never match.
    """
    pa, pb = parse_slice_name(a), parse_slice_name(b)
    if pa is None or pb is None:
        return False
    return pa[0] == pb[0] and pa[1] == pb[1] and abs(pa[2] - pb[2]) <= window


# --------------------------------------------------------------------------- CLI


def _describe(folder: Path) -> str:
    counts = {d.name: sum(1 for _ in d.glob("*.png")) for d in sorted(folder.iterdir()) if d.is_dir()}
    detail = ", ".join(f"{k}={v}" for k, v in counts.items())
    return f"{folder}: {sum(counts.values())} images in {len(counts)} classes ({detail})"


def main(argv: list[str] | None = None) -> int:
    """Build the requested sets and report folders and per-class counts on stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder (default: bench/.cache)")
    parser.add_argument("--which", choices=("fashion", "medical", "all"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=30, help="Fashion-MNIST images per class")
    args = parser.parse_args(argv)
    builders: list[tuple[str, Callable[[], Path]]] = []
    if args.which in ("fashion", "all"):
        builders.append(("fashion", lambda: fashion_mnist(args.cache, per_class=args.per_class, seed=args.seed)))
    if args.which in ("medical", "all"):
        builders.append(("medical", lambda: medical_planes(args.cache, seed=args.seed)))
    for name, build in builders:
        start = time.perf_counter()
        folder = build()
        print(f"{name}: {_describe(folder)} [{time.perf_counter() - start:.1f}s]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
