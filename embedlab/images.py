"""Finding, hashing and decoding image files into clean 8-bit RGB.

Every image, whatever its encoding (palette, alpha, CMYK, 16-bit grey,
EXIF-rotated), must reach the backbone as the same RGB pixels a viewer shows,
so that an index image and a query in another encoding embed alike.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import io
import logging
import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps

from . import dicom
from .errors import EmbedlabError

log = logging.getLogger("embedlab")

# Most pixels one decoded image may have (200 MP: a large panorama; about 600 MB
# as RGB). Above it a file gets a per-file error instead of exhausting memory;
# `embed --max-pixels` changes it. JPEGs are checked after draft-mode reduction.
DEFAULT_MAX_PIXELS = 200_000_000
_max_pixels = DEFAULT_MAX_PIXELS
# Pillow's truncation, bomb and warning settings are process-wide: embedlab.settings
# applies them around each command or API call, never at import.

# A large JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT (draft mode): the
# smallest scale whose short side still holds the backbone's resize (``draft_side``,
# 256 px for Lite0) and whose long side still holds DRAFT_MIN_LONG, the largest
# picture the same-picture evidence looks at (evidence.ORB_MAX_SIDE). A 24 MP photo
# decodes several times faster in far less memory. Indexes made before the scale
# followed the backbone keep their 512 px short side (registry.LEGACY_DRAFT_SIDE).
DRAFT_MIN_SIDE = 512
DRAFT_MIN_LONG = 512

# Decoding memory. A small file can hold a huge picture (a 381 KB PNG of 14000x14000 16-bit
# grey), and every mode conversion of it used to copy it at up to 8 bytes a pixel (6 GB).
# So a picture whose decoded pixels take more than REDUCE_ABOVE_BYTES is reduced (box filter,
# in its own mode, a strip at a time where Pillow cannot reduce that mode) to about
# REDUCE_TO_PIXELS before any conversion, keeping its shorter side at MIN_REDUCED_SIDE or more
# (the model sees 256 px); the stored width and height stay the file's. What one picture needs
# (its decoded pixels, then WORK_BYTES_PER_PIXEL for the conversions of the reduced copy) is
# taken from one budget shared by every decode thread: a picture that needs more than the whole
# budget is a per-file error, the others wait for their share, so workers x per-image memory
# stays under it.
DEFAULT_DECODE_BUDGET_MB = 2048
REDUCE_ABOVE_BYTES = 64 << 20
REDUCE_TO_PIXELS = 4_000_000
MIN_REDUCED_SIDE = 256
WORK_BYTES_PER_PIXEL = 32
_NATIVE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}  # Pillow stores others in 4

_HASH_CHUNK = 1 << 20
_log_paths = False


class ImageError(EmbedlabError):
    """A file that cannot be turned into pixels; the message is one line."""


def set_max_pixels(limit: int) -> None:
    """Change the per-image pixel limit (``embed --max-pixels``)."""
    global _max_pixels
    _max_pixels = max(1, int(limit))
    Image.MAX_IMAGE_PIXELS = 64 * _max_pixels


class _DecodeBudget:
    """Bytes of decoded pixels the decode threads of this process may hold at once."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, need: int) -> Iterator[None]:
        with self._changed:  # alone, a picture may take the whole budget (need <= total is checked first)
            self._changed.wait_for(lambda: self.used == 0 or self.used + need <= self.total)
            self.used += need
        try:
            yield
        finally:
            with self._changed:
                self.used -= need
                self._changed.notify_all()


_budget = _DecodeBudget(DEFAULT_DECODE_BUDGET_MB << 20)


def set_decode_budget(megabytes: int) -> None:
    """Change the memory all decode threads may hold at once (``embed --decode-memory-mb``)."""
    _budget.total = max(1, int(megabytes)) << 20


def decode_budget_mb() -> int:
    """The decode memory budget now in force, in MB."""
    return _budget.total >> 20


