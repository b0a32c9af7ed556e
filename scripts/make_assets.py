"""Regenerate the deterministic test assets under ``assets/``.

Writes ``images/`` (bases, planted near-duplicates, oddballs, one broken file),
``queries/``, ``ground_truth.json``, ``PROVENANCE.md`` and ``weights/README.md``.
Most source images are read straight from files that scikit-image and pydicom ship.
The MRI slices come from the Debian package ``mricron-data`` (Colin27 T1 template), which
``bench/datasets.py`` fetches once with ``apt-get download`` into a git-ignored cache and
parses with numpy; its functions are reused here. A fixed seed gives the same bytes on every run.

Usage: ``python scripts/make_assets.py [--out assets] [--seed 0] [--cache bench/.cache]``
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from importlib.util import find_spec, module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MAX_SIDE = 320
JPEG_BASE_QUALITY = 90

from embedlab.transforms import VARIANTS, SaveKwargs, apply_variant  # noqa: E402

# --------------------------------------------------------------------------- sources
SKIMAGE_LICENCES = {
    "astronaut.png": "Public domain (NASA photo of Eileen Collins; 'no known copyright restrictions')",
    "camera.png": "CC0 (photographer Lav Varshney)",
    "chelsea.png": "CC0 (photographer Stefan van der Walt)",
    "coffee.png": "CC0 (photographer Rachel Michetti)",
    "coins.png": "No known copyright restrictions (Brooklyn Museum collection)",
    "rocket.jpg": "Public domain (SpaceX photo released into the public domain)",
    "clock_motion.png": "Public domain (released by the photographer, Stefan van der Walt)",
    "hubble_deep_field.jpg": "Public domain (NASA / HubbleSite)",
    "brick.png": "CC0 (CC0Textures 'Bricks25')",
    "grass.png": "CC0 (DeviantArt 'Grass-01' by linolafett, CC0)",
    "gravel.png": "CC0 (CC0Textures 'Gravel04')",
    "ihc.png": "No known copyright restrictions (immunohistochemistry, CMMI)",
    "cell.png": "CC0 (dedicated to the public domain)",
    "retina.jpg": "CC0 1.0 (Wikimedia Commons, Mikael Haggstrom, 'Fundus photograph of normal left eye')",
    "microaneurysms.png": "CC0 (given by owner Andreas Maier; FAU fundus image database)",
    "phantom.png": "BSD-3-Clause (rendering of the mathematical Shepp-Logan phantom shipped by scikit-image)",
    "text.png": "Public domain (Wikipedia 'File:Corner.png')",
}

PYDICOM_ORIGINS = {
    "CT_small.dcm": "CT, downsized from NEMA WG04 'CT1_UNC'",
    "MR_small.dcm": "MR, downsized from NEMA WG04 'MR1_UNC'",
    "examples_overlay.dcm": "MR abdomen, GDCM 'MR-SIEMENS-DICOM-WithOverlays.dcm' (GDCM BSD-3-Clause licence)",
    "examples_rgb_color.dcm": "Ultrasound (colour Doppler), NEMA WG04 'US1_UNCR' cropped",
    "examples_ybr_color.dcm": "Ultrasound cine (echocardiogram), 'color3d_jpeg_baseline.dcm' with fewer frames",
    "693_J2KI.dcm": "Head CT, regression dataset for pydicom issue #693",
    "J2K_pixelrep_mismatch.dcm": "Head CT, regression dataset for pydicom issue #1149",
    "JPEG2000.dcm": "Nuclear-medicine whole-body scan, edited NEMA WG04 'NM1_J2KI'",
}
PYDICOM_LICENCE = (
    "The pydicom test files ship inside the pydicom wheel (pydicom is MIT). Their licence note is "
    "`pydicom/data/test_files/README.txt`: the maintainer writes 'I believe there is no restriction on using any "
    "of these files in this manner', and files taken from GDCM are used under GDCM's BSD-3-Clause licence. "
    "The NEMA WG04 files are NEMA's public DICOM compression test images."
)


def _skimage_dir() -> Path:
    spec = find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-image is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _fit(img: Image.Image, max_side: int = MAX_SIDE) -> Image.Image:
    """Downscale (never upscale) so the long side is at most ``max_side``."""
    scale = max_side / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def load_skimage(name: str, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """Open a file from skimage/data as RGB or L, optionally cropped, fitted to MAX_SIDE."""
    with Image.open(_skimage_dir() / name) as src:
        img = src.convert("L") if src.mode in ("L", "1", "I", "I;16", "LA") else src.convert("RGB")
    return _fit(img.crop(box) if box else img)


def load_dicom(
    name: str, frame: int | None = None, window: tuple[float, float] | None = None, box: tuple[int, ...] | None = None
) -> Image.Image:
    """Decode a pydicom test file to 8-bit (window = (centre, width), else 0.5-99.5 percentile stretch)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_modality_lut

    path = get_testdata_file(name, download=False)
    if path is None:
        raise RuntimeError(f"pydicom test file {name} is not available offline")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array
    if frame is not None:
        arr = arr[frame]
    if arr.ndim == 3:  # colour; pydicom already converted YBR to RGB
        img = Image.fromarray(arr.astype(np.uint8), "RGB")
    else:
        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
        if window:
            lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
        else:
            lo, hi = (float(v) for v in np.percentile(values, (0.5, 99.5)))
        scaled = np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255.0
        img = Image.fromarray(np.round(scaled).astype(np.uint8), "L")
    return _fit(img.crop(box) if box else img)


