"""Decoding memory (issue 14, item 7): small files holding huge pictures stay within a budget.

Peaks are measured in a fresh process (VmHWM, so nothing of this test process counts).
Before the budget, the 6000x6000 16-bit grey PNG of the first test peaked at about 840 MB
above the baseline (int64 copies of the full picture); bench/decode_memory.py measures the
14000 px case of the issue.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embedlab import images
from embedlab.cli import main
from embedlab.images import DEFAULT_DECODE_BUDGET_MB, ImageError, decode, set_decode_budget

from .conftest import skimage_image, small

ROOT = Path(__file__).resolve().parent.parent
PEAK = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from embedlab.images import decode
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) // 1024
base = hwm()
d = decode(sys.argv[2])
print(json.dumps({"peak_mib": hwm() - base, "size": [d.width, d.height], "rgb": list(d.rgb.size),
                  "left": d.rgb.getpixel((0, 0)), "right": d.rgb.getpixel((d.rgb.width - 1, 0))}))
"""


def _grey16_ramp(path: Path, side: int) -> None:
    ramp = (np.arange(side, dtype=np.uint32) * 65535 // (side - 1)).astype(np.uint16)
    Image.fromarray(np.broadcast_to(ramp, (side, side)).copy()).save(path)  # uint16: mode I;16


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the peak")
def test_a_small_16_bit_png_of_a_huge_picture_decodes_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "ramp.png"
    _grey16_ramp(path, 6000)  # 36 MP, 72 MB as 16-bit pixels, a few hundred KB on disk
    assert path.stat().st_size < 1_000_000
    result = subprocess.run(
        [sys.executable, "-c", PEAK, str(ROOT), str(path)], capture_output=True, text=True, timeout=300, check=True
    )
    row = json.loads(result.stdout)
    assert row["size"] == [6000, 6000] and row["rgb"] == [2000, 2000]  # stored size is the file's
    assert row["left"] == [0, 0, 0] and row["right"][0] >= 250  # 16-bit levels kept, not clipped
    assert row["peak_mib"] < 250, row  # the 16-bit pixels once and a small reduced copy


@pytest.mark.parametrize("mode", ["I;16", "RGBA", "LA", "P", "PA", "1", "L_key", "F"])
def test_reduced_decoding_shows_the_same_picture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """With the reduction threshold lowered, every mode decodes (strip by strip where Pillow cannot reduce
    it) to the picture a full-size decode shows, shrunk: alpha on white, palettes as colours, 16-bit levels."""
    photo = small(skimage_image("astronaut"), 512).convert("RGB").resize((1200, 1200))
    if mode == "I;16":
        img = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    elif mode in ("RGBA", "LA"):
        rgba = photo.convert("RGBA")
        rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
        img = rgba.convert(mode)
    elif mode in ("P", "PA"):
        img = photo.quantize(64)
        if mode == "PA":
            img = img.convert("PA")
    elif mode == "1":
        img = photo.convert("1")
    elif mode == "L_key":
        img = photo.convert("L")
        img.info["transparency"] = 0
    else:
        img = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.float32) / 7.0)
    path = tmp_path / ("picture.tif" if mode in ("PA", "F") else "picture.png")
    img.save(path, **({"transparency": 0} if mode == "L_key" else {}))
    full = decode(path).rgb
    monkeypatch.setattr(images, "REDUCE_ABOVE_BYTES", 1 << 10)
    monkeypatch.setattr(images, "REDUCE_TO_PIXELS", 100_000)  # 1200 px: reduced by 4
    reduced = decode(path)
    assert (reduced.width, reduced.height) == (1200, 1200) and reduced.rgb.size == (300, 300)
    expected = np.asarray(full.reduce(4), dtype=np.float64)
    assert np.abs(np.asarray(reduced.rgb, dtype=np.float64) - expected).mean() < 3.0


def test_exif_orientation_is_applied_to_a_reduced_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = small(skimage_image("astronaut"), 512).convert("RGB").resize((1200, 1024))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to view
    img.save(tmp_path / "turned.png", exif=exif)
    full = decode(tmp_path / "turned.png")
    monkeypatch.setattr(images, "REDUCE_ABOVE_BYTES", 1 << 10)
    monkeypatch.setattr(images, "REDUCE_TO_PIXELS", 60_000)  # reduced by 4 (the shorter side keeps 256)
    reduced = decode(tmp_path / "turned.png")
    assert (reduced.width, reduced.height) == (full.width, full.height) == (1024, 1200)
    assert reduced.rgb.size == (256, 300)
    assert np.abs(np.asarray(reduced.rgb, float) - np.asarray(full.rgb.reduce(4), float)).mean() < 3.0


def test_a_picture_above_the_decode_budget_is_a_per_file_error(work: Path) -> None:
    (work / "imgs").mkdir()
    _grey16_ramp(work / "imgs" / "huge.png", 6000)
    small(skimage_image("coffee"), 96).convert("RGB").save(work / "imgs" / "cup.png")
    try:
        with pytest.raises(ImageError, match="needs about"):
            set_decode_budget(64)
            decode(work / "imgs" / "huge.png")
        assert main(["-q", "embed", "--images-dir", "imgs", "--out", "index", "--decode-memory-mb", "64"]) == 0
    finally:
        set_decode_budget(DEFAULT_DECODE_BUDGET_MB)
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    rows = dict(conn.execute("SELECT path, coalesce(error, status) FROM images").fetchall())
    conn.close()
    assert rows["imgs/cup.png"] == "ok"
    assert rows["imgs/huge.png"].startswith("too large to decode: 6000x6000 I;16 needs about 190 MB, above the decode")