def decode_need(mode: str, width: int, height: int) -> tuple[int, int]:
    """(bytes one picture needs to decode and convert, reduction factor) for a picture of this size and mode."""
    pixels = width * height
    native = pixels * _NATIVE_BYTES.get(mode, 4)
    factor = 1
    if native > REDUCE_ABOVE_BYTES:
        wanted = math.ceil(math.sqrt(pixels / REDUCE_TO_PIXELS))
        factor = max(1, min(wanted, min(width, height) // MIN_REDUCED_SIDE))
    work = (width // factor) * (height // factor) * WORK_BYTES_PER_PIXEL
    return native + work, factor


def set_log_paths(show: bool) -> None:
    """``--log-paths``: name files by their path in logs instead of a hash."""
    global _log_paths
    _log_paths = bool(show)


def decode_settings() -> tuple[int, bool]:
    """(pixel limit, log paths) as set for this process: what cluster workers must copy."""
    return _max_pixels, _log_paths


@dataclass(frozen=True)
class ImageFileInfo:
    """What a scan learns from the file system, before any decoding."""

    path: str  # display path, as the user spelled the folder
    abspath: Path
    size: int
    mtime_ns: int
    error: str | None = None  # set when the file cannot be used at all (broken link, bad name)
    ctime_ns: int | None = None  # status change (chmod, chown, rewrite): a failed file is retried when it moves


@dataclass(frozen=True)
class Decoded:
    """An image ready for a backbone, with what we learnt while decoding it."""

    rgb: Image.Image
    format: str
    mode: str
    width: int  # of the full image as stored, even when decoded at reduced scale
    height: int
    frames: int = 1  # animated / multi-page / multi-frame: only frame 0 is embedded
    modality: str | None = None  # DICOM only: non-identifying acquisition tags
    body_part: str | None = None
    series_key: str | None = None  # DICOM only: embedlab.dicom.series_key / slice_key
    slice_key: str | None = None


@functools.cache
def image_extensions() -> frozenset[str]:
    """Extensions we can open (Pillow's, plus DICOM when pydicom is installed), lower case.

    Cached: decoding asks once per file, and the answer cannot change within a process.
    """
    Image.init()
    found = frozenset(ext.lower() for ext in Image.registered_extensions())
    return found | dicom.DICOM_EXTENSIONS if dicom.available() else found


def display_root(folder: str | os.PathLike[str]) -> str:
    """Normalise a folder the way the user typed it: './assets/x/' -> 'assets/x'."""
    return os.path.normpath(os.fspath(folder))


def scan_images(
    folder: str | os.PathLike[str], unlisted: list[str] | None = None, named: str | None = None
) -> list[ImageFileInfo]:
    """List image files below ``folder`` in a stable order, skipping hidden entries.

    Symlinked folders are followed once each (a loop is skipped with a warning).
    Files that look like images but cannot be used (a broken or looping
    symlink, a name that is not UTF-8) come back with ``error`` set, so the
    caller can record why. Extension-less files and UID-style names
    (``1.2.840.…``) are sniffed for the DICOM preamble. Folders that cannot be
    listed (permissions) are logged and, when ``unlisted`` is given, appended
    to it as display paths: their files are unknown, not gone. ``named`` is the
    root the paths are written under (default: ``folder`` as typed), for a folder
    an index already holds under another name.
    """
    root = display_root(folder)
    shown = root if named is None else named
    if not os.path.isdir(root):
        raise ImageError(f"not a folder: {root}")
    exts = image_extensions()
    found: list[ImageFileInfo] = []
    top = os.stat(root)
    visited = {(top.st_dev, top.st_ino)}
    hidden = 0  # names starting with '.' (.DS_Store, .git, .thumbnails): skipped, but counted

    def walk_error(exc: OSError) -> None:
        log.warning("%s: cannot list folder (%s)", path_token(exc.filename or "?"), exc.strerror)
        if unlisted is not None and exc.filename is not None:
            unlisted.append(_display_path(root, os.fspath(exc.filename), shown))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=walk_error):
        hidden += sum(d.startswith(".") for d in dirnames) + sum(f.startswith(".") for f in filenames)
        dirnames[:] = _unvisited(dirpath, sorted(d for d in dirnames if not d.startswith(".")), visited)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            if not _wanted(full, name, exts):
                continue
            info = _file_info(_display_path(root, full, shown), full)
            if info is not None:
                found.append(info)
    found.sort(key=lambda f: f.path)
    log.debug("scan found %d image files", len(found))
    if hidden:
        log.info("skipped %d hidden file(s) and folder(s) (names starting with '.')", hidden)
    return found


def _wanted(full: str, name: str, exts: frozenset[str]) -> bool:
    ext = os.path.splitext(name)[1].lower()
    if ext in exts:
        return True
    if name.upper() == "DICOMDIR":  # an export's table of contents, never an image
        return False
    return (not ext or ext[1:].isdigit()) and dicom.has_preamble(full)


def _display_path(root: str, full: str, shown: str | None = None) -> str:
    """The stored, printed path of ``full``: relative to how the user named ``root`` (or ``shown``), as path text."""
    rel = os.path.relpath(full, root).replace(os.sep, "/")
    prefix = root if shown is None else shown
    return path_text(rel if prefix == "." else f"{prefix.replace(os.sep, '/')}/{rel}")


# A backslash that the decoder of path_text would read as the start of an escape.
_ESCAPE_AHEAD = re.compile(r"\\|x[0-9a-f]{2}")


def path_text(path: str) -> str:
    """A file system path (str, with surrogates for bytes that are not UTF-8) as lossless UTF-8 text.

    Bytes that are not UTF-8 are written ``\\xNN`` (``caf\\xe9.png``); a real backslash
    is doubled only where it would otherwise read as such an escape, so every
    ordinary name stays as it is and no two names share one text (a file named
    ``caf\\xe9.png`` with a literal backslash is ``caf\\\\xe9.png``). ``fs_path`` inverts it.
    """
    if "\\" not in path:
        try:
            path.encode("utf-8")
            return path
        except UnicodeEncodeError:
            pass
    parts = [f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in path]
    out: list[str] = []
    for i in range(len(parts) - 1, -1, -1):  # right to left: an escape depends on what follows
        part = parts[i]
        if part == "\\" and _ESCAPE_AHEAD.match("".join(out[-1:-4:-1])):
            part = "\\\\"
        out.append(part)
    return "".join(reversed(out))


def fs_path(text: str) -> str:
    """The file system path (surrogate-escaped str, as os.fsdecode gives) of a ``path_text``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and text[i + 1 : i + 2] == "\\":
            out.append("\\")
            i += 2
        elif c == "\\" and re.fullmatch(r"x[0-9a-f]{2}", text[i + 1 : i + 4]):
            out.append(chr(0xDC00 + int(text[i + 2 : i + 4], 16)))
            i += 4
        else:
            out.append(c)
            i += 1
    return os.fsdecode(os.fsencode("".join(out)))


def _file_info(path: str, full: str) -> ImageFileInfo | None:
    """Stat one candidate; None for things that are not files (or vanished already)."""
    try:
        full.encode("utf-8")
    except UnicodeEncodeError:
        st = os.lstat(full)
        reason = "file name is not valid UTF-8; rename it"
        return ImageFileInfo(path, Path(full), st.st_size, st.st_mtime_ns, reason, st.st_ctime_ns)
    try:
        st = os.stat(full)
    except OSError as exc:
        try:
            lst = os.lstat(full)
        except OSError:
            return None  # gone between listing and stat: nothing to record
        reason = "symbolic link loop" if exc.errno == errno.ELOOP else "broken symbolic link"
        return ImageFileInfo(
            path, Path(full), lst.st_size, lst.st_mtime_ns, f"{reason}: {exc.strerror}", lst.st_ctime_ns
        )
    if not os.path.isfile(full):
        return None
    return ImageFileInfo(path, Path(full), st.st_size, st.st_mtime_ns, ctime_ns=st.st_ctime_ns)


def _unvisited(dirpath: str, names: list[str], visited: set[tuple[int, int]]) -> list[str]:
    """Sub-folders not seen yet (by device and inode): symlink loops end here."""
    keep = []
    for name in names:
        try:
            st = os.stat(os.path.join(dirpath, name))
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            log.warning(
                "%s: folder already scanned (symlink loop or second link), skipped",
                path_token(os.path.join(dirpath, name)),
            )
            continue
        visited.add(key)
        keep.append(name)
    return keep


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def path_token(path: str | os.PathLike[str]) -> str:
    """A short stable stand-in for a path in logs: paths may carry patient names.

    With ``--log-paths`` (set_log_paths) the path itself, for users who want it.
    """
    text = os.fspath(path)
    if _log_paths:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "file:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:10]


def _high_bit_to_8bit(arr: np.ndarray) -> np.ndarray:
    """Scale >8-bit grey to 0..255 by the smallest standard range that holds it.

    8-bit data stored in 16 bits (x257), 12-bit CT/MR and full 16-bit images all
    keep their look; a naive ``convert('L')`` clips them to white instead.
    """
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        clean = np.nan_to_num(arr.astype(np.float64), nan=lo, posinf=hi, neginf=lo)
        scaled = (clean - lo) / (hi - lo or 1.0) * 255.0
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
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        grey = Image.fromarray(_high_bit_to_8bit(np.asarray(img)), mode="L")
        return grey.convert("RGB")
    if mode == "LAB":  # CIELAB (TIFF): a real colour conversion, not a channel copy
        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(img, transform) or img.convert("RGB")
    if mode in ("P", "L", "1", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")  # a palette entry or colour key marks clear pixels
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


_REDUCIBLE = frozenset({"L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "I", "F"})
_STRIP_ROWS = 256  # rows of a strip converted at a time for modes Pillow cannot reduce (palette, 1-bit, 16-bit)


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """``img`` shrunk by ``factor`` (box filter), a strip at a time: never a second full-size copy
    (Pillow's own reduce of RGBA and LA makes a premultiplied one; palette, 1-bit and 16-bit modes
    cannot be reduced without a full conversion first)."""
    if img.mode in _REDUCIBLE and "transparency" not in img.info:  # a colour key does not survive averaging
        target = img.mode
    elif img.mode.startswith("I;16"):
        target = "I"  # same levels, 32-bit: to_rgb scales it by its range as it would the 16-bit one
    elif img.mode == "1":
        target = "L"
    else:  # palette (average colours, not palette indices) or a colour key
        target = "RGBA" if img.mode in ("PA", "LA", "RGBA") or "transparency" in img.info else "RGB"
    width, height = img.width // factor, img.height // factor
    out = Image.new(target, (width, height))
    step = max(1, _STRIP_ROWS // factor) * factor
    for top in range(0, height * factor, step):
        bottom = min(top + step, height * factor)
        strip = img.crop((0, top, width * factor, bottom))
        out.paste((strip if strip.mode == target else strip.convert(target)).reduce(factor), (0, top // factor))
    return out


_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except (TypeError, ValueError):
        return 1


def _swaps_axes(img: Image.Image) -> bool:
    return _orientation(img) in (5, 6, 7, 8)


def _oriented(reduced: Image.Image, original: Image.Image) -> Image.Image:
    """The reduced copy turned by the original's EXIF orientation (the copy carries no EXIF of its own)."""
    method = _ORIENTATION.get(_orientation(original))
    return reduced.transpose(method) if method is not None else reduced


def read_file(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The whole file and its stat, taken from the open file before reading.

    Decoding from these bytes, and hashing them, makes a row describe exactly
    what was decoded even when the file is replaced or deleted meanwhile; the
    stat is from before the read, so a write during it shows at the next run.
    """
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        return fh.read(), st


class _InMemory(io.BytesIO):
    """A file's bytes for the decoders; messages that name the stream name the file, as a path would."""

    def __init__(self, data: bytes, path: str | os.PathLike[str]):
        super().__init__(data)
        self.name = os.fspath(path)

    def __repr__(self) -> str:
        return repr(self.name)


def decode(path: str | os.PathLike[str], data: bytes | None = None, draft_side: int = DRAFT_MIN_SIDE) -> Decoded:
    """Open an image fully, apply EXIF orientation and return RGB pixels.

    The file is read once (or ``data``, its bytes already read, is used) and
    decoded from memory; a large JPEG keeps at least ``draft_side`` pixels on its
    short side (and DRAFT_MIN_LONG on its long side). Raises ImageError with a
    one-line reason for anything unreadable: decoders fail in many ways on
    damaged files, and one bad file must never stop a run.
    """
    try:
        if data is None:
            data = read_file(path)[0]
        head = data[: dicom.PREAMBLE_BYTES]
        if dicom.is_dicom(path, image_extensions(), head=head):
            return _decode_dicom(path, data)
        return _decode_pillow(path, data, draft_side)
    except ImageError:
        raise
    except Exception as exc:  # OSError, SyntaxError, struct.error, MemoryError, ...
        if data is not None and dicom.has_preamble(path, head=data[: dicom.PREAMBLE_BYTES]):
            return _decode_dicom(path, data)  # a DICOM file with an image extension
        raise ImageError(f"{type(exc).__name__}: {_one_line(exc, path)}") from None


def _decode_pillow(path: str | os.PathLike[str], data: bytes, draft_side: int = DRAFT_MIN_SIDE) -> Decoded:
    if not data:
        raise ImageError("empty file (0 bytes)")
    with Image.open(_InMemory(data, path)) as img:
        fmt = img.format or "unknown"
        mode = img.mode
        width, height = img.size
        frames = int(getattr(img, "n_frames", 1) or 1)
        img.seek(0)
        scale = max(draft_side / max(1, min(width, height)), DRAFT_MIN_LONG / max(1, width, height))
        if fmt == "JPEG" and scale <= 0.5:
            img.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))
        if img.width * img.height > _max_pixels:
            raise ImageError(
                f"too large: {width}x{height} pixels is above the limit of {_max_pixels:,} (embed --max-pixels)"
            )
        need, factor = decode_need(img.mode, img.width, img.height)
        if need > _budget.total:
            raise ImageError(
                f"too large to decode: {width}x{height} {mode} needs about {need >> 20:,} MB, above the "
                f"decode memory budget of {_budget.total >> 20:,} MB (embed --decode-memory-mb)"
            )
        with _budget.hold(need):
            img.load()
            if factor > 1:
                rgb, swapped = to_rgb(_oriented(_reduce(img, factor), img)), _swaps_axes(img)
            else:
                rgb = viewed_rgb(img)
                swapped = rgb.size != img.size
            rgb.load()
    if rgb.width < 1 or rgb.height < 1:
        raise ImageError("empty image")
    if swapped:  # EXIF orientation swapped the axes
        width, height = height, width
    return Decoded(rgb=rgb, format=fmt, mode=mode, width=width, height=height, frames=frames)


def _decode_dicom(path: str | os.PathLike[str], data: bytes) -> Decoded:
    if not dicom.available():
        raise ImageError("DICOM file, but pydicom is not installed (pip install pydicom)")
    try:
        image = dicom.read_dicom(_InMemory(data, path), max_pixels=_max_pixels)
    except Exception as exc:  # pydicom raises many types for damaged or unsupported files
        raise ImageError(f"{type(exc).__name__}: {_one_line(exc, path)}") from None
    rgb = image.rgb
    return Decoded(
        rgb=rgb,
        format="DICOM",
        mode=image.mode,
        width=rgb.width,
        height=rgb.height,
        frames=image.frames,
        modality=image.modality,
        body_part=image.body_part,
        series_key=image.series_key,
        slice_key=image.slice_key,
    )


def _one_line(exc: BaseException, path: str | os.PathLike[str]) -> str:
    # Pillow names the file in some messages; the path must not reach logs.
    text = str(exc).replace(os.fspath(path), "<file>").replace(os.path.abspath(path), "<file>")
    return " ".join(text.split())[:200] or type(exc).__name__


def quality_metrics(rgb: Image.Image, grey_image: Image.Image | None = None) -> dict[str, float]:
    """Cheap content statistics used to explain anomalies (blank, flat, blurry, grey, cut off).

    ``colourfulness`` (Hasler and Suesstrunk's M / 255) tells a greyscale picture
    from a colour one whatever its file mode; ``band`` is the fraction of rows at
    the bottom that are one flat colour not found at the other edges: where a
    partially decoded file's pixel data stopped (background does not count).
    ``grey_image``: ``rgb.convert("L")`` where the caller already has it (embed shares
    it with the same-picture evidence).
    """
    thumb = rgb.convert("L") if grey_image is None else grey_image.copy()
    thumb.thumbnail((256, 256), Image.Resampling.BILINEAR)
    grey = np.asarray(thumb, dtype=np.float64)
    small = rgb.convert("RGB")
    small.thumbnail((256, 256), Image.Resampling.BILINEAR)
    colour = np.asarray(small)  # uint8
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
        "colourfulness": round(_colourfulness(colour), 6),
        "band": round(_bottom_band(colour), 6),
        **{key: round(value, 6) for key, value in pixel_statistics(small, grey).items()},
    }