# Colin27 ("ch2"): T1 MRI, 1 mm, with skull, from mricron-data. Axial slices are indices along
# the inferior->superior axis after reorientation to RAS (MNI z = index - 71 mm). These three are
# 22 slices apart across the ventricles region: midbrain/basal-ganglia level, the lateral
# ventricles (original of a duplicate group), and the white matter just above them.
COLIN27_FILE = "ch2.nii.gz"
COLIN27_SLICES = (64, 86, 108)
MRICRON_ORIGIN = (
    "Colin27 ('ch2') T1 MRI template, 1 mm, with skull: average of 27 scans of one subject "
    "(Holmes et al. 1998, MNI), as shipped with MRIcron"
)
MRICRON_LICENCE = "BSD-3-clause (see note 2)"


def _bench_datasets() -> ModuleType:
    """``bench/datasets.py``, loaded by path (``bench/`` is not a package)."""
    name = "embedlab_bench_datasets"
    if name not in sys.modules:
        spec = spec_from_file_location(name, ROOT / "bench" / "datasets.py")
        if spec is None or spec.loader is None:
            raise RuntimeError("bench/datasets.py not found")
        module = module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up here while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def default_cache() -> Path:
    """The cache ``bench/datasets.py`` uses (``bench/.cache``, git-ignored)."""
    return Path(_bench_datasets().DEFAULT_CACHE)


def _mricron_root(cache_dir: Path) -> Path:
    """Unpacked ``mricron-data`` (downloaded with ``apt-get download`` on first use)."""
    ds = _bench_datasets()
    return Path(ds.fetch_deb(ds.MEDICAL_PACKAGE, cache_dir))


def mricron_version(cache_dir: Path) -> str:
    """Debian version of the unpacked ``mricron-data``, from its changelog's first line."""
    changelog = _bench_datasets()._find_one(_mricron_root(cache_dir), "changelog.Debian.gz")
    with gzip.open(changelog, "rt", encoding="utf-8") as fh:
        first = fh.readline()
    return first.split("(", 1)[1].split(")", 1)[0]


def mricron_path(cache_dir: Path, name: str) -> str:
    """Where ``name`` lies inside the package (relative, e.g. ``usr/share/mricron/templates/ch2.nii.gz``)."""
    root = _mricron_root(cache_dir)
    return _bench_datasets()._find_one(root, name).relative_to(root).as_posix()


