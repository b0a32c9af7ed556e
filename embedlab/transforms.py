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
from PIL import ExifTags, Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

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


# -- the edits a same-picture judgement must see through (issue kinds of bench/dupset.py) --


def mirror(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Mirror left-right."""
    return ImageOps.mirror(img), {}


def rot90(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Rotate by a quarter turn (canvas turns with it)."""
    return img.transpose(Image.Transpose.ROTATE_90), {}


def rot180(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Rotate by a half turn."""
    return img.transpose(Image.Transpose.ROTATE_180), {}


def rot12(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Rotate 12 degrees, same canvas (black corners)."""
    return img.convert("RGB").rotate(12, resample=Image.Resampling.BICUBIC), {}


def crop20(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Crop 20 % off every side."""
    dx, dy = round(img.width * 0.2), round(img.height * 0.2)
    return img.crop((dx, dy, img.width - dx, img.height - dy)), {}


def pad(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Letterbox: black bars of 15 % of the height above and below."""
    bar = round(img.height * 0.15)
    out = Image.new("RGB", (img.width, img.height + 2 * bar))
    out.paste(img.convert("RGB"), (0, bar))
    return out, {}


def stretch(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Stretch the width by 1.3."""
    return img.resize((round(img.width * 1.3), img.height), Image.Resampling.BICUBIC), {}


def canvas(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """The picture at 60 % inside a larger grey window with a title bar."""
    small = img.convert("RGB").resize((max(1, img.width * 3 // 5), max(1, img.height * 3 // 5)))
    out = Image.new("RGB", img.size, (200, 200, 205))
    ImageDraw.Draw(out).rectangle((0, 0, img.width, max(2, img.height // 14)), fill=(40, 60, 120))
    out.paste(small, (img.width // 6, img.height // 4))
    return out, {}


def text(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """A caption drawn across the lower third."""
    out = img.convert("RGB")
    draw = ImageDraw.Draw(out)
    size = max(8, img.height // 10)
    draw.text((img.width // 10, img.height * 2 // 3), "SAMPLE 2026", fill=(255, 255, 0), font_size=size)
    return out, {}


def noise(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Gaussian noise, sigma 12 grey levels (fixed seed)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float64)
    noisy = arr + np.random.default_rng(0).normal(0.0, 12.0, arr.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), {}


def _gamma(img: Image.Image, g: float) -> Image.Image:
    return img.convert("RGB").point([round(255 * (v / 255) ** g) for v in range(256)] * 3)


def gamma06(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Gamma 0.6 (brighter mid-tones)."""
    return _gamma(img, 0.6), {}


def gamma16(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Gamma 1.6 (darker mid-tones)."""
    return _gamma(img, 1.6), {}


def jpeg15(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Re-encode as JPEG quality 15."""
    return img.convert("RGB"), {"format": "JPEG", "quality": 15}


def down20(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Downscale to 20 % and back up."""
    small = img.resize((max(1, img.width // 5), max(1, img.height // 5)), Image.Resampling.BILINEAR)
    return small.resize(img.size, Image.Resampling.BILINEAR), {}


def hue(img: Image.Image) -> tuple[Image.Image, SaveKwargs]:
    """Hue rotated by 60 degrees."""
    h, sat, val = img.convert("RGB").convert("HSV").split()
    h = h.point(lambda v: (v + 43) % 256)
    return Image.merge("HSV", (h, sat, val)).convert("RGB"), {}


EDITS: dict[str, Variant] = {
    "mirror": mirror,
    "rot90": rot90,
    "rot180": rot180,
    "rot12": rot12,
    "crop20": crop20,
    "pad": pad,
    "stretch": stretch,
    "canvas": canvas,
    "text": text,
    "noise": noise,
    "gamma06": gamma06,
    "gamma16": gamma16,
    "jpeg15": jpeg15,
    "down20": down20,
    "hue": hue,
}


def apply_variant(img: Image.Image, spec: str) -> tuple[Image.Image, SaveKwargs]:
    """Apply a variant spec such as ``"crop6+jpeg35"`` left to right; later save kwargs win."""
    kwargs: SaveKwargs = {}
    for name in spec.split("+"):
        img, extra = (VARIANTS | EDITS)[name](img)
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
