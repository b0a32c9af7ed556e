"""Approximate k-NN graph for large indexes, without an N x N matrix.

All-pairs work grows as n^2 (about 2 hours for a million 1347-d vectors on two
cores). Here the vectors are split into about 2 sqrt(n) k-means cells ("lists",
as in an inverted-file index) and every item is compared only with the members
of the ``nprobe`` cells nearest to itself. The work is done cell by cell, as an
IVF index answers a batch of queries: all items that probe a cell are scored
against its members in one BLAS product, and each keeps a pool of its best
candidates so far. Cells and candidates are found in a PCA projection
(PROJECTED_DIM dimensions, from the uncentred second moments, so dot products
are kept as well as a rank-256 map can); each pool is then re-scored in float64
in the full dimension, so every score reported is exact for the vectors held.
Only a neighbour that lives in a cell not probed, or that the projection ranks
outside the pool, can be missed (bench/scale.py measures it).

Probes are per item, not per cell: an item near the border of its cell has
neighbours in cells that its cell's centroid does not rank near. On a million
clustered vectors, 40 probes per item reach k-NN recall@10 0.96 where 20 probes
per cell (each item listed in its 2 nearest cells, the same work) reached 0.84;
the default of 50 reaches 0.965 (docs/BENCHMARKS.md).

Deterministic: the k-means sample, initialisation and iteration count are
fixed by the seed, and every tie is broken by item position.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .analysis import Neighbourhood

NPROBE = 50  # cells searched per item (1M items, 2,000 cells: 40 gave recall@10 0.956, 60 covers 0.982)
KMEANS_ITERATIONS = 8
SAMPLE_PER_LIST = 32  # k-means training rows per cell
PROJECTED_DIM = 256
PROJECT_ABOVE = 5_000  # items; below, candidates are ranked in the full dimension
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
    if n < 2:
        return Neighbourhood(np.zeros((n, kk), np.int64), np.zeros((n, kk), np.float64), [])
    lists = list_count(n)
    nprobe = max(1, min(nprobe, lists))
    rng = np.random.default_rng(seed)
    sample_rows = np.sort(rng.choice(n, size=min(n, SAMPLE_PER_LIST * lists), replace=False))
    sample = _rows_f32(matrix, sample_rows)
    # Per row: float32 scores, their negation and int64 argpartition indices, plus the row itself.
    block_rows = max(1, block_bytes // (24 * lists + 4 * dim))
    basis = projection(sample) if n > PROJECT_ABOVE else np.eye(dim, dtype=np.float32)
    proj = project(matrix, basis, block_rows)
    centroids = spherical_kmeans(sample @ basis, lists, seed=seed, block_rows=block_rows)
    del sample
    probes = nearest_lists(proj, centroids, block_rows, nprobe).astype(np.int32)
    progress = _Progress(n, on_rows)
    pool = _candidate_pools(proj, probes, lists, min(width + _RESCORE_MARGIN, n - 1), block_bytes, progress)
    del proj, probes
    return _exact_graph(matrix, pool, kk, width, threshold, block_bytes, progress)


class _Progress:
    """Reports rows done to ``on_rows`` from the three passes, weighted by their share of the
    work on a million items (own cell 10 %, other probed cells 70 %, exact re-score 20 %)."""

    OWN, PROBES, RESCORE = 0.1, 0.7, 0.2

    def __init__(self, n: int, on_rows: Callable[[int], None] | None):
        self.n, self.on_rows, self.done, self.reported = n, on_rows, 0.0, 0

    def advance(self, rows: int, share: float) -> None:
        if self.on_rows is None:
            return
        self.done += rows * share
        step = min(self.n, round(self.done)) - self.reported
        if step > 0:
            self.reported += step
            self.on_rows(step)


def _inverted(labels: np.ndarray, lists: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``labels`` grouped by label (ascending within a label), and each label's bounds."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(lists + 1))
    return order.astype(np.int32 if len(order) < 2**31 else np.int64), bounds


def _candidate_pools(
    proj: np.ndarray,
    probes: np.ndarray,
    lists: int,
    take: int,
    block_bytes: int,
    progress: _Progress,
) -> np.ndarray:
    """The ``take`` best items of each row, by projected score, among the members of the
    ``nprobe`` cells nearest to that row (its own probes, not its cell's: an item far from
    its centroid needs its own). Cell by cell, as an inverted-file index answers a batch:
    every row that probes a cell is scored against that cell's members in one BLAS product.

    Selecting the best of every product row (argpartition, ~7 ns a score) would cost more
    than the product itself; instead each pool is kept sorted and only the scores above
    its current worst (one comparison, ~0.3 ns) are merged in. After the first cells few
    scores pass, so the merge work is about ``take`` times the log of the candidates seen.
    """
    n, nprobe = probes.shape
    members, member_bounds = _inverted(probes[:, 0], lists)  # each item lives in its nearest cell
    asks, ask_bounds = _inverted(probes[:, 1:].ravel(), lists)  # before the pools: a 1M argsort is 0.6 GB
    pool_idx = np.full((n, take), -1, dtype=np.int32)
    pool_val = np.full((n, take), -np.inf, dtype=np.float32)  # each row sorted, best first
    # First every item against its own cell, fully: the pools start with a high bar.
    for cell in range(lists):
        cand = members[member_bounds[cell] : member_bounds[cell + 1]]
        progress.advance(len(cand), _Progress.OWN)
        if len(cand) < 2:
            continue
        t = min(take, len(cand) - 1)
        cand_f32 = proj[cand]
        rows_per_block = max(1, block_bytes // (24 * len(cand)))  # scores, argpartition indices
        for start in _chunks(len(cand), rows_per_block):
            stop = min(len(cand), start + rows_per_block)
            scores = cand_f32[start:stop] @ cand_f32.T
            scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not its own neighbour
            top = np.argpartition(scores, len(cand) - t, axis=1)[:, -t:]
            val = np.take_along_axis(scores, top, axis=1)
            order = np.lexsort((cand[top], -val), axis=-1)
            pool_idx[cand[start:stop], :t] = np.take_along_axis(cand[top], order, axis=1)
            pool_val[cand[start:stop], :t] = np.take_along_axis(val, order, axis=1)
    # Then the other probed cells, merging only what beats a pool's current worst. An item
    # lives in one cell and probes each cell once, so no pair is seen twice, nor an item itself.
    for cell in range(lists):
        cand = members[member_bounds[cell] : member_bounds[cell + 1]]
        progress.advance(len(cand), _Progress.PROBES)
        if not len(cand) or nprobe < 2:
            continue
        askers = asks[ask_bounds[cell] : ask_bounds[cell + 1]] // (nprobe - 1)
        cand_f32 = proj[cand]
        # float32 scores, the comparison mask and its nonzero indices, the gathered rows
        rows_per_block = max(1, block_bytes // (13 * len(cand) + 4 * proj.shape[1]))
        for start in _chunks(len(askers), rows_per_block):
            rows = askers[start : start + rows_per_block]
            scores = proj[rows] @ cand_f32.T
            hit_row, hit_col = np.nonzero(scores > pool_val[rows, -1][:, None])
            if len(hit_row):
                _merge(pool_idx, pool_val, rows[hit_row], cand[hit_col], scores[hit_row, hit_col])
    pool_idx[~np.isfinite(pool_val)] = -1  # unfilled slots
    short = np.nonzero(pool_idx[:, -1] < 0)[0]
    if len(short):  # probed cells too small to fill the pool (small inputs): scan everything
        pool_idx[short] = _full_scan_pools(proj, short, take, block_bytes)
    return pool_idx


def _merge(pool_idx: np.ndarray, pool_val: np.ndarray, rows: np.ndarray, idx: np.ndarray, val: np.ndarray) -> None:
    """Merge (row, item, score) candidates into the sorted pools of their rows."""
    take = pool_idx.shape[1]
    touched, counts = np.unique(rows, return_counts=True)
    all_rows = np.concatenate([np.repeat(touched, take), rows])
    all_idx = np.concatenate([pool_idx[touched].ravel(), idx])
    all_val = np.concatenate([pool_val[touched].ravel(), val])
    order = np.lexsort((-all_val, all_rows))  # by row, best first; stable, so ties keep pool order
    starts = np.searchsorted(all_rows[order], touched)
    rank = np.arange(len(order)) - np.repeat(starts, counts + take)
    keep = order[rank < take]  # every row has at least its `take` old entries
    pool_idx[touched] = all_idx[keep].reshape(len(touched), take)
    pool_val[touched] = all_val[keep].reshape(len(touched), take)


def _full_scan_pools(proj: np.ndarray, rows: np.ndarray, take: int, block_bytes: int) -> np.ndarray:
    out = np.empty((len(rows), take), dtype=np.int64)
    step = max(1, block_bytes // (16 * len(proj)))
    for start in _chunks(len(rows), step):
        part = rows[start : start + step]
        scores = proj[part] @ proj.T
        scores[np.arange(len(part)), part] = -np.inf
        out[start : start + len(part)] = np.argpartition(scores, len(proj) - take, axis=1)[:, -take:]
    return out


def _exact_graph(
    matrix: np.ndarray, pool: np.ndarray, kk: int, width: int, threshold: float, block_bytes: int, progress: _Progress
) -> Neighbourhood:
    """Re-score every pool in float64 in the full dimension: the k nearest and the edges."""
    n = len(matrix)
    index = np.zeros((n, kk), dtype=np.int64)
    sim = np.zeros((n, kk), dtype=np.float64)
    pair_i: list[np.ndarray] = []
    pair_j: list[np.ndarray] = []
    pair_s: list[np.ndarray] = []
    rows_per_block = max(1, block_bytes // (64 * pool.shape[1]))  # scores, indices, sort order, copies
    for start in _chunks(n, rows_per_block):
        rows = np.arange(start, min(n, start + rows_per_block))
        neigh = pool[rows]
        exact = _rescore(matrix, rows, np.maximum(neigh, 0))
        exact[neigh < 0] = -np.inf
        ordering = np.lexsort((neigh, -exact), axis=-1)[:, :width]
        neigh = np.take_along_axis(neigh, ordering, axis=1)
        exact = np.take_along_axis(exact, ordering, axis=1)
        index[rows] = neigh[:, :kk]
        sim[rows] = exact[:, :kk]
        edge = exact >= threshold
        pair_i.append(np.minimum(np.repeat(rows, edge.sum(axis=1)), neigh[edge]))
        pair_j.append(np.maximum(np.repeat(rows, edge.sum(axis=1)), neigh[edge]))
        pair_s.append(exact[edge])
        progress.advance(len(rows), _Progress.RESCORE)
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
    if not len(i):  # blocks were scanned but none held an edge
        return []
    keys, first = np.unique(i * (int(j.max()) + 1) + j, return_index=True)
    del keys
    return [(int(a), int(b), float(c)) for a, b, c in zip(i[first], j[first], s[first], strict=True)]