@cache
def _colin27_gray(cache_dir: Path) -> np.ndarray:
    """Colin27 as an 8-bit RAS volume, windowed like the ``mri`` volumes of ``bench/datasets.py``."""
    ds = _bench_datasets()
    raw, matrix = ds.read_nifti(ds._find_one(_mricron_root(cache_dir), COLIN27_FILE))
    volume = ds.to_ras(raw, matrix)
    head = volume > 0.15 * np.percentile(volume[volume > 0], 99.0)
    low, high = ds._window(volume, head)
    return np.clip((volume - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)


def load_colin27(index: int, cache_dir: Path) -> Image.Image:
    """One axial slice of Colin27 (anterior up, native 1 mm pixels), fitted to MAX_SIDE."""
    axial = _bench_datasets().cut(_colin27_gray(cache_dir), "axial", index)
    return _fit(Image.fromarray(np.ascontiguousarray(axial, dtype=np.uint8), "L"))


@dataclass
class Base:
    """One distinct base image."""

    id: str
    domain: str
    package: str
    file: str
    load: Callable[[], Image.Image]
    crop: list[int] | None = None
    frame: int | None = None


def _grid(x0s: list[int], y0s: list[int], w: int, h: int) -> list[tuple[int, int, int, int]]:
    return [(x, y, x + w, y + h) for y in y0s for x in x0s]


def _sk(bid: str, domain: str, name: str, box: tuple[int, int, int, int] | None = None) -> Base:
    return Base(bid, domain, "scikit-image", name, lambda: load_skimage(name, box), list(box) if box else None)


def _dcm(
    bid: str,
    domain: str,
    name: str,
    frame: int | None = None,
    window: tuple[float, float] | None = None,
    box: tuple[int, int, int, int] | None = None,
) -> Base:
    return Base(
        bid, domain, "pydicom", name, lambda: load_dicom(name, frame, window, box), list(box) if box else None, frame
    )


def _mri(index: int, cache_dir: Path) -> Base:
    bid = f"colin27_ax{index}"
    return Base(bid, "mri", "mricron-data", COLIN27_FILE, lambda: load_colin27(index, cache_dir))


def base_catalogue(cache_dir: Path) -> list[Base]:
    """All base images; crops from one source never overlap."""
    bases = [
        _sk(name.split(".")[0], "photo", name)
        for name in ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "rocket.jpg")
    ]
    bases.append(_sk("clock", "photo", "clock_motion.png"))
    hubble = _grid([0, 350, 700], [0, 306, 612], 300, 260)
    bases += [_sk(f"hubble_{i}", "astronomy", "hubble_deep_field.jpg", b) for i, b in enumerate(hubble)]
    texture = _grid([0, 176, 352], [0, 176], 160, 160)
    for name in ("brick", "grass", "gravel"):
        bases += [_sk(f"{name}_{i}", "texture", f"{name}.png", b) for i, b in enumerate(texture)]
    ihc = _grid([0, 176, 352], [0, 272], 160, 240)
    bases += [_sk(f"ihc_{i}", "microscopy", "ihc.png", b) for i, b in enumerate(ihc)]
    bases += [
        _sk("cell", "microscopy", "cell.png"),
        _sk("retina", "fundus", "retina.jpg"),
        _sk("microaneurysms", "fundus", "microaneurysms.png"),
        _sk("phantom", "ct", "phantom.png"),
        _dcm("ct_chest", "ct", "CT_small.dcm", window=(40, 400)),
        _dcm("ct_head_a", "ct", "693_J2KI.dcm", window=(200, 1200)),
        _dcm("ct_head_b", "ct", "J2K_pixelrep_mismatch.dcm", window=(40, 120)),
        _dcm("mr_head", "mri", "MR_small.dcm", window=(600, 1600)),
        _dcm("mr_abdomen", "mri", "examples_overlay.dcm", window=(450, 790)),
        _dcm("us_doppler", "ultrasound", "examples_rgb_color.dcm"),
        _dcm("nm_upper", "nuclear", "JPEG2000.dcm", box=(0, 0, 256, 448)),
        _dcm("nm_lower", "nuclear", "JPEG2000.dcm", box=(0, 576, 256, 1024)),
    ]
    bases += [_dcm(f"echo_{f}", "ultrasound", "examples_ybr_color.dcm", frame=f) for f in (0, 20)]
    bases += [_mri(index, cache_dir) for index in COLIN27_SLICES]
    return bases


