"""Duplicate grouping at the threshold boundary, and anomaly ranking."""

from __future__ import annotations

import numpy as np

from embedlab.analysis import analyze_vectors, neighbourhood
from embedlab.duplicates import COSINE_ONLY

from ..conftest import unit_rows


def _pair_at(cos: float, dim: int = 8) -> np.ndarray:
    a = np.zeros(dim)
    a[0] = 1.0
    b = np.zeros(dim)
    b[0], b[1] = cos, np.sqrt(1 - cos**2)
    return np.stack([a, b])


def _cosine_probability(cos: float) -> float:
    return float(COSINE_ONLY(np.array([cos]))[()])


def test_without_evidence_the_cosine_alone_decides_at_the_threshold() -> None:
    # An index embedded before evidence existed: pairs get the cosine-only probability.
    paths = [["x/a.png"], ["x/b.png"]]
    m = _pair_at(0.99).astype(np.float32)
    p = _cosine_probability(float(m[0].astype(np.float64) @ m[1].astype(np.float64)))
    at = analyze_vectors(m, paths, threshold=p, anomaly_top=0, k=1)
    assert at["duplicate_groups"] == [["x/a.png", "x/b.png"]]
    assert at["duplicate_details"][0]["links"][0]["kind"] == "similar_vectors"
    assert analyze_vectors(m, paths, threshold=p + 1e-6, anomaly_top=0, k=1)["duplicate_groups"] == []


def test_the_cosine_only_probability_rises_with_the_cosine() -> None:
    probabilities = [_cosine_probability(c) for c in (0.5, 0.8, 0.9, 0.95, 0.99)]
    assert probabilities == sorted(probabilities)
    assert probabilities[0] < 0.5 < probabilities[-1]


def test_a_chain_is_split_and_byte_identical_files_always_group() -> None:
    rng = np.random.default_rng(0)
    base = unit_rows(rng.normal(size=(5, 32)))
    steps = [base[0] + t * base[1] for t in (0.0, 0.12, 0.24, 0.36)]
    matrix = np.concatenate([unit_rows(np.stack(steps)), base[2:]]).astype(np.float32)
    sims = matrix.astype(np.float64) @ matrix.T.astype(np.float64)
    threshold = _cosine_probability(float(sims[0, 1]) - 1e-4)
    assert _cosine_probability(float(sims[0, 2])) < threshold  # only neighbours in the chain link
    paths = [["p/a.png"], ["p/b.png"], ["p/c.png"], ["p/d.png"], ["p/x.png", "p/x_copy.png"], ["p/y.png"], ["p/z.png"]]
    result = analyze_vectors(matrix, paths, threshold=threshold, anomaly_top=0, k=2)
    # a-b-c-d is a chain. b and c have two links each; c's are the stronger (normalising bends
    # the steps), so c represents b and d, and a, linked only to b, is left alone.
    assert sims[2, 3] > sims[0, 1]
    assert result["duplicate_groups"] == [["p/b.png", "p/c.png", "p/d.png"], ["p/x.png", "p/x_copy.png"]]
    chain, copies = result["duplicate_details"]
    assert chain["representative"] == "p/c.png"
    assert all(link["a"] == "p/c.png" for link in chain["links"])
    assert copies["links"] == [{"a": "p/x.png", "b": "p/x_copy.png", "score": 1.0, "kind": "same_bytes"}]
    assert (copies["min_link"], copies["max_link"]) == (1.0, 1.0)


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
