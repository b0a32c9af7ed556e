"""Duplicate grouping at the threshold boundary, and anomaly ranking."""

from __future__ import annotations

import numpy as np
import pytest

from embedlab.analysis import analyze_vectors, neighbourhood

from .conftest import unit_rows


def _pair_at(cos: float, dim: int = 8) -> np.ndarray:
    a = np.zeros(dim)
    a[0] = 1.0
    b = np.zeros(dim)
    b[0], b[1] = cos, np.sqrt(1 - cos**2)
    return np.stack([a, b])


def test_pair_just_above_groups_and_just_below_does_not() -> None:
    paths = [["x/a.png"], ["x/b.png"]]
    above = _pair_at(0.9201).astype(np.float32)
    below = _pair_at(0.9199).astype(np.float32)
    assert analyze_vectors(above, paths, threshold=0.92, anomaly_top=0, k=1)["duplicate_groups"] == [
        ["x/a.png", "x/b.png"]
    ]
    assert analyze_vectors(below, paths, threshold=0.92, anomaly_top=0, k=1)["duplicate_groups"] == []


def test_similarity_equal_to_threshold_groups() -> None:
    m = _pair_at(0.5).astype(np.float32)
    exact = float(m[0].astype(np.float64) @ m[1].astype(np.float64))
    assert analyze_vectors(m, [["a"], ["b"]], threshold=exact, anomaly_top=0, k=1)["duplicate_groups"] == [["a", "b"]]


def test_groups_are_transitive_sorted_and_include_identical_files() -> None:
    rng = np.random.default_rng(0)
    base = unit_rows(rng.normal(size=(5, 32)))
    chain = unit_rows(np.stack([base[0], base[0] + 0.3 * base[1], base[0] + 0.6 * base[1]]))
    matrix = np.concatenate([chain, base[2:]]).astype(np.float32)
    sims = matrix @ matrix.T
    assert sims[0, 2] < 0.92 <= min(sims[0, 1], sims[1, 2])  # a chain: a~b, b~c, not a~c
    paths = [["p/c.png"], ["p/a.png"], ["p/b.png"], ["p/x.png", "p/x_copy.png"], ["p/y.png"], ["p/z.png"]]
    result = analyze_vectors(matrix, paths, threshold=0.92, anomaly_top=0, k=2)
    assert result["duplicate_groups"] == [["p/a.png", "p/b.png", "p/c.png"], ["p/x.png", "p/x_copy.png"]]
    chain_details, copy_details = result["duplicate_details"]
    assert chain_details["min_link"] == pytest.approx(float(min(sims[0, 1], sims[1, 2])), abs=1e-6)
    assert copy_details == {"paths": ["p/x.png", "p/x_copy.png"], "min_link": 1.0, "max_link": 1.0}


def test_isolated_point_ranks_first_and_ties_are_ordered_by_path() -> None:
    rng = np.random.default_rng(1)
    centre = rng.normal(size=16)
    cluster = unit_rows(centre + 0.05 * rng.normal(size=(6, 16)))
    outlier = unit_rows(-centre[None, :] + 0.01)
    matrix = np.concatenate([cluster, outlier]).astype(np.float32)
    paths = [[f"c{i}.png"] for i in range(6)] + [["outlier.png"]]
    result = analyze_vectors(matrix, paths, threshold=0.999, anomaly_top=3, k=3)
    assert result["anomalies"][0] == "outlier.png"
    assert len(result["anomalies"]) == 3
    scores = [d["score"] for d in result["anomaly_details"]]
    assert scores == sorted(scores, reverse=True)


def test_neighbourhood_blocks_match_brute_force() -> None:
    rng = np.random.default_rng(2)
    m = unit_rows(rng.normal(size=(2100, 24))).astype(np.float32)  # spans three blocks
    hood = neighbourhood(m, k=4, threshold=0.75)
    sims = m.astype(np.float64) @ m.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    brute = np.argsort(-sims, axis=1, kind="stable")[:, :4]
    assert np.array_equal(hood.index, brute)
    want = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(sims >= 0.75, 1)), strict=True)}
    assert {(i, j) for i, j, _ in hood.pairs} == want


def test_flagged_images_outrank_merely_isolated_ones() -> None:
    rng = np.random.default_rng(3)
    matrix = unit_rows(rng.normal(size=(8, 16))).astype(np.float32)  # all roughly equally isolated
    paths = [[f"p{i}.png"] for i in range(8)]
    quality = {f"p{i}.png": {"width": 100, "height": 100, "entropy": 7.0, "contrast": 0.2} for i in range(8)}
    quality["p5.png"] = {"width": 100, "height": 100, "entropy": 0.0, "contrast": 0.0}
    result = analyze_vectors(matrix, paths, threshold=0.99, anomaly_top=2, k=3, quality=quality)
    assert result["anomalies"][0] == "p5.png"
    assert result["anomaly_details"][0]["flags"] == ["blank"]
    plain = analyze_vectors(matrix, paths, threshold=0.99, anomaly_top=8, k=3)
    assert plain["anomaly_details"][0]["flags"] == []