# base id -> variant specs; "copy" means a byte-identical copy of the original file
DUPLICATE_PLAN: dict[str, list[str]] = {
    "astronaut": ["half", "jpeg35", "cmyk", "exif_rot"],
    "camera": ["png16", "crop6", "blur15", "half_jpeg60"],
    "chelsea": ["gray", "rot4", "palette", "bright12"],
    "coffee": ["half_jpeg60", "bright12", "rgba", "crop6+jpeg35"],
    "coins": ["jpeg35", "png16", "rot4+bright12", "half"],
    "rocket": ["crop6", "exif_rot", "blur15", "cmyk"],
    "hubble_0": ["half", "palette", "jpeg35", "rot4"],
    "brick_0": ["rot4", "jpeg35", "png16", "blur15"],
    "grass_0": ["blur15", "half_jpeg60", "exif_rot", "crop6"],
    "gravel_0": ["crop6", "png16", "rgba"],
    "ihc_0": ["bright12", "cmyk", "gray", "blur15+half"],
    "cell": ["half", "rgba", "rot4", "png16"],
    "retina": ["crop6", "jpeg35", "exif_rot", "palette"],
    "ct_chest": ["png16", "half_jpeg60", "bright12"],
    "ct_head_a": ["rot4", "blur15+half", "palette", "jpeg35"],
    "mr_abdomen": ["bright12", "palette", "jpeg35", "crop6"],
    "us_doppler": ["gray", "half", "crop6+jpeg35", "cmyk"],
    "echo_0": ["jpeg35", "rgba", "rot4+bright12", "half"],
    "phantom": ["rot4", "exif_rot", "blur15", "png16"],
    "nm_upper": ["copy"],
    f"colin27_ax{COLIN27_SLICES[1]}": ["png16", "crop6", "jpeg35"],
}

HARD_NEGATIVES: list[list[str]] = [
    [f"hubble_{i}" for i in range(9)],
    *([f"{t}_{i}" for i in range(6)] for t in ("brick", "grass", "gravel")),
    [f"ihc_{i}" for i in range(6)],
    [f"colin27_ax{index}" for index in COLIN27_SLICES],
    ["nm_upper", "nm_lower"],
    ["ct_head_a", "ct_head_b"],
]


def _crop_resize(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    dx, dy = round(img.width * 0.12), round(img.height * 0.12)
    return img.crop((dx, dy, img.width - dx, img.height - dy)).resize(img.size, Image.Resampling.LANCZOS), {}


def _query_transforms() -> dict[str, Callable[[Image.Image], tuple[Image.Image, SaveKwargs]]]:
    return {
        "crop12_resize": lambda im: (_crop_resize(im)[0], {"format": "PNG"}),
        "jpeg30": lambda im: (im, {"format": "JPEG", "quality": 30}),
        "bright13": lambda im: (ImageEnhance.Brightness(im).enhance(1.3), {"format": "PNG"}),
        "crop12_resize+jpeg50": lambda im: (_crop_resize(im)[0], {"format": "JPEG", "quality": 50}),
        "rot6": lambda im: (im.rotate(6, resample=Image.Resampling.BICUBIC), {"format": "PNG"}),
        "bright08+jpeg60": lambda im: (ImageEnhance.Brightness(im).enhance(0.8), {"format": "JPEG", "quality": 60}),
    }


# query targets are bases outside every duplicate group, one per domain where possible
QUERY_PLAN = [
    ("clock", "crop12_resize"),
    ("hubble_4", "jpeg30"),
    ("grass_4", "bright13"),
    ("ihc_4", "crop12_resize+jpeg50"),
    ("ct_head_b", "rot6"),
    ("echo_20", "bright08+jpeg60"),
]


# --------------------------------------------------------------------------- oddballs
def oddballs(rng: np.random.Generator) -> list[tuple[str, str, Image.Image, SaveKwargs]]:
    """(id, domain, image, save kwargs) for the planted anomalies."""
    png: SaveKwargs = {"format": "PNG"}
    board = (np.indices((256, 256)) // 32).sum(axis=0) % 2 * 255
    strip = np.linspace(0, 255, 600)[None, :, None] * np.array([1.0, 0.5, 0.2])
    return [
        ("blank_white", "synthetic", Image.new("RGB", (256, 256), (255, 255, 255)), png),
        ("blank_black", "synthetic", Image.new("RGB", (256, 256), (0, 0, 0)), {"format": "JPEG", "quality": 90}),
        ("noise", "synthetic", Image.fromarray(rng.integers(0, 256, (192, 192, 3), dtype=np.uint8)), png),
        ("tiny_8x8", "synthetic", Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)), png),
        ("strip_600x12", "synthetic", Image.fromarray(np.repeat(strip, 12, axis=0).astype(np.uint8)), png),
        ("chessboard", "synthetic", Image.fromarray(board.astype(np.uint8), "L"), png),
        ("saturated_magenta", "synthetic", Image.new("RGB", (256, 256), (255, 0, 255)), {"format": "JPEG"}),
        ("text", "document", load_skimage("text.png"), png),
    ]


