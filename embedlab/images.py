"""Finding, hashing and decoding image files into clean 8-bit RGB.

Every image, whatever its encoding (palette, alpha, CMYK, 16-bit grey,
EXIF-rotated), must reach the backbone as the same RGB pixels a viewer shows,
so that an index image and a query in another encoding embed alike.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from . import dicom

# Refuse truncated files instead of silently padding them with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Whole-slide and panorama files are legitimate up to ~1 gigapixel; beyond that
# a file is more likely a decompression bomb than a picture.
Image.MAX_IMAGE_PIXELS = 1_000_000_000

_HASH_CHUNK = 1 << 20


class ImageError(Exception):
    """A file that cannot be turned into pixels; the message is one line."""


@dataclass(frozen=True)
class ImageFileInfo:
    """What a scan learns from the file system, before any decoding."""

    path: str  # display path, as the user spelled the folder
    abspath: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Decoded:
    """An image ready for a backbone, with what we learnt while decoding it."""

    rgb: Image.Image
    format: str
    mode: str
    width: int
    height: int


def image_extensions() -> frozenset[str]:
    """Extensions we can open (Pillow's, plus DICOM when pydicom is installed), lower case."""
    Image.init()
    found = frozenset(ext.lower() for ext in Image.registered_extensions())
    return found | dicom.DICOM_EXTENSIONS if dicom.available() else found


def display_root(folder: str | os.PathLike[str]) -> str:
    """Normalise a folder the way the user typed it: './assets/x/' -> 'assets/x'."""
    return os.path.normpath(os.fspath(folder))


def scan_images(folder: str | os.PathLike[str]) -> list[ImageFileInfo]:
    """List image files below ``folder`` in a stable order, skipping hidden entries."""
    root = display_root(folder)
    if not os.path.isdir(root):
        raise ImageError(f"not a folder: {root}")
    exts = image_extensions()
    found: list[ImageFileInfo] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in exts:
                continue
            full = os.path.join(dirpath, name)
            try:
                st = os.stat(full)
            except OSError:
                continue
            if not os.path.isfile(full):
                continue
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            path = rel if root == "." else f"{root.replace(os.sep, '/')}/{rel}"
            found.append(ImageFileInfo(path, Path(full), st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.path)
    return found


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def path_token(path: str) -> str:
    """A short stable stand-in for a path in logs: paths may carry patient names."""
    return "file:" + hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:10]


def _high_bit_to_8bit(arr: np.ndarray) -> np.ndarray:
    """Scale >8-bit grey to 0..255 by the smallest standard range that holds it.

    8-bit data stored in 16 bits (x257), 12-bit CT/MR and full 16-bit images all
    keep their look; a naive ``convert('L')`` clips them to white instead.
    """
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        scaled = (np.nan_to_num(arr, nan=lo) - lo) / (hi - lo or 1.0) * 255.0
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    arr = arr.astype(np.int64)
    lo = int(arr.min()) if arr.size else 0
    if lo < 0:  # signed data (e.g. CT in HU): shift to zero first
        arr = arr - lo
    hi = int(arr.max()) if arr.size else 0
    top = next(t for t in (255, 4095, 65535, 2**32 - 1) if hi <= t)
    return np.clip((arr * 255 + top // 2) // top, 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB as a viewer would display it."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = Image.fromarray(_high_bit_to_8bit(np.asarray(img)), mode="L")
        return grey.convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        # Transparent pixels show as white, the way documents and browsers show them.
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def viewed_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied, then RGB: the picture as a viewer shows it."""
    return to_rgb(ImageOps.exif_transpose(img))


def decode(path: str | os.PathLike[str]) -> Decoded:
    """Open an image fully, apply EXIF orientation and return RGB pixels.

    Raises ImageError with a one-line reason for anything unreadable.
    """
    if dicom.is_dicom(path):
        return _decode_dicom(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format or "unknown"
                mode = img.mode
                img.seek(0)
                img.load()
                rgb = viewed_rgb(img)
                rgb.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{type(exc).__name__}: {_one_line(exc, path)}") from None
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, IndexError, KeyError) as exc:
        raise ImageError(f"{type(exc).__name__}: {_one_line(exc, path)}") from None
    width, height = rgb.size
    if width < 1 or height < 1:
        raise ImageError("empty image")
    return Decoded(rgb=rgb, format=fmt, mode=mode, width=width, height=height)


def _decode_dicom(path: str | os.PathLike[str]) -> Decoded:
    if not dicom.available():
        raise ImageError("DICOM file, but pydicom is not installed (pip install pydicom)")
    try:
        rgb, mode = dicom.read_dicom(path)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom raises many types for damaged or unsupported files
        raise ImageError(f"{type(exc).__name__}: {_one_line(exc, path)}") from None
    return Decoded(rgb=rgb, format="DICOM", mode=mode, width=rgb.width, height=rgb.height)


def _one_line(exc: BaseException, path: str | os.PathLike[str]) -> str:
    # Pillow names the file in some messages; the path must not reach logs.
    text = str(exc).replace(os.fspath(path), "<file>").replace(os.path.abspath(path), "<file>")
    return " ".join(text.split())[:200] or type(exc).__name__


def quality_metrics(rgb: Image.Image) -> dict[str, float]:
    """Cheap content statistics used to explain anomalies (blank, flat, blurry)."""
    thumb = rgb.convert("L")
    thumb.thumbnail((256, 256), Image.Resampling.BILINEAR)
    grey = np.asarray(thumb, dtype=np.float64)
    hist = np.bincount(grey.astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    entropy = float(-(p * np.log2(p)).sum()) + 0.0
    if grey.shape[0] >= 3 and grey.shape[1] >= 3:
        lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
        sharpness = float(lap.var())
    else:
        sharpness = 0.0
    return {
        "entropy": round(entropy, 6),
        "contrast": round(float(grey.std()) / 255.0, 6),
        "sharpness": round(sharpness, 6),
        "brightness": round(float(grey.mean()) / 255.0, 6),
    }
