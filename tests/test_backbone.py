"""The default backbone is really the ImageNet model, and its vectors are stable."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from embedlab.backbones import Backbone, BackboneError, load_backbone

from .conftest import PHOTOS, skimage_image, small

ESPRESSO = 967  # ImageNet-1k class index


def test_packaged_weights_classify_coffee_as_espresso(backbone: Backbone) -> None:
    batch = np.stack([backbone.preprocess(skimage_image("coffee").convert("RGB"))])
    logits = backbone.logits(batch)[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    assert int(probs.argmax()) == ESPRESSO
    assert probs[ESPRESSO] > 0.9


@pytest.mark.parametrize(("recipe", "dim"), [("hybrid", 1280 + 64 + 2 + 1), ("plain", 1280)])
def test_embedding_shape_dtype_and_norm(recipe: str, dim: int) -> None:
    model = load_backbone("efficientnet_lite0", recipe=recipe)
    vecs = model.embed([small(skimage_image(n)).convert("RGB") for n in PHOTOS[:3]])
    assert vecs.shape == (3, dim) and model.dim == dim
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)


def test_vectors_are_bit_identical_across_runs_and_batchings(backbone: Backbone) -> None:
    images = [small(skimage_image(n)).convert("RGB") for n in PHOTOS[:6]]
    together = backbone.embed(images)
    again = load_backbone("efficientnet_lite0").embed(images)
    one_by_one = np.concatenate([backbone.embed([im]) for im in images])
    tail = backbone.embed(images[2:])
    assert together.tobytes() == again.tobytes()
    assert together.tobytes() == one_by_one.tobytes()
    assert together[2:].tobytes() == tail.tobytes()


def test_distinct_photos_are_not_near_duplicates(backbone: Backbone) -> None:
    vecs = backbone.embed([small(skimage_image(n)).convert("RGB") for n in PHOTOS])
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, 0.0)
    assert sims.max() < 0.85


def test_unknown_backbone_and_missing_weights_are_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BackboneError, match="unknown backbone"):
        load_backbone("vit_huge")
    with pytest.raises(BackboneError, match="not found"):
        load_backbone("resnet18", tmp_path / "nope.pth")
    bad = tmp_path / "resnet18-bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot read weights"):
        load_backbone("resnet18", bad)


def test_preprocess_handles_extreme_aspect_without_huge_intermediate(backbone: Backbone) -> None:
    strip = Image.new("RGB", (20000, 8), (200, 30, 30))
    arr = backbone.preprocess(strip)
    assert arr.shape == (3, 224, 224)
    assert np.isfinite(arr).all()