# --------------------------------------------------------------------------- generation
@dataclass
class Item:
    """One file to be written, plus its ground-truth record."""

    data: bytes
    ext: str
    record: dict[str, Any] = field(default_factory=dict)


def encode(img: Image.Image, kwargs: SaveKwargs) -> tuple[bytes, str]:
    """Encode with Pillow; returns (bytes, extension)."""
    buf = io.BytesIO()
    img.save(buf, **kwargs)
    return buf.getvalue(), "jpg" if kwargs["format"] == "JPEG" else "png"


def decode(data: bytes) -> Image.Image:
    """Decode bytes to an RGB or L image."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("L") if im.mode in ("L", "I;16") else im.convert("RGB")


def _record(src: Base | None, img: Image.Image, kwargs: SaveKwargs, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"size": list(img.size), "mode": img.mode, "format": kwargs["format"], **extra}
    if src is not None:
        rec |= {"base": src.id, "domain": src.domain, "source": f"{src.package}: {src.file}"}
        if src.crop is not None:
            rec["crop"] = src.crop
        if src.frame is not None:
            rec["frame"] = src.frame
    return rec


def _versions(cache_dir: Path) -> dict[str, str]:
    versions = {pkg: metadata.version(pkg) for pkg in ("numpy", "pillow", "scikit-image", "pydicom")}
    return versions | {"mricron-data": mricron_version(cache_dir)}


def generate(out_dir: Path, seed: int = 0, cache_dir: Path | None = None) -> dict[str, Any]:
    """Write all assets under ``out_dir`` and return the ground truth (``cache_dir``: mricron-data cache)."""
    cache_dir = default_cache() if cache_dir is None else cache_dir
    rng = np.random.default_rng(seed)
    bases = {b.id: b for b in base_catalogue(cache_dir)}
    items: list[Item] = []
    originals: dict[str, tuple[bytes, Image.Image]] = {}
    for base in bases.values():
        img = base.load()
        kwargs: SaveKwargs = (
            {"format": "JPEG", "quality": JPEG_BASE_QUALITY} if rng.random() < 0.45 else {"format": "PNG"}
        )
        data, ext = encode(img, kwargs)
        originals[base.id] = (data, decode(data))
        items.append(Item(data, ext, _record(base, img, kwargs, role="base", transform=None)))

    for bid, specs in DUPLICATE_PLAN.items():
        data, img = originals[bid]
        base_kwargs = {"format": "JPEG" if data[:2] == b"\xff\xd8" else "PNG"}
        if base_kwargs["format"] == "JPEG":
            base_kwargs["quality"] = JPEG_BASE_QUALITY
        for spec in specs:
            if spec == "copy":
                rec = _record(bases[bid], img, base_kwargs, role="near_duplicate", transform="byte_copy")
                items.append(Item(data, "jpg" if base_kwargs["format"] == "JPEG" else "png", rec))
                continue
            var, kwargs = apply_variant(img, spec)
            kwargs = {**base_kwargs, **kwargs}
            if kwargs["format"] == "JPEG" and var.mode not in ("RGB", "L", "CMYK"):
                var = var.convert("RGB")
            vdata, ext = encode(var, kwargs)
            items.append(Item(vdata, ext, _record(bases[bid], var, kwargs, role="near_duplicate", transform=spec)))

    for oid, domain, img, kwargs in oddballs(rng):
        data, ext = encode(img, kwargs)
        items.append(Item(data, ext, _record(None, img, kwargs, role="oddball", base=oid, domain=domain)))
        items[-1].record["source"] = "scikit-image: text.png" if oid == "text" else "generated (numpy, seeded)"
    broken_src = Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8))
    data, _ = encode(broken_src, {"format": "PNG"})
    rec = {"role": "unreadable", "base": "truncated_png", "domain": "synthetic", "format": "PNG"}
    items.append(Item(data[: int(len(data) * 0.4)], "png", rec | {"source": "generated; first 40% of a valid PNG"}))

    names = _write_images(out_dir / "images", items, rng)
    truth = _ground_truth(items, names, seed, _versions(cache_dir))
    truth["queries"], truth["query_transforms"] = _write_queries(out_dir / "queries", originals, truth)
    (out_dir / "ground_truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    _write_docs(out_dir, bases, seed, cache_dir)
    return truth


def _write_images(folder: Path, items: list[Item], rng: np.random.Generator) -> list[str]:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    names = [""] * len(items)
    for number, idx in enumerate(rng.permutation(len(items)), start=1):
        names[idx] = f"{number:03d}.{items[idx].ext}"
        (folder / names[idx]).write_bytes(items[idx].data)
    return names


def _ground_truth(items: list[Item], names: list[str], seed: int, versions: dict[str, str]) -> dict[str, Any]:
    images = {name: item.record for name, item in zip(names, items, strict=True)}
    by_base: dict[str, list[str]] = {}
    originals: dict[str, str] = {}
    for name, rec in sorted(images.items()):
        if rec["role"] in ("base", "near_duplicate"):
            by_base.setdefault(rec["base"], []).append(name)
        if rec["role"] == "base":
            originals[rec["base"]] = name
    return {
        "generator": "scripts/make_assets.py",
        "seed": seed,
        "versions": versions,
        "images": images,
        "duplicate_groups": sorted(sorted(by_base[b]) for b in DUPLICATE_PLAN),
        "hard_negative_groups": sorted(sorted(originals[b] for b in group) for group in HARD_NEGATIVES),
        "oddballs": sorted(n for n, r in images.items() if r["role"] == "oddball"),
        "unreadable": sorted(n for n, r in images.items() if r["role"] == "unreadable"),
        "variants": {name: (fn.__doc__ or "").strip() for name, fn in VARIANTS.items()},
    }


def _write_queries(
    folder: Path, originals: dict[str, tuple[bytes, Image.Image]], truth: dict[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    file_of = {r["base"]: n for n, r in truth["images"].items() if r["role"] == "base"}
    transforms = _query_transforms()
    answers: dict[str, str] = {}
    applied: dict[str, str] = {}
    for i, (bid, tname) in enumerate(QUERY_PLAN, start=1):
        img, kwargs = transforms[tname](originals[bid][1])
        data, ext = encode(img, kwargs)
        qname = f"q{i}.{ext}"
        (folder / qname).write_bytes(data)
        answers[qname], applied[qname] = file_of[bid], tname
    return answers, applied


def _write_docs(out_dir: Path, bases: dict[str, Base], seed: int, cache_dir: Path) -> None:
    used: dict[tuple[str, str], list[str]] = {}
    for b in bases.values():
        used.setdefault((b.package, b.file), []).append(b.id)
    used.setdefault(("scikit-image", "text.png"), []).append("text (oddball)")
    rows = []
    for (package, file), ids in sorted(used.items()):
        if package == "scikit-image":
            where, origin, licence = f"`skimage/data/{file}`", "scikit-image sample data", SKIMAGE_LICENCES[file]
        elif package == "mricron-data":
            where, origin, licence = f"`{mricron_path(cache_dir, file)}`", MRICRON_ORIGIN, MRICRON_LICENCE
        else:
            where, origin, licence = f"`pydicom/data/test_files/{file}`", PYDICOM_ORIGINS[file], "see note 1"
        rows.append(f"| {package} | {where} | {origin} | {licence} | {', '.join(ids)} |")
    versions = ", ".join(f"{k} {v}" for k, v in _versions(cache_dir).items())
    slices = ", ".join(str(i) for i in COLIN27_SLICES)
    text = f"""# Provenance of the test assets

