"""The pixel channel on real pictures: one picture edited agrees on its detail, a look-alike only on its outline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from embedlab import evidence
from embedlab.duplicates import Verifier


def _grey(picture: np.ndarray, side: int = 128) -> np.ndarray:
    return np.asarray(Image.fromarray(picture).convert("L").resize((side, side)), dtype=np.float64)


def _blur(grey: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(grey.astype(np.uint8)).filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float64)


def _picture(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")


def _noisy(picture: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    pixels = np.asarray(picture, dtype=np.float64)
    noise = np.random.default_rng(seed).normal(0.0, sigma, pixels.shape)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def test_a_noisy_copy_agrees_on_detail_and_a_look_alike_does_not() -> None:
    # A look-alike: the original's broad light and dark layout, another picture's fine detail
    # (what two shirts of one catalogue, or two nearby slices of one scan, have in common).
    camera, grass = _grey(data.camera()), _grey(data.grass())
    broad = _blur(camera, 6.0)
    original = _picture(camera)
    copy = _noisy(original, 12.0)
    look_alike = _picture(broad + 1.5 * (grass - _blur(grass, 6.0)))
    ev = [evidence.compute(p) for p in (original, copy, look_alike)]
    verifier = Verifier(ev)
    same = verifier.pair(0, 1, 0.9)
    other = verifier.pair(0, 2, 0.9)
    assert same is not None and other is not None
    # Both agree on the whole picture's grey levels ...
    assert min(same.pixel, other.pixel) > 0.6
    # ... only the copy agrees on what is inside it.
    assert same.detail > 0.8 > 0.5 > other.detail
    assert verifier.link(0, 1, 0.9).score > verifier.link(0, 2, 0.9).score
    assert verifier.link(0, 2, 0.9).score < 0.5


def test_the_detail_channel_of_a_flat_picture_is_empty() -> None:
    from embedlab.verify import normalised_thumb

    channels, flat = normalised_thumb(np.full((64, 64), 128, dtype=np.uint8))
    assert flat and channels.shape == (3, 64, 64) and not channels.any()
    channels, flat = normalised_thumb(np.asarray(Image.fromarray(data.camera()).resize((64, 64))))
    assert not flat and np.allclose(np.linalg.norm(channels.reshape(3, -1), axis=1), 1.0, atol=1e-5)


def test_a_noisy_copy_of_a_tiny_picture_is_verified_on_its_pixels_and_a_tiny_look_alike_is_not() -> None:
    # 28 px pictures (a Fashion-MNIST item's size): below the thumbnail's side, so the size term alone
    # would ask their copies for an agreement that noise never leaves them.
    from dataclasses import replace

    from embedlab.duplicates import MODEL

    astronaut, grass = _grey(data.astronaut(), 28), _grey(data.grass(), 28)
    original = _picture(astronaut)
    copy = _noisy(original, 25.0)
    look_alike = _picture(_blur(astronaut, 3.0) + 1.5 * (grass - _blur(grass, 3.0)))
    verifier = Verifier([evidence.compute(p) for p in (original, copy, look_alike)])
    same, other = verifier.pair(0, 1, 0.8), verifier.pair(0, 2, 0.8)
    assert same is not None and other is not None and same.side == 28
    assert min(same.pixel, same.detail) > 0.95 and other.detail < 0.5
    assert same.pixel_features()[2] > 0.0 == other.pixel_features()[2]  # only the copy passes TINY_AGREEMENT
    # The pixel channel alone verifies the copy (keypoints on a 28 px picture are few) ...
    assert MODEL.pixel(same.pixel_features()[None])[0] >= 0.92
    assert verifier.link(0, 2, 0.8).score < 0.5
    # ... and the same agreement on a large picture gets no such credit: its detail is its own.
    large = replace(same, side=256)
    assert large.pixel_features()[2] == 0.0 and MODEL.pixel(large.pixel_features()[None])[0] < 0.92


def _pasted(picture: Image.Image, scale: float, where: tuple[int, int], seed: int = 0) -> Image.Image:
    """``picture`` at its own pixel scale inside a larger canvas: a vertical colour ramp with a few discs."""
    from PIL import ImageDraw

    width, height = round(picture.width * scale), round(picture.height * scale)
    ramp = np.linspace(40.0, 200.0, height)[:, None, None] * np.array([1.0, 0.8, 0.6])
    canvas = Image.fromarray(np.repeat(ramp, width, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        x, y, r = (int(v) for v in rng.integers(0, min(width, height), size=3) // (1, 1, 8))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(230, 60, 60))
    canvas.paste(picture.convert("RGB"), where)
    return canvas


def test_a_small_picture_pasted_into_a_canvas_is_found_inside_it_and_a_look_alike_is_not() -> None:
    from embedlab.verify import inset_agreement

    # Two 40 px faces of one size: a different face in the same canvas is the look-alike.
    face = Image.fromarray(data.astronaut()).crop((150, 30, 330, 210)).resize((40, 40), Image.Resampling.BOX)
    other = Image.fromarray(data.astronaut()).crop((0, 250, 180, 430)).resize((40, 40), Image.Resampling.BOX)
    for scale, where in ((2.0, (20, 10)), (1.6, (10, 12)), (1.5, (7, 3))):
        canvas = _pasted(face, scale, where)
        ev = [evidence.compute(p) for p in (face, canvas, other)]
        assert inset_agreement(ev[0], ev[1]) > 0.9  # either order: the smaller is looked for in the larger
        assert inset_agreement(ev[1], ev[0]) == inset_agreement(ev[0], ev[1])
        assert inset_agreement(ev[2], ev[1]) < 0.5
        assert inset_agreement(ev[0], ev[2]) == -1.0  # one size: nothing to look inside (the pixel channel's case)
        verifier = Verifier(ev)
        assert verifier.link(0, 1, 0.6).score >= 0.92 > 0.5 > verifier.link(1, 2, 0.6).score


def test_a_turned_noisy_copy_of_a_tiny_picture_is_proposed_by_its_thumbnail() -> None:
    from embedlab.duplicates import thumbnail_pairs
    from embedlab.verify import coarse_thumbs

    # 28 px crops of real photos: the vectors of such pictures are unreliable proposers.
    crops = [
        Image.fromarray(picture).convert("RGB").resize((28, 28), Image.Resampling.BOX)
        for picture in (data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera())
    ]
    turned = _noisy(crops[1].rotate(90), 10.0)
    pictures = [*crops, turned]
    grey = coarse_thumbs(np.stack([evidence.compute(p).thumb for p in pictures]))[0][:, 1]
    pairs = {(a, b): (ncc, rank) for a, b, ncc, rank in thumbnail_pairs(grey, k=1)}
    assert (1, 5) in pairs and pairs[(1, 5)][0] > 0.9 and pairs[(1, 5)][1] == 0
    # each picture's one nearest is proposed only at or above the floor, and never itself
    assert all(a < b and ncc >= 0.6 for (a, b), (ncc, _) in pairs.items())
    verifier = Verifier([evidence.compute(p) for p in pictures])
    assert verifier.link(1, 5, 0.3).score >= 0.92


def test_a_small_picture_turned_by_a_few_degrees_is_found_inside_its_turned_canvas() -> None:
    from embedlab.verify import inset_agreement

    face = Image.fromarray(data.astronaut()).crop((150, 30, 330, 210)).resize((40, 40), Image.Resampling.BOX)
    other = Image.fromarray(data.astronaut()).crop((0, 250, 180, 430)).resize((40, 40), Image.Resampling.BOX)
    for angle in (-12.0, 12.0):
        turned = face.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        ev = [evidence.compute(p) for p in (face, turned, other)]
        # Unturned, the face is not found at all (no match reaches INSET_PEAK); turned back, it agrees.
        assert inset_agreement(ev[0], ev[1]) > 0.8
        assert inset_agreement(ev[2], ev[1]) < 0.5
        verifier = Verifier(ev)
        assert verifier.link(0, 1, 0.6).score >= 0.92 > 0.5 > verifier.link(1, 2, 0.6).score


def test_a_picture_shipped_at_another_aspect_ratio_is_found_as_the_other_cut_to_its_shape() -> None:
    from embedlab.verify import inset_agreement

    # A wallpaper at 16:9 and at 4:3: the 4:3 one is the wide one with its sides cut, resized.
    wide = Image.fromarray(data.coffee()).resize((640, 360), Image.Resampling.BOX)
    cut = wide.crop((80, 0, 560, 360)).resize((400, 300), Image.Resampling.BOX)
    other = Image.fromarray(data.chelsea()).resize((400, 300), Image.Resampling.BOX)
    ev = [evidence.compute(p) for p in (wide, cut, other)]
    assert inset_agreement(ev[0], ev[1]) > 0.95 and inset_agreement(ev[1], ev[0]) == inset_agreement(ev[0], ev[1])
    assert inset_agreement(ev[0], ev[2]) < 0.5
    assert inset_agreement(ev[1], ev[2]) == -1.0  # one shape: nothing to cut (the pixel channel's case)


def test_thumbnail_ranks_by_counting_levels_equal_ranks_by_sorting() -> None:
    from embedlab.verify import normalised_thumb

    rng = np.random.default_rng(0)
    for levels in (2, 17, 256):
        thumb = rng.integers(0, levels, (64, 64)).astype(np.uint8)
        counted, _ = normalised_thumb(thumb)  # 8-bit: counted
        sorted_, _ = normalised_thumb(thumb.astype(np.float64))  # any other type: sorted
        assert np.array_equal(counted, sorted_)


def test_a_large_collection_fits_fewer_keypoints_on_fewer_candidates() -> None:
    from embedlab.analysis import fit_budget
    from embedlab.duplicates import LARGE_BUDGET, LARGE_COLLECTION, FitBudget

    assert fit_budget(LARGE_COLLECTION) == FitBudget() and fit_budget(LARGE_COLLECTION + 1) == LARGE_BUDGET
    assert LARGE_BUDGET.rank < FitBudget().rank and LARGE_BUDGET.keypoints < FitBudget().keypoints
    # A cropped copy is proved by its keypoints: at rank 3 the small budget does not fit it, the default does.
    photo = Image.fromarray(data.astronaut())
    crop = photo.crop((60, 40, 460, 440)).resize((300, 300), Image.Resampling.BICUBIC)
    ev = [evidence.compute(p) for p in (photo, crop)]
    assert Verifier(ev).measure_all([(0, 1, 0.7, 3)])[0].inliers > 0  # type: ignore[union-attr]
    assert Verifier(ev, budget=LARGE_BUDGET).measure_all([(0, 1, 0.7, 3)])[0].inliers == 0  # type: ignore[union-attr]


def test_the_coarse_pass_thumbnail_is_the_full_normalisation_brought_to_16_px() -> None:
    # The first pass compares 16 px forms made straight from the 8-bit levels; they must be what
    # the full normalisation (ranks and grey levels at 64 px) gives averaged down and normalised
    # again, or the first pass would rule out pairs the full comparison keeps.
    from embedlab.verify import COARSE_SIDE, coarse_thumbs, normalised_thumb

    rng = np.random.default_rng(0)
    pictures = [data.camera(), data.coins(), data.astronaut(), data.checkerboard(), np.full((64, 64), 9, np.uint8)]
    thumbs = [np.asarray(_picture(_grey(p, 64)).convert("L")) for p in pictures]
    thumbs += [np.clip(rng.normal(128, sigma, (64, 64)), 0, 255).astype(np.uint8) for sigma in (1.5, 2.5, 40.0)]
    small, flat = coarse_thumbs(np.stack(thumbs))
    assert flat.tolist() == [False, False, False, False, True, True, False, False]
    for thumb, got, is_flat in zip(thumbs, small, flat, strict=True):
        full, full_flat = normalised_thumb(thumb)
        assert is_flat == full_flat
        step = thumb.shape[0] // COARSE_SIDE
        pooled = full[:2].reshape(2, COARSE_SIDE, step, COARSE_SIDE, step).mean(axis=(2, 4)).reshape(2, -1)
        pooled -= pooled.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        expected = np.where(norms > 1e-9, pooled / np.maximum(norms, 1e-12), 0.0)
        assert np.allclose(got.reshape(2, -1), expected, atol=1e-6)
        assert is_flat == (not got.any())
    # In batches of any size, the same values.
    one_by_one = np.concatenate([coarse_thumbs(t[None])[0] for t in thumbs])
    assert np.array_equal(one_by_one, small)


@pytest.mark.parametrize("engine", ["faiss", "opencv"])
def test_descriptor_matches_are_the_ratio_test_survivors_of_opencvs_matcher(
    engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fit takes its matches from faiss's Hamming k-NN where installed, else from OpenCV's
    # arrays, never from BFMatcher's match objects: either way they must be the same matches in
    # the same order, or the fits (and every verdict) would depend on what is installed.
    import cv2

    from embedlab import verify
    from embedlab.verify import RATIO_TEST, ratio_matches

    if engine == "opencv":
        monkeypatch.setattr(verify, "faiss_or_none", lambda: None)
    else:
        assert verify.faiss_or_none() is not None  # a runtime requirement: the fast path is the one tested

    photo = Image.fromarray(data.astronaut())
    crop = photo.crop((60, 40, 460, 440)).rotate(7, resample=Image.Resampling.BICUBIC)
    a, b = (evidence.compute(p) for p in (photo, crop))
    knn = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(b.descriptors, a.descriptors, k=2)
    expected = [(m.queryIdx, m.trainIdx) for m, n in knn if m.distance < RATIO_TEST * n.distance]
    query, train = ratio_matches(b.descriptors, a.descriptors)
    assert len(expected) >= 20
    assert list(zip(query.tolist(), train.tolist(), strict=True)) == expected
