"""Shared fixtures: real photos from scikit-image, the real backbone, real indexes."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import skimage
from PIL import Image

from embedlab.cli import main

# One fresh model cache per test session (subprocess tests inherit it): the first
# model load converts, every later one, in this process or another, reads the cache.
_CACHE = tempfile.mkdtemp(prefix="embedlab-test-cache-")
atexit.register(shutil.rmtree, _CACHE, True)
os.environ["EMBEDLAB_CACHE"] = _CACHE
for _var in ("EMBEDLAB_RUNTIME", "EMBEDLAB_PRECISION"):
    os.environ.pop(_var, None)

if TYPE_CHECKING:  # the fast tier (tests/fast) must not import torch
    from embedlab.backbones import Backbone

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "coins", "horse", "moon", "brick", "grass", "retina")


def skimage_image(name: str) -> Image.Image:
    """A scikit-image sample photo, read from the package (never downloaded)."""
    path = next(SKIMAGE_DATA.glob(f"{name}.*"))
    with Image.open(path) as img:
        img.load()
        return img.copy()


def small(img: Image.Image, side: int = 192) -> Image.Image:
    img = img.copy()
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return img


def four_photos(folder: Path) -> Path:
    """Four distinct 128 px photos in ``folder`` (created): the small index most tests need."""
    folder.mkdir()
    for name in ("astronaut", "camera", "coffee", "coins"):
        small(skimage_image(name), 128).convert("RGB").save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="session")
def backbone() -> Backbone:
    from embedlab.backbones import load_backbone

    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten distinct photos plus one near-duplicate and one byte-identical copy."""
    folder = tmp_path_factory.mktemp("photos")
    for name in PHOTOS:
        small(skimage_image(name)).convert("RGB").save(folder / f"{name}.png")
    chelsea = Image.open(folder / "chelsea.png")
    chelsea.resize((chelsea.width // 2, chelsea.height // 2), Image.Resampling.BILINEAR).save(
        folder / "chelsea_half.jpg", quality=90
    )
    shutil.copyfile(folder / "coffee.png", folder / "sub_coffee_copy.png")
    return folder


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run inside an empty folder so relative paths look as a user would type them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def built_index(tmp_path_factory: pytest.TempPathFactory, photo_dir: Path) -> Iterator[Path]:
    """One real index of ``photo_dir``, built through the CLI, shared read-only."""
    out = tmp_path_factory.mktemp("index")
    assert main(["-q", "embed", "--images-dir", str(photo_dir), "--out", str(out)]) == 0
    yield out


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
