"""DICOM files (CT, MR, US, ...) to display pixels, via pydicom when it is installed.

A DICOM image is not a picture until its stored values pass through the
modality LUT (rescale to HU and the like) and a display window; without them a
CT comes out as a flat grey or a white blob. The window used is the file's own
(VOI LUT / Window Center and Width) when present, else the 0.5-99.5 percentile
range, which is what a viewer's auto-window does.

Privacy: only the tags named in ``_KEPT_TAGS`` ever leave this module, and
pydicom's own warnings and log records (which can quote element values such as
a patient's name) are silenced, so nothing identifying reaches a log.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
_PREAMBLE = 128  # bytes before the "DICM" magic in a Part 10 file
PREAMBLE_BYTES = _PREAMBLE + 4  # what has_preamble looks at

# pydicom logs and warns with element values in the text: embedlab.settings keeps all of it
# out of stderr around each command or API call (never at import: the host's logging is its own).


@dataclass(frozen=True)
class DicomImage:
    """The first frame as 8-bit RGB plus the non-identifying facts we keep."""

    rgb: Image.Image
    mode: str  # e.g. "DICOM MONOCHROME2"
    frames: int
    modality: str | None
    body_part: str | None
    series_key: str | None = None  # a hash of SeriesInstanceUID (the UID itself is never kept)
    slice_key: str | None = None  # where in the series this image lies ("p:" position, "l:" slice location)


@functools.cache
def available() -> bool:
    """Whether pydicom is installed, without importing it (a quarter second every scan; cached per process)."""
    return importlib.util.find_spec("pydicom") is not None


def has_preamble(path: str | os.PathLike[str], head: bytes | None = None) -> bool:
    """True when the file carries the Part 10 marker: 'DICM' at byte 128 (one small read).

    ``head``, the file's first PREAMBLE_BYTES bytes already read, saves the read."""
    if head is None:
        try:
            with open(path, "rb") as fh:
                head = fh.read(PREAMBLE_BYTES)
        except OSError:
            return False
    return head[_PREAMBLE:PREAMBLE_BYTES] == b"DICM"


def is_dicom(path: str | os.PathLike[str], image_extensions: Collection[str] = (), head: bytes | None = None) -> bool:
    """By extension (.dcm, .dicom); a file without a known image extension is sniffed.

    Files with an image extension are not sniffed here: reading the head of every
    PNG twice would cost a second open per file (decode falls back to DICOM
    only when Pillow cannot identify such a file).
    """
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in DICOM_EXTENSIONS:
        return True
    return ext not in image_extensions and has_preamble(path, head)


def read_dicom(path: str | os.PathLike[str] | BinaryIO, max_pixels: int | None = None) -> DicomImage:
    """The first frame of a DICOM file (a path or an open binary file) as 8-bit RGB. Raises on anything unreadable."""
    import pydicom
    from pydicom import config
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

    # Invalid values are read as they are, never quoted in a warning.
    config.settings.reading_validation_mode = config.IGNORE
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ValueError("DICOM file holds no image (no PixelData)")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if max_pixels is not None and rows * columns > max_pixels:
        raise ValueError(f"too large: {columns}x{rows} pixels is above the limit of {max_pixels:,}")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    # Only frame 0 is decoded; YBR is converted to RGB by pydicom.
    pixels = pixel_array(ds, index=0)
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        rgb = pixels if pixels.dtype == np.uint8 else _stretch(pixels.astype(np.float64))
        image = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    else:
        values = apply_modality_lut(pixels, ds)
        windowed = _has_window(ds)
        grey = apply_voi_lut(values, ds) if windowed else values
        grey8 = _stretch(np.asarray(grey, dtype=np.float64), percentile=not windowed)
        if photometric == "MONOCHROME1":  # 0 is white in this interpretation
            grey8 = 255 - grey8
        image = Image.fromarray(grey8, mode="L").convert("RGB")
    return DicomImage(
        rgb=image,
        mode=f"DICOM {photometric}",
        frames=frames,
        modality=_tag(ds, "Modality"),
        body_part=_tag(ds, "BodyPartExamined"),
        series_key=series_key(ds),
        slice_key=slice_key(ds),
    )


def series_key(ds: Any) -> str | None:
    """A short SHA-256 of the series UID: enough to tell two files of one series, and nothing to link it back."""
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    return hashlib.sha256(uid.encode()).hexdigest()[:16] if uid else None


def slice_key(ds: Any) -> str | None:
    """The image's place in its series, as precise as the file says it.

    ``p:`` the position along the slice normal (ImagePositionPatient on the normal of
    ImageOrientationPatient, mm to 0.01); else ``l:`` SliceLocation. Keys of different
    kinds are never compared. Instance numbers are not used: they count files, and two
    encodings of one image can carry two of them.
    """
    try:
        position = [float(v) for v in ds.get("ImagePositionPatient", None) or []]
        orientation = [float(v) for v in ds.get("ImageOrientationPatient", None) or []]
        if len(position) == 3 and len(orientation) == 6:
            normal = np.cross(orientation[:3], orientation[3:])
            return f"p:{float(np.dot(normal, position)):.2f}"
        location = ds.get("SliceLocation", None)
        if location not in (None, ""):
            return f"l:{float(location):.2f}"
    except (TypeError, ValueError):
        return None
    return None


def _tag(ds: Any, keyword: str) -> str | None:
    value = str(ds.get(keyword, "") or "").strip()
    return value[:64] or None


def _has_window(ds: Any) -> bool:
    return "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)


def _stretch(values: np.ndarray, percentile: bool = False) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.zeros(values.shape, np.uint8)
    lo, hi = np.percentile(finite, (0.5, 99.5)) if percentile else (finite.min(), finite.max())
    scaled = (np.clip(values, lo, hi) - lo) / (float(hi - lo) or 1.0) * 255.0
    return np.rint(np.nan_to_num(scaled)).astype(np.uint8)
