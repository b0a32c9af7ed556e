"""DICOM files (CT, MR, US, ...) to display pixels, via pydicom when it is installed.

A DICOM image is not a picture until its stored values pass through the
modality LUT (rescale to HU and the like) and a display window; without them a
CT comes out as a flat grey or a white blob. The window used is the file's own
(VOI LUT / Window Center and Width) when present, else the 0.5-99.5 percentile
range, which is what a viewer's auto-window does.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import numpy as np
from PIL import Image

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})


def available() -> bool:
    """Whether pydicom is installed, without importing it (a quarter second every scan)."""
    return importlib.util.find_spec("pydicom") is not None


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """By extension only: the scan selects files by extension too, and sniffing
    every PNG and JPEG for the DICM marker would open each file twice."""
    return os.path.splitext(os.fspath(path))[1].lower() in DICOM_EXTENSIONS


def read_dicom(path: str | os.PathLike[str]) -> tuple[Image.Image, str]:
    """(8-bit RGB image of the first frame, mode description). Raises on anything unreadable."""
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ValueError("DICOM file holds no image (no PixelData)")
    pixels = ds.pixel_array  # YBR is converted to RGB by pydicom
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    if samples == 3:
        rgb = pixels if pixels.dtype == np.uint8 else _stretch(pixels.astype(np.float64))
        return Image.fromarray(np.ascontiguousarray(rgb), mode="RGB"), f"DICOM {photometric}"
    values = apply_modality_lut(pixels, ds)
    windowed = _has_window(ds)
    grey = apply_voi_lut(values, ds) if windowed else values
    grey8 = _stretch(np.asarray(grey, dtype=np.float64), percentile=not windowed)
    if photometric == "MONOCHROME1":  # 0 is white in this interpretation
        grey8 = 255 - grey8
    return Image.fromarray(grey8, mode="L").convert("RGB"), f"DICOM {photometric}"


def _has_window(ds: Any) -> bool:
    return "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds)


def _stretch(values: np.ndarray, percentile: bool = False) -> np.ndarray:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return np.zeros(values.shape, np.uint8)
    lo, hi = np.percentile(finite, (0.5, 99.5)) if percentile else (finite.min(), finite.max())
    scaled = (np.clip(values, lo, hi) - lo) / (float(hi - lo) or 1.0) * 255.0
    return np.rint(np.nan_to_num(scaled)).astype(np.uint8)
