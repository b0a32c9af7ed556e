"""Approximate k-NN graph for large indexes, without an N x N matrix.

All-pairs work grows as n^2 (about 2 hours for a million 1347-d vectors on two
cores). Here the vectors are split into about sqrt(n) k-means cells ("lists",
as in an inverted-file index) and every item is compared, with BLAS block
products, only with the members of the ``nprobe`` cells nearest to its own
cell. Cells and candidates are found in a PCA projection (PROJECTED_DIM
dimensions, from the uncentred second moments, so dot products are kept as
well as a rank-256 map can); the candidates are then re-scored in float64 in
the full dimension, so every score reported is exact for the vectors held.
Only a neighbour that lives in a cell not probed, or that the projection
ranks outside the re-scored pool, can be missed (bench/scale.py measures it).

Deterministic: the k-means sample, initialisation and iteration count are
fixed by the seed, and every tie is broken by item position.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .analysis import Neighbourhood

NPROBE = 20  # cells searched per cell
KMEANS_ITERATIONS = 8
SAMPLE_PER_LIST = 32  # k-means training rows per cell
PROJECTED_DIM = 256
PROJECT_ABOVE = 5_000  # items; below, candidates are ranked in the full dimension
SPILL = 2  # cells each item is a candidate in
GRAPH_MIN_WIDTH = 10  # neighbours kept per item for duplicate pairs
_RESCORE_MARGIN = 32  # extra projected candidates re-scored in full dimension


def list_count(n: int) -> int:
    """About 2 sqrt(n) cells: cell size and cell count grow alike, so the work per
    item grows as sqrt(n) and the whole graph as n^1.5 instead of n^2."""
    return max(1, min(n, round(2 * float(np.sqrt(n)))))


def _rows_f32(matrix: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
    return np.ascontiguousarray(matrix[rows], dtype=np.float32)


def _chunks(n: int, size: int) -> range:
    return range(0, n, max(1, size))


def nearest_list(matrix: np.ndarray, centroids: np.ndarray, block_rows: int) -> np.ndarray:
    """Index of the most similar centroid for every row (ties: lowest index)."""
    return nearest_lists(matrix, centroids, block_rows, 1)[:, 0]


def nearest_lists(matrix: np.ndarray, centroids: np.ndarray, block_rows: int, top: int) -> np.ndarray:
    """The ``top`` most similar centroids of every row, nearest first (ties: lowest index)."""
    top = min(top, len(centroids))
    labels = np.empty((len(matrix), top), dtype=np.int64)
    for start in _chunks(len(matrix), block_rows):
        stop = min(len(matrix), start + block_rows)
        scores = _rows_f32(matrix, slice(start, stop)) @ centroids.T
        if top == 1:
            labels[start:stop, 0] = np.argmax(scores, axis=1)
            continue
        # The top few without sorting every centroid: a full argsort of 1M x 2,000 takes minutes.
        part = np.argpartition(-scores, top - 1, axis=1)[:, :top]
        order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=-1)
        labels[start:stop] = np.take_along_axis(part, order, axis=1)
    return labels


def spherical_kmeans(sample: np.ndarray, lists: int, *, seed: int, block_rows: int) -> np.ndarray:
    """Unit centroids of ``lists`` cells by cosine, a fixed number of Lloyd steps."""
    rng = np.random.default_rng(seed)
    centroids = sample[np.sort(rng.choice(len(sample), size=lists, replace=False))].astype(np.float32)
    for _ in range(KMEANS_ITERATIONS):
        labels = nearest_list(sample, centroids, block_rows)
        order = np.argsort(labels, kind="stable")
        used, starts = np.unique(labels[order], return_index=True)
        sums = np.add.reduceat(sample[order].astype(np.float64), starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        keep = norms[:, 0] > 0  # an empty or degenerate cell keeps its old centroid
        centroids[used[keep]] = (sums[keep] / norms[keep]).astype(np.float32)
    return centroids


def knn_graph(
    matrix: np.ndarray,
    k: int,
    threshold: float,
    *,
    block_bytes: int,
    nprobe: int = NPROBE,
    seed: int = 0,
    on_rows: Callable[[int], None] | None = None,
) -> Neighbourhood:
    """Each item's k nearest other items and the graph edges at or above ``threshold``.

    ``matrix`` holds unit rows (float32, or float16 to halve memory). Duplicate
    pairs are taken among each item's ``max(k, GRAPH_MIN_WIDTH)`` nearest: enough
    to connect every duplicate group, whose components are what `analyze` reports.
    """
    n, dim = matrix.shape
    kk = max(0, min(k, n - 1))
    width = max(kk, min(GRAPH_MIN_WIDTH, n - 1))
    index = np.zeros((n, kk), dtype=np.int64)
    sim = np.zeros((n, kk), dtype=np.float64)
    if n < 2:
        return Neighbourhood(index, sim, [])
    lists = list_count(n)
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(n, size=min(n, SAMPLE_PER_LIST * lists), replace=False))
    sample = _rows_f32(matrix, sample_rows)
    # Per row: float32 scores, their negation and int64 argpartition indices, plus the row itself.
    block_rows = max(1, block_bytes // (24 * lists + 4 * dim))
    basis = projection(sample) if n > PROJECT_ABOVE else np.eye(dim, dtype=np.float32)
    proj = project(matrix, basis, block_rows)
    centroids = spherical_kmeans(sample @ basis, lists, seed=seed, block_rows=block_rows)
    del sample
    labels = nearest_lists(proj, centroids, block_rows, SPILL)
    probes = np.argsort(-(centroids @ centroids.T), axis=1, kind="stable")[:, : min(nprobe, lists)]
    # Queries by their nearest cell; candidates by their SPILL nearest cells, so an
    # item on the border between two cells is found from either side.
    order = np.argsort(labels[:, 0], kind="stable")
    bounds = np.searchsorted(labels[order, 0], np.arange(lists + 1))
    spilled = np.argsort(labels.ravel(), kind="stable")
    spill_items = spilled // labels.shape[1]
    spill_bounds = np.searchsorted(labels.ravel()[spilled], np.arange(lists + 1))
    pair_i: list[np.ndarray] = []
    pair_j: list[np.ndarray] = []
    pair_s: list[np.ndarray] = []
    for cell in range(lists):
        members = order[bounds[cell] : bounds[cell + 1]]
        if not len(members):
            continue
        cand = np.unique(np.concatenate([spill_items[spill_bounds[p] : spill_bounds[p + 1]] for p in probes[cell]]))
        cand_f32 = proj[cand]
        take = min(width + _RESCORE_MARGIN, len(cand) - 1)
        if take < 1:
            continue
        rows_per_block = max(1, block_bytes // (24 * len(cand)))  # scores, int64 partition, mask
        for start in _chunks(len(members), rows_per_block):
            rows = members[start : start + rows_per_block]
            scores = proj[rows] @ cand_f32.T
            scores[np.arange(len(rows)), np.searchsorted(cand, rows)] = -np.inf  # not its own neighbour
            top = np.argpartition(scores, scores.shape[1] - take, axis=1)[:, -take:]  # the take largest
            neigh = cand[top]  # (rows, take) item indices
            exact = _rescore(matrix, rows, neigh)
            exact[neigh == rows[:, None]] = -np.inf
            ordering = np.lexsort((neigh, -exact), axis=-1)
            neigh = np.take_along_axis(neigh, ordering, axis=1)
            exact = np.take_along_axis(exact, ordering, axis=1)
            index[rows] = neigh[:, :kk]
            sim[rows] = exact[:, :kk]
            edge = exact[:, :width] >= threshold
            ii = np.repeat(rows, edge.sum(axis=1))
            jj = neigh[:, :width][edge]
            pair_i.append(np.minimum(ii, jj))
            pair_j.append(np.maximum(ii, jj))
            pair_s.append(exact[:, :width][edge])
            if on_rows is not None:
                on_rows(len(rows))
    return Neighbourhood(index, sim, _unique_pairs(pair_i, pair_j, pair_s))


def projection(sample: np.ndarray) -> np.ndarray:
    """(dim, p) orthonormal basis: the top eigenvectors of the sample's second moments
    (its top right-singular vectors, at a fraction of an SVD's cost)."""
    dim = sample.shape[1]
    if dim <= PROJECTED_DIM:
        return np.eye(dim, dtype=np.float32)
    moments = sample.T.astype(np.float64) @ sample.astype(np.float64)
    _, vectors = np.linalg.eigh(moments)  # ascending eigenvalues
    return np.ascontiguousarray(vectors[:, ::-1][:, :PROJECTED_DIM], dtype=np.float32)


def project(matrix: np.ndarray, basis: np.ndarray, block_rows: int) -> np.ndarray:
    out = np.empty((len(matrix), basis.shape[1]), dtype=np.float32)
    for start in _chunks(len(matrix), block_rows):
        out[start : start + block_rows] = _rows_f32(matrix, slice(start, start + block_rows)) @ basis
    return out


def _rescore(matrix: np.ndarray, rows: np.ndarray, neigh: np.ndarray) -> np.ndarray:
    """float64 cosine of each row with its candidate neighbours (float64 sums, no float64 copies)."""
    out = np.empty(neigh.shape, dtype=np.float64)
    step = max(1, 8_000_000 // max(1, neigh.shape[1] * matrix.shape[1]))
    for start in range(0, len(rows), step):
        q, c = matrix[rows[start : start + step]], matrix[neigh[start : start + step]]
        out[start : start + step] = np.einsum("rd,rkd->rk", q, c, dtype=np.float64)
    return out


def _unique_pairs(
    pair_i: list[np.ndarray], pair_j: list[np.ndarray], pair_s: list[np.ndarray]
) -> list[tuple[int, int, float]]:
    """Each edge once, as (i, j, sim) with i < j, sorted by (i, j)."""
    if not pair_i:
        return []
    i, j, s = np.concatenate(pair_i), np.concatenate(pair_j), np.concatenate(pair_s)
    keys, first = np.unique(i * (int(j.max()) + 1) + j, return_index=True)
    del keys
    return [(int(a), int(b), float(c)) for a, b, c in zip(i[first], j[first], s[first], strict=True)]