EDGE_LEVELS = 32.0  # grey levels of gradient that make an edge pixel
FLAT_LEVELS = 1.0  # ... and below which a pixel is flat
COLOUR_BITS = 4  # per channel, for counting an image's distinct colours
COLOUR_COVER = 0.95  # ``colours``: how many distinct colours cover this share of the pixels


def pixel_statistics(rgb: Image.Image, grey: np.ndarray) -> dict[str, float]:
    """How the pixels are made, for judging an image's statistics against the collection.

    ``saturation``: mean HSV saturation (0-1); ``correlation``: of neighbouring
    grey pixels (about 0 for noise, near 1 for smooth pictures; 1 when flat);
    ``edges`` / ``flat``: share of pixels whose grey gradient is above
    EDGE_LEVELS / below FLAT_LEVELS; ``top_colours``: share of the pixels in the
    four most common colours (COLOUR_BITS per channel); ``colours``: how many
    such colours cover COLOUR_COVER of the pixels. ``rgb``: the 256 px thumbnail.
    """
    saturation = float(np.asarray(rgb.convert("HSV"))[..., 1].mean(dtype=np.float64)) / 255.0
    correlation, edges, flat = 1.0, 0.0, 1.0
    if grey.shape[0] >= 3 and grey.shape[1] >= 3:
        centred = grey - grey.mean()
        variance = float(centred.var())
        if variance > 1e-9:
            across = float((centred[:, 1:] * centred[:, :-1]).mean())
            down = float((centred[1:] * centred[:-1]).mean())
            correlation = 0.5 * (across + down) / variance
        # Squared integer gradients: the grey levels are whole numbers, so this is exactly the
        # Euclidean test against the levels, at a third of the cost of np.hypot on floats.
        levels = grey.astype(np.int32)
        dx, dy = np.diff(levels, axis=1)[:-1], np.diff(levels, axis=0)[:, :-1]
        squared = dx * dx + dy * dy
        edges = float((squared > EDGE_LEVELS * EDGE_LEVELS).mean())
        flat = float((squared < FLAT_LEVELS * FLAT_LEVELS).mean())
    levels = np.asarray(rgb, dtype=np.uint8) >> (8 - COLOUR_BITS)
    keys = (levels[..., 0].astype(np.int64) << (2 * COLOUR_BITS)) | (levels[..., 1] << COLOUR_BITS) | levels[..., 2]
    counts = np.sort(np.bincount(keys.ravel(), minlength=1 << (3 * COLOUR_BITS)))[::-1] / keys.size
    colours = int(np.searchsorted(np.cumsum(counts), COLOUR_COVER - 1e-9) + 1)
    return {
        "saturation": saturation,
        "correlation": correlation,
        "edges": edges,
        "flat": flat,
        "top_colours": float(counts[:4].sum()),
        "colours": float(colours),
    }