Everything in `images/`, `queries/` and `ground_truth.json` is generated by

```
python scripts/make_assets.py --out assets --seed {seed}
```

from files that ship inside the installed `scikit-image` and `pydicom` packages, and from the
Debian package `mricron-data`, which `bench/datasets.py` fetches once with `apt-get download`
(Debian archive only) and unpacks with `dpkg-deb -x` into `bench/.cache` (git-ignored; `--cache`
picks another folder). Output is byte-for-byte reproducible for a given seed and the same package versions
(generated with {versions}). Images are downscaled so the long side is at most {MAX_SIDE} px;
crops are given in source pixels as `[x0, y0, x1, y1]` in `ground_truth.json`.
DICOM pixel data is converted to 8-bit grayscale with the window given in the script
(centre/width after the modality LUT) or a 0.5-99.5 percentile stretch.
The `colin27_ax<k>` images are axial slices k = {slices} of the Colin27 volume (`{COLIN27_FILE}`,
181 x 217 x 181 voxels of 1 mm), read and reoriented to RAS with `bench/datasets.py`, shown anterior up,
windowed to the 0.5-99.5 percentile of head voxels and kept at native resolution.

Synthetic images (blank, noise, tiny, strip, chessboard, pure colour, the truncated PNG)
are generated by the script from a seeded NumPy generator and carry no third-party rights.

