"""Anomaly scoring on constructed vector sets and real pixels: density, look-alike groups, flags."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from embedlab import anomaly
from embedlab.analysis import analyze_vectors, neighbourhood
from embedlab.images import _bottom_band, _colourfulness, quality_metrics

from ..conftest import skimage_image, small, unit_rows

DIM = 64


def _blob(rng: np.random.Generator, n: int, spread: float, centre: np.ndarray | None = None) -> np.ndarray:
    if centre is None:
        centre = unit_rows(rng.normal(size=(1, DIM)))[0]
    return unit_rows(centre + spread * rng.normal(size=(n, DIM)))


def _rank_of(values: np.ndarray, i: int) -> int:
    return int((values > values[i]).sum())


def test_an_oddball_beside_a_dense_cluster_outranks_a_sparse_region() -> None:
    # 300 near-identical scans, 40 varied photos, and one item a little off the scans:
    # absolutely it is closer to its neighbours than any photo, but 3x farther than a scan is.
    rng = np.random.default_rng(0)
    scans = _blob(rng, 300, 0.03)
    photos = _blob(rng, 40, 0.065)
    oddball = _blob(rng, 1, 0.1, centre=scans.mean(axis=0) / np.linalg.norm(scans.mean(axis=0)))
    matrix = np.concatenate([scans, photos, oddball])
    hood = neighbourhood(matrix, 10, 2.0)
    plain = anomaly.mean_distance(hood.sim)
    ours = anomaly.isolation_scores(hood.index, hood.sim)
    assert _rank_of(plain, 340) >= 20  # the plain score puts many photos first
    assert _rank_of(ours, 340) == 0
    assert np.median(ours[:340]) < 1.2  # ordinary items of either density read about 1


def test_a_small_tight_group_far_from_everything_surfaces() -> None:
    rng = np.random.default_rng(1)
    normal = np.concatenate([_blob(rng, 100, 0.1) for _ in range(5)])
    blanks = _blob(rng, 3, 0.002)  # three blanks: each other's nearest neighbours
    hood = neighbourhood(np.concatenate([normal, blanks]), 10, 2.0)
    ours = anomaly.isolation_scores(hood.index, hood.sim)
    assert sorted(_rank_of(ours, i) for i in range(500, 503)) == [0, 1, 2]
    assert anomaly.percentiles(ours)[500:].min() > 99


def test_percentiles() -> None:
    assert anomaly.percentiles(np.array([3.0, 1.0, 2.0, 2.0])).tolist() == [100.0, 25.0, 75.0, 75.0]


def _photo_metrics(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(2)
    return [
        {
            "width": 640,
            "height": 480,
            "entropy": 7.0 + rng.uniform(0, 0.5),
            "contrast": 0.2,
            "sharpness": 400.0,
            "brightness": 0.45,
            "mode": "RGB",
            "colourfulness": 0.15,
            "band": 0.0,
        }
        for _ in range(n)
    ]


def test_a_flag_counts_only_when_it_is_rare() -> None:
    rng = np.random.default_rng(3)
    matrix = unit_rows(rng.normal(size=(200, 16)))
    hood = neighbourhood(matrix, 10, 2.0)
    metrics = _photo_metrics(200)
    metrics[7] = {**metrics[7], "contrast": 0.0, "entropy": 0.0, "sharpness": 0.0}
    found = anomaly.score(hood.index, hood.sim, metrics)
    assert found.flags[7] == ["blank"] and found.counted[7] == ["blank"]
    assert found.flag_bonus[7] == anomaly.BROKEN_WEIGHT and np.count_nonzero(found.flag_bonus) == 1
    unflagged = anomaly.score(hood.index, hood.sim, _photo_metrics(200))
    assert found.score[7] - unflagged.score[7] >= anomaly.BROKEN_WEIGHT - 1e-9  # the flag's weight, in z units

    flat = {"contrast": 0.0, "entropy": 0.0, "sharpness": 0.0}
    common = [{**m, **flat} if i % 5 == 0 else m for i, m in enumerate(_photo_metrics(200))]  # 20 % are blank
    found = anomaly.score(hood.index, hood.sim, common)
    assert found.flags[0] == ["blank"] and found.counted[0] == []
    assert not found.flag_bonus.any()
    assert "too common" in found.reasons[0][0]


def test_flags_are_judged_against_the_collection() -> None:
    metrics = _photo_metrics(100)
    metrics[1] = {**metrics[1], "width": 8, "height": 8}
    metrics[2] = {**metrics[2], "width": 3000, "height": 400}
    metrics[3] = {**metrics[3], "colourfulness": 0.0}
    metrics[4] = {**metrics[4], "band": 0.4}
    metrics[5] = {**metrics[5], "brightness": 0.02, "contrast": 0.05}
    metrics[6] = {**metrics[6], "entropy": 1.0}
    metrics[7] = {**metrics[7], "sharpness": 0.5}
    table, _ = anomaly.flag_table(metrics)
    held = {name: np.flatnonzero(v).tolist() for name, v in table.items() if v.any()}
    assert held == {
        "odd_size": [1],
        "odd_aspect": [2],
        "grayscale_among_colour": [3],
        "partially_decoded": [4],
        "dark": [5],
        "low_information": [6],
        "blurry": [7],
    }
    strips = [{**m, "width": 32, "height": 320} if i % 3 else m for i, m in enumerate(metrics)]
    assert not anomaly.flag_table(strips)[0]["odd_aspect"].any()  # a second common shape is not odd
    greys = [{**m, "colourfulness": 0.0, "mode": "L"} for m in metrics]
    table, _ = anomaly.flag_table(greys)
    assert not table["grayscale_among_colour"].any()  # a greyscale collection has nothing "among colour"
    assert not anomaly.flag_table([None, {}])[0]["blank"].any()  # nothing stored: no flag


def test_low_contrast_textures_are_not_blank_but_flat_images_are() -> None:
    rng = np.random.default_rng(4)
    rows = []
    for spread in (0.01, 0.02, 0.04):  # paper, fabric: grey-level std of 1-4 %
        texture = 180 + spread * 255 * rng.standard_normal((256, 256))
        rows.append(quality_metrics(Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8)).convert("RGB")))
    for colour in ((255, 255, 255), (0, 0, 0), (200, 30, 120)):
        flat = Image.new("RGB", (256, 256), colour)
        flat.save(buf := __import__("io").BytesIO(), "JPEG", quality=75)
        rows.append(quality_metrics(Image.open(buf).convert("RGB")))
    table, _ = anomaly.flag_table(rows)
    assert table["blank"].tolist() == [False, False, False, True, True, True]


def test_partially_decoded_band_and_colourfulness_from_pixels() -> None:
    photo = np.asarray(small(skimage_image("astronaut"), 256).convert("RGB")).copy()
    cut = photo.copy()
    cut[150:] = 128  # pixel data stopped at row 150: the rest is one flat grey
    ct_like = np.zeros((256, 256, 3), dtype=np.uint8)
    ct_like[40:200, 60:200] = np.asarray(small(skimage_image("camera"), 160).convert("RGB"))[:160, :140]
    whole, partial, background = (quality_metrics(Image.fromarray(a)) for a in (photo, cut, ct_like))
    assert whole["band"] == 0.0
    assert 0.38 < partial["band"] < 0.44
    assert background["band"] == 0.0  # black all around: background, not a cut
    assert whole["colourfulness"] > 0.05 and background["colourfulness"] == 0.0


def test_anomaly_details_say_why() -> None:
    rng = np.random.default_rng(5)
    matrix = unit_rows(rng.normal(size=(60, 16))).astype(np.float32)
    paths = [[f"p{i:02d}.png"] for i in range(60)]
    quality = {p[0]: m for p, m in zip(paths, _photo_metrics(60), strict=True)}
    quality["p09.png"] = {**quality["p09.png"], "contrast": 0.0, "entropy": 0.0, "sharpness": 0.0}
    result = analyze_vectors(matrix, paths, threshold=0.99, anomaly_top=3, k=5, quality=quality)
    first = result["anomaly_details"][0]
    assert result["anomalies"][0] == first["path"] == "p09.png"
    assert first["flags"] == ["blank"] and first["reasons"][0].startswith("blank:")
    assert 0 <= first["isolation_percentile"] <= 100 and "percentile" in first["reasons"][-1]
    assert {"path", "score", "isolation", "flags", "neighbours"} <= set(first)
    assert len(first["neighbours"]) == 5


def test_pixel_statistics_tell_noise_bars_and_gradients_from_a_photo() -> None:
    rng = np.random.default_rng(5)
    photo = small(skimage_image("astronaut"), 256).convert("RGB")
    noise = Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).convert("RGB")
    bars = np.zeros((192, 256, 3), dtype=np.uint8)
    for i, colour in enumerate([(192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0), (192, 0, 0), (0, 0, 192)]):
        bars[:, i * 43 : (i + 1) * 43] = colour
    hue = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (192, 1))
    full = np.full_like(hue, 255)
    rainbow = Image.fromarray(np.stack([hue, full, full], axis=2), "HSV").convert("RGB")
    p, n, b, r = (quality_metrics(im) for im in (photo, noise, Image.fromarray(bars), rainbow))
    assert p["correlation"] > 0.8 and n["correlation"] < 0.1  # neighbouring pixels unrelated
    assert b["colours"] <= 6 and b["top_colours"] > 0.6 and p["colours"] > 50
    assert b["flat"] > 0.9 and n["flat"] < 0.05 and n["edges"] > 0.5
    assert r["saturation"] > 0.95 and p["saturation"] < 0.6


def test_unusual_statistics_surface_an_image_made_unlike_the_rest() -> None:
    rng = np.random.default_rng(6)
    metrics = _photo_metrics(200)
    for m in metrics:
        m.update(
            saturation=rng.uniform(0.2, 0.5),
            correlation=rng.uniform(0.85, 0.97),
            edges=rng.uniform(0.1, 0.3),
            flat=rng.uniform(0.1, 0.4),
            top_colours=rng.uniform(0.1, 0.3),
            colours=float(rng.integers(100, 400)),
        )
    metrics[7] = {**metrics[7], "saturation": 1.0, "colours": 4.0, "top_colours": 0.95, "flat": 0.95}
    isolation, _ = anomaly.statistics_isolation(metrics, 10)
    assert int(np.argmax(isolation)) == 7 and isolation[7] > anomaly.STATISTICS_CUT
    assert abs(float(np.median(isolation)) - 1.0) < 0.05
    table, _ = anomaly.flag_table(metrics, isolation)
    assert np.flatnonzero(table["unusual_statistics"]).tolist() == [7]
    found = anomaly.score(np.zeros((200, 0), dtype=np.int64), np.zeros((200, 0)), metrics)
    assert int(np.argmax(found.score)) == 7
    assert "saturation high" in found.reasons[7][0] or "colours low" in found.reasons[7][0]
    older = [{k: v for k, v in m.items() if k not in anomaly.STATISTICS} for m in metrics]
    assert (anomaly.statistics_isolation(older, 10)[0] == 1.0).all()  # not stored yet: ordinary


def test_light_low_contrast_textures_are_not_light_but_an_overexposed_picture_is() -> None:
    rng = np.random.default_rng(7)
    names = ("astronaut", "camera", "coffee", "chelsea")
    rows = [quality_metrics(small(skimage_image(name), 256).convert("RGB")) for name in names] * 3
    for spread in (0.01, 0.02, 0.03):  # light paper: every pixel light, fine grain everywhere
        paper = 230 + spread * 255 * rng.standard_normal((256, 256))
        rows.append(quality_metrics(Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).convert("RGB")))
    washed = np.asarray(small(skimage_image("astronaut"), 256).convert("L"), dtype=np.float64)
    rows.append(quality_metrics(Image.fromarray((225 + washed / 255 * 30).astype(np.uint8)).convert("RGB")))
    table, _ = anomaly.flag_table(rows)
    assert np.flatnonzero(table["light"]).tolist() == [15]


def _band_by_full_frame(rgb: np.ndarray, levels: float = 2.0) -> float:
    """The band rule over every pixel at once: the reference the row-by-row scan must match."""
    colour = rgb[-1].astype(np.float64).mean(axis=0)
    flat = np.abs(rgb.astype(np.float64) - colour).max(axis=2) <= levels
    rows = flat.all(axis=1)
    if not rows[-1] or rows.all():
        return 0.0
    top = int(np.flatnonzero(~rows)[-1]) + 1
    border = np.concatenate([flat[0], flat[:top, 0], flat[:top, -1]])
    return 0.0 if border.mean() > 0.5 else (rgb.shape[0] - top) / rgb.shape[0]


def test_band_scan_and_integer_colourfulness_match_the_full_frame_formulas() -> None:
    photo = np.asarray(small(skimage_image("astronaut"), 256).convert("RGB")).copy()
    cases = [photo]
    for start in (255, 250, 240, 200, 120, 9, 1):  # bands of 1 to 255 rows: every step of the bottom-up scan
        cut = photo.copy()
        cut[start:] = (128, 128, 128)
        cases.append(cut)
    framed = np.zeros_like(photo)  # the band's colour is also the border: background, not a cut
    framed[20:200, 20:236] = photo[20:200, 20:236]
    cases += [framed, np.full_like(photo, 77)]
    for rgb in cases:
        assert _bottom_band(rgb) == _band_by_full_frame(rgb)
        f = rgb.astype(np.float64)
        rg, yb = f[..., 0] - f[..., 1], 0.5 * (f[..., 0] + f[..., 1]) - f[..., 2]
        expected = (np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())) / 255.0
        assert abs(_colourfulness(rgb) - expected) < 1e-12
    assert [_bottom_band(c) > 0 for c in cases[1:8]] == [True] * 7


def test_a_chart_among_photos_is_isolated_from_its_neighbours_pixel_statistics() -> None:
    # Vectors put item 7 among ordinary images; its pixels are made like no neighbour's.
    rng = np.random.default_rng(4)
    matrix = unit_rows(rng.normal(size=(120, 16)))
    hood = neighbourhood(matrix, 10, 2.0)
    metrics: list[dict[str, Any]] = []
    for _ in range(120):
        metrics.append(
            {
                **_photo_metrics(1)[0],
                "saturation": rng.uniform(0.2, 0.5),
                "correlation": rng.uniform(0.85, 0.98),
                "edges": rng.uniform(0.1, 0.3),
                "flat": rng.uniform(0.1, 0.4),
                "top_colours": rng.uniform(0.1, 0.3),
                "colours": float(rng.integers(100, 400)),
            }
        )
    metrics[7] = {**metrics[7], "colours": 9.0, "top_colours": 0.9, "flat": 0.85, "entropy": 2.2}
    found = anomaly.score(hood.index, hood.sim, metrics)
    assert int(np.argmax(found.cross)) == 7 and found.cross[7] > 2.0
    assert abs(float(np.median(found.cross)) - 1.0) < 1e-9
    z = anomaly.robust_z
    lift = found.score[7] - (z(found.isolation) + anomaly.STATISTICS_WEIGHT * z(found.statistics) + found.flag_bonus)[7]
    assert lift == pytest.approx(anomaly.CROSS_WEIGHT * z(found.cross)[7]) and lift > 0.5
    assert "against its neighbours'" in anomaly.isolation_reason(found, 7)
    # Without stored statistics nothing is measured: every item is ordinary.
    bare = anomaly.score(hood.index, hood.sim, None)
    assert (bare.cross == 1.0).all() and np.allclose(bare.score, anomaly.robust_z(bare.isolation))