BAND_LEVELS = 2.0  # grey levels a flat band's pixels may stray from its colour (resampling, JPEG)


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler and Suesstrunk's M / 255 of 8-bit RGB pixels, from exact integer moments."""
    pixels = rgb.reshape(-1, 3).astype(np.int64)
    rg = pixels[:, 0] - pixels[:, 1]
    yb = pixels[:, 0] + pixels[:, 1] - 2 * pixels[:, 2]  # twice the yellow-blue opponent
    (rg_mean, rg_std), (yb_mean, yb_std) = _moments(rg), _moments(yb)
    return float(np.hypot(rg_std, yb_std / 2) + 0.3 * np.hypot(rg_mean, yb_mean / 2)) / 255.0


def _moments(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of whole numbers, from their exact sums."""
    n = max(1, values.size)
    mean = float(values.sum()) / n
    return mean, float(np.sqrt(max(0.0, float((values * values).sum()) / n - mean * mean)))


def _bottom_band(rgb: np.ndarray) -> float:
    """Fraction of bottom rows that are one flat colour, zero when that colour also
    borders the picture's top or the sides above the band (then it is background).

    Rows are tested from the bottom up, a few at a time, and above the band only the
    border is: a dark scan with a black last row never pays a full-frame pass."""
    height = rgb.shape[0]
    if height < 8 or rgb.shape[1] < 2:
        return 0.0
    colour = rgb[-1].mean(axis=0)

    def flat(pixels: np.ndarray) -> np.ndarray:  # pixel has the last row's colour
        return np.asarray(np.abs(pixels - colour).max(axis=-1) <= BAND_LEVELS)

    if not flat(rgb[-1]).all():
        return 0.0  # the last row is not flat: no band (most pictures)
    top, step = height, 8
    while top > 0:
        start = max(0, top - step)
        rows = flat(rgb[start:top]).all(axis=1)
        if not rows.all():
            top = start + int(np.flatnonzero(~rows)[-1]) + 1  # first row of the band
            break
        top, step = start, step * 2
    if top == 0:
        return 0.0  # all one colour: blank, not cut off
    border = np.concatenate([flat(rgb[0]), flat(rgb[:top, 0]), flat(rgb[:top, -1])])
    if border.mean() > 0.5:
        return 0.0
    return (height - top) / height
