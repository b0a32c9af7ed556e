"""The hybrid recipe: a plain cosine whose value is the documented weighted mix."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from embedlab.backbones import Backbone, load_backbone
from embedlab.descriptor import RECIPES, layout_features
from embedlab.images import viewed_rgb
from embedlab.transforms import VARIANTS, apply_variant, encode_decode

from .conftest import skimage_image, small


@pytest.fixture(scope="module")
def plain() -> Backbone:
    return load_backbone("efficientnet_lite0", recipe="plain")


def test_score_is_the_documented_mix(backbone: Backbone, plain: Backbone) -> None:
    a, b = (small(skimage_image(n)).convert("RGB") for n in ("chelsea", "coffee"))
    recipe = RECIPES["hybrid"]
    cnn = plain.embed([a, b])
    la, lb = (layout_features(im, backbone.preprocess.crop_box(*im.size)) for im in (a, b))
    mix = (
        recipe.cnn * float(cnn[0] @ cnn[1])
        + recipe.layout * float(la[:-2] @ lb[:-2])
        + recipe.tone * float(la[-2:] @ lb[-2:])
    )
    hybrid = backbone.embed([a, b])
    assert float(hybrid[0] @ hybrid[1]) == pytest.approx((mix + recipe.offset) / (1 + recipe.offset), abs=1e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_planted_variant_scores_above_the_default_threshold(backbone: Backbone, variant: str) -> None:
    source = small(skimage_image("astronaut"), 256).convert("RGB")
    img, kwargs = apply_variant(source, variant)
    a, b = backbone.embed([source, viewed_rgb(encode_decode(img, kwargs))])
    assert float(a @ b) >= 0.92


def test_hard_negatives_score_below_the_default_threshold(backbone: Backbone, plain: Backbone) -> None:
    # Two different crops of one texture: pooled CNN features call them the same picture.
    brick = skimage_image("brick").convert("RGB")
    left, right = brick.crop((0, 0, 240, 240)), brick.crop((250, 250, 490, 490))
    p = plain.embed([left, right])
    h = backbone.embed([left, right])
    assert float(p[0] @ p[1]) > 0.88
    assert float(h[0] @ h[1]) < 0.92


def test_blank_white_and_blank_black_are_not_duplicates(backbone: Backbone) -> None:
    white, black = Image.new("RGB", (64, 64), "white"), Image.new("RGB", (64, 64), "black")
    w, b = backbone.embed([white, black])
    assert float(w @ b) < 0.92
    w2 = backbone.embed([Image.new("RGB", (96, 80), "white")])[0]
    assert float(w @ w2) > 0.99


def test_layout_is_blur_and_brightness_invariant_but_not_blind() -> None:
    img = small(skimage_image("camera")).convert("RGB")
    box = (0.0, 0.0, float(img.width), float(img.height))
    base = layout_features(img, box)[:-2]
    blurred = layout_features(img.filter(ImageFilter.GaussianBlur(1.5)), box)[:-2]
    coins = small(skimage_image("coins")).convert("RGB")
    other = layout_features(coins, (0.0, 0.0, float(coins.width), float(coins.height)))[:-2]
    assert float(base @ blurred) > 0.99
    assert float(base @ other) < 0.5
    assert np.isclose(np.linalg.norm(base), 1.0)
