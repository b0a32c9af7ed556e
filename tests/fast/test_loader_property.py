"""Property: whatever bytes a file holds, the loader returns a correct RGB image or raises ImageError.

Three generators: random bytes under image names, valid images of random mode,
format and content (checked pixel for pixel where the format is lossless), and
valid images damaged by truncation or flipped bytes, which reach deep into the
decoders' error paths.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from embedlab.images import Decoded, ImageError, decode

# CI runs a quick sample; EMBEDLAB_FUZZ_EXAMPLES=5000 explores much further.
SETTINGS = settings(
    max_examples=int(os.environ.get("EMBEDLAB_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EXTENSIONS = ["png", "jpg", "gif", "tif", "bmp", "webp", "dcm", "ico", "jp2", "ppm", ""]

# mode -> formats that store it without loss (first) or at all
LOSSLESS = {
    "1": ["png", "tif", "bmp"],
    "L": ["png", "tif", "bmp", "webp", "ppm"],
    "LA": ["png", "tif"],
    "P": ["png", "gif", "tif", "bmp"],
    "RGB": ["png", "tif", "bmp", "ppm", "webp"],
    "RGBA": ["png", "tif"],
    "CMYK": ["tif"],
    "I;16": ["png", "tif"],
    "I": ["tif"],
    "F": ["tif"],
}
LOSSY = {"L": ["jpg"], "RGB": ["jpg", "jp2"], "CMYK": ["jpg"]}


def _decode_bytes(payload: bytes, ext: str) -> Decoded:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (f"f.{ext}" if ext else "f")
        path.write_bytes(payload)
        return decode(path)


def _check_rgb(decoded: Decoded) -> np.ndarray:
    arr = np.asarray(decoded.rgb)
    assert decoded.rgb.mode == "RGB"
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.size > 0
    return arr


def _loader_contract(payload: bytes, ext: str) -> np.ndarray | None:
    """The property itself: an RGB uint8 image, or ImageError, and nothing else escapes."""
    try:
        decoded = _decode_bytes(payload, ext)
    except ImageError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    return _check_rgb(decoded)


@st.composite
def images(draw: st.DrawFn) -> tuple[Image.Image, str, bool]:
    mode = draw(st.sampled_from(sorted(LOSSLESS)))
    lossy = mode in LOSSY and draw(st.booleans())
    fmt = draw(st.sampled_from(LOSSY[mode] if lossy else LOSSLESS[mode]))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        elements = st.floats(-1e6, 1e6, width=32) if mode == "F" else st.integers(0, 65535)
        data = draw(arrays(dtype, (h, w), elements=elements))
        img = Image.fromarray(data)
        assert img.mode == mode
    else:
        rgba = draw(arrays(np.uint8, (h, w, 4)))
        img = Image.fromarray(rgba, mode="RGBA")
        img = img.convert("RGB").quantize(16) if mode == "P" else img.convert(mode)
    return img, fmt, lossy


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    kwargs = {"lossless": True} if fmt == "webp" else {}
    img.save(buf, format={"jpg": "JPEG", "tif": "TIFF", "jp2": "JPEG2000"}.get(fmt, fmt.upper()), **kwargs)
    return buf.getvalue()


def _expected_rgb(img: Image.Image) -> np.ndarray | None:
    """What a lossless round trip must give, for the modes where that is simple to state."""
    if img.mode in ("1", "L", "P", "RGB"):
        return np.asarray(img.convert("RGB"))
    if img.mode in ("LA", "RGBA"):  # composited on white
        rgba = np.asarray(img.convert("RGBA")).astype(np.float64)
        alpha = rgba[..., 3:] / 255.0
        return np.rint(rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return None


@SETTINGS
@given(payload=st.binary(max_size=2048), ext=st.sampled_from(EXTENSIONS))
def test_random_bytes_give_an_image_or_an_image_error(payload: bytes, ext: str) -> None:
    _loader_contract(payload, ext)


@SETTINGS
@given(payload=st.binary(min_size=4, max_size=1024), ext=st.sampled_from(EXTENSIONS))
def test_random_bytes_after_a_dicom_preamble(payload: bytes, ext: str) -> None:
    _loader_contract(bytes(128) + b"DICM" + payload, ext)


@SETTINGS
@given(case=images())
def test_valid_images_of_any_mode_decode_to_their_pixels(case: tuple[Image.Image, str, bool]) -> None:
    img, fmt, lossy = case
    arr = _loader_contract(_encode(img, fmt), fmt)
    assert arr is not None, "a valid image was refused"
    assert arr.shape[:2] == (img.height, img.width)
    want = _expected_rgb(img)
    if want is not None and not lossy:
        assert np.abs(arr.astype(np.int16) - want).max() <= 1


@SETTINGS
@given(
    case=images(),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 255)), max_size=6),
)
def test_damaged_images_give_an_image_or_an_image_error(
    case: tuple[Image.Image, str, bool], cut: float, flips: list[tuple[float, int]]
) -> None:
    img, fmt, _ = case
    data = bytearray(_encode(img, fmt))
    for where, xor in flips:
        data[int(where * (len(data) - 1))] ^= xor
    _loader_contract(bytes(data[: max(1, int(cut * len(data)))]), fmt)
