"""Near-duplicate transforms: the edits a collection picks up in real life.

Used to plant duplicates in the sample assets (scripts/make_assets.py) and by
`embedlab calibrate`, which applies them to indexed images to measure how
similar true variants score against distinct images.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import ExifTags, Image, ImageEnhance, ImageFilter

SaveKwargs = dict[str, Any]
Variant = Callable[[Image.Image], tuple[Image.Image, SaveKwargs]]

# Each variant maps a decoded image to (new image, save kwargs). An empty kwargs dict
# means "encode like the original"; a "format" key forces that encoding.


def half(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Resize to 50 % with Lanczos."""
    return img.resize((max(1, img.width // 2), max(1, img.height // 2)), Image.Resampling.LANCZOS), {}


def jpeg35(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Re-encode as JPEG quality 35."""
    return img, {"format": "JPEG", "quality": 35}


def half_jpeg60(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Resize to 50 % and encode as JPEG quality 60."""
    return half(img)[0], {"format": "JPEG", "quality": 60}


def crop6(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Crop 6 % off every side (no resize back)."""
    dx, dy = round(img.width * 0.06), round(img.height * 0.06)
    return img.crop((dx, dy, img.width - dx, img.height - dy)), {}


def rot4(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Rotate 4 degrees counter-clockwise, same canvas (black corners)."""
    return img.rotate(4, resample=Image.Resampling.BICUBIC, expand=False), {}


def blur15(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Gaussian blur, radius 1.5."""
    return img.filter(ImageFilter.GaussianBlur(1.5)), {}


def bright12(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Brightness x1.2."""
    return ImageEnhance.Brightness(img).enhance(1.2), {}


def gray(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Convert to 8-bit grayscale."""
    return img.convert("L"), {}


def png16(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Same (grayscale) pixels as a 16-bit PNG, values x257."""
    arr = np.asarray(img.convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(arr), {"format": "PNG"}


def cmyk(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Same pixels as a CMYK JPEG (quality 90)."""
    return img.convert("RGB").convert("CMYK"), {"format": "JPEG", "quality": 90}


def palette(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Same pixels quantized to a 256-colour palette PNG."""
    return img.quantize(colors=256), {"format": "PNG"}


def rgba(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Same pixels as an RGBA PNG with an opaque alpha channel."""
    return img.convert("RGBA"), {"format": "PNG"}


def exif_rot(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Pixels stored rotated 90 degrees CCW with EXIF Orientation=6, so EXIF-aware viewers show the original."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    return img.transpose(Image.Transpose.ROTATE_90), {"format": "JPEG", "quality": 90, "exif": exif.tobytes()}


VARIANTS: dict[str, Variant] = {
    "half": half,
    "jpeg35": jpeg35,
    "half_jpeg60": half_jpeg60,
    "crop6": crop6,
    "rot4": rot4,
    "blur15": blur15,
    "bright12": bright12,
    "gray": gray,
    "png16": png16,
    "cmyk": cmyk,
    "palette": palette,
    "rgba": rgba,
    "exif_rot": exif_rot,
}


def apply_variant(img: Image.Image, spec: str) -> tuple[Image.Image, SaveKwargs]:
    """Apply a variant spec such as ``"crop6+jpeg35"`` left to right; later save kwargs win."""
    kwargs: SaveKwargs = {}
    for name in spec.split("+"):
        img, extra = VARIANTS[name](img)
        kwargs.update(extra)
    return img, kwargs


def encode_decode(img: Image.Image, kwargs: SaveKwargs) -> Image.Image:
    """Round-trip through the encoder a variant asks for, as a saved file would."""
    fmt = kwargs.get("format", "PNG")
    buf = io.BytesIO()
    img.save(buf, **{**kwargs, "format": fmt})
    buf.seek(0)
    with Image.open(buf) as out:
        out.load()
        return out.copy()