## Sources

| package | file | origin | licence / notice | used as |
| --- | --- | --- | --- | --- |
{chr(10).join(rows)}

Licences of the scikit-image files are quoted from the docstrings of `skimage/data/_fetchers.py`.

Note 1: {PYDICOM_LICENCE} For `693_J2KI.dcm`, `J2K_pixelrep_mismatch.dcm` and
`examples_ybr_color.dcm` that README gives no further origin than the one in the table.

Note 2: The copyright file of the Debian package (`usr/share/doc/mricron-data/copyright`)
covers all files (`Files: *`) with 'Copyright 2006-2010, Chris Rorden' under the BSD-3-clause
licence; it has no separate entry for the templates.

Not used: `moon.png`, `page.png`, `motorcycle_left/right.png` (Middlebury 2014 stereo),
`color.png`, `logo.png`, `lfw_subset.npy` (no licence statement in the installed scikit-image);
`SC_jpeg_no_color_transform*.dcm` (TCGA slide tile, TCIA terms); `examples_palette.dcm`
(origin only 'supposedly from a Philips machine'); pydicom files that are only downloaded
on demand, such as `emri_small.dcm` (not available offline).
"""
    (out_dir / "PROVENANCE.md").write_text(text)
    weights = out_dir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    (weights / "README.md").write_text(
        """# Backbone weights (user-supplied)

This folder is for torchvision ImageNet state dicts that you download yourself, for example
`resnet18-f37072fd.pth` or `resnet50-*.pth` (e.g. `resnet50-0676ba61.pth` or `resnet50-11ad3fa6.pth`).
They are used only when `--backbone resnet18` or `--backbone resnet50` is chosen.
Nothing is committed here: `.gitignore` ignores every file in this folder except this README.
"""
    )


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Regenerate the deterministic test assets.")
    parser.add_argument("--out", type=Path, default=Path("assets"), help="output folder (default: assets)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="where mricron-data is downloaded/unpacked (default: bench/.cache)"
    )
    args = parser.parse_args()
    truth = generate(args.out, args.seed, args.cache)
    print(
        f"wrote {len(truth['images'])} images, {len(truth['queries'])} queries, "
        f"{len(truth['duplicate_groups'])} duplicate groups to {args.out}"
    )


if __name__ == "__main__":
    main()
