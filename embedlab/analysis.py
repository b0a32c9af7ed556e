"""`analyze`: near-duplicate groups and the most isolated images.

Works on unique contents (one vector per sha256); byte-identical files are the
same item, so they always group. Up to EXACT_MAX_ITEMS, similarities are
computed exactly, block by block (the block is sized from a memory budget, so
no N x N matrix is ever held) and every pair above the threshold is seen.
Above it, `embedlab.ivf` builds an approximate k-NN graph with exact scores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import anomaly
from .duplicates import (
    CANDIDATE_K,
    LARGE_BUDGET,
    LARGE_COLLECTION,
    THUMB_MAX_ITEMS,
    Candidate,
    FitBudget,
    Group,
    Link,
    Verifier,
    build_groups,
    candidate_pairs,
    thumbnail_pairs,
)
from .search import SCORE_DECIMALS
from .verify import COARSE_SIDE, coarse_thumbs

if TYPE_CHECKING:
    from .evidence import Evidence
    from .store import Store

DEFAULT_MEMORY_MB = 1024  # working memory for similarity blocks
EXACT_MAX_ITEMS = 20_000  # above this, `analyze` uses the k-NN graph of embedlab.ivf
FLOAT16_ABOVE_BYTES = 2 << 30  # hold vectors as float16 when float32 would take more (1M x 1347: 5.4 GB)
_LOAD_CHUNK = 8192
EvidenceLoader = Callable[[Sequence[int]], dict[int, "Evidence"]]
log = logging.getLogger("embedlab")


@dataclass(frozen=True)
class Neighbourhood:
    """Each item's k nearest other items and every pair at or above a threshold."""

    index: np.ndarray  # (n, k) neighbour indices, nearest first
    sim: np.ndarray  # (n, k) their cosine similarities
    pairs: list[tuple[int, int, float]]  # (i, j, sim) with i < j and sim >= threshold

    def nearest(self, k: int) -> Neighbourhood:
        """Each item's first ``k`` neighbours only, without the pairs: the graph the anomaly scores read."""
        return Neighbourhood(self.index[:, :k], self.sim[:, :k], [])


def load_for_analysis(store: Store, columns: int | None = None) -> tuple[list[str], np.ndarray]:
    """Every referenced vector, ordered by sha256, streamed into one matrix.

    Float32 as stored, unless that would exceed FLOAT16_ABOVE_BYTES: then float16
    (scores then carry an error of about 1e-5), so a million vectors fit in 2.7 GB.
    ``columns`` keeps only the first that many coordinates, made unit length again:
    the backbone's own features inside a composed vector (``semantic_columns``).
    """
    n, dim = store.referenced_vector_count(), int(store.meta().get("dim", "0"))
    width = dim if columns is None else min(columns, dim)
    dtype = np.float16 if n * width * 4 > FLOAT16_ABOVE_BYTES else np.float32
    matrix = np.empty((n, width), dtype=dtype)
    shas: list[str] = []
    for part_shas, part in store.iter_referenced_vectors(_LOAD_CHUNK):
        part = part[: n - len(shas)]  # rows added since the count wait for the next run
        if width < dim:
            part = part[:, :width].astype(np.float64)
            part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        matrix[len(shas) : len(shas) + len(part)] = part
        shas.extend(part_shas[: len(part)])
    return shas, matrix[: len(shas)]


def evidence_loader(store: Store, shas: Sequence[str]) -> EvidenceLoader:
    """Evidence of analysed items by row index, read from the store when verification needs it."""

    def load(items: Sequence[int]) -> dict[int, Evidence]:
        found = store.evidence_for([shas[i] for i in items])
        return {i: found[shas[i]] for i in items if shas[i] in found}

    return load


def block_rows(n: int, block_bytes: int) -> int:
    """Rows of an exact similarity block that fit the budget (float64 block plus
    the same again for the argpartition and threshold temporaries)."""
    return max(1, block_bytes // (24 * max(1, n)))


def _blocks(n: int, rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, rows):
        yield start, min(n, start + rows)


def neighbourhood(
    matrix: np.ndarray,
    k: int,
    threshold: float,
    on_rows: Callable[[int], None] | None = None,
    *,
    block_bytes: int = DEFAULT_MEMORY_MB << 20,
) -> Neighbourhood:
    """Exact: every pair is scored, ``block_bytes`` at a time.

    ``on_rows(n)`` is told after each block of n rows (progress for long runs).
    """
    n = matrix.shape[0]
    kk = max(0, min(k, n - 1))
    index = np.zeros((n, kk), dtype=np.int64)
    sim = np.zeros((n, kk), dtype=np.float64)
    pairs: list[tuple[int, int, float]] = []
    as64 = matrix.astype(np.float64)  # once, not once per block
    for start, stop in _blocks(n, block_rows(n, block_bytes)):
        block = (as64 @ as64[start:stop].T).T  # (rows, n), what cosine_scores computes
        rows = np.arange(stop - start)
        block[rows, rows + start] = -np.inf  # an item is not its own neighbour
        ii, jj = np.nonzero(block >= threshold)
        pairs.extend((int(i) + start, int(j), float(block[i, j])) for i, j in zip(ii, jj, strict=True) if i + start < j)
        if kk:
            part = np.argpartition(-block, kk - 1, axis=1)[:, :kk]
            vals = np.take_along_axis(block, part, axis=1)
            # Nearest first; equal similarities by position (which follows sha256).
            order = np.lexsort((part, -vals), axis=-1)
            index[start:stop] = np.take_along_axis(part, order, axis=1)
            sim[start:stop] = np.take_along_axis(vals, order, axis=1)
        if on_rows is not None:
            on_rows(stop - start)
    return Neighbourhood(index, sim, pairs)


class KnnGraph(Protocol):
    """Builds a Neighbourhood: each item's k nearest and the pairs at or above ``threshold``."""

    def __call__(
        self, matrix: np.ndarray, k: int, threshold: float, *, block_bytes: int, on_rows: Callable[[int], None] | None
    ) -> Neighbourhood: ...


def _exact_graph(
    matrix: np.ndarray, k: int, threshold: float, *, block_bytes: int, on_rows: Callable[[int], None] | None
) -> Neighbourhood:
    return neighbourhood(matrix, k, threshold, on_rows, block_bytes=block_bytes)


def _ivf_graph(
    matrix: np.ndarray, k: int, threshold: float, *, block_bytes: int, on_rows: Callable[[int], None] | None
) -> Neighbourhood:
    from .ivf import knn_graph  # ivf builds on this module's Neighbourhood

    return knn_graph(matrix, k, threshold, block_bytes=block_bytes, on_rows=on_rows)


# k-NN graph builders by name; ``approximate`` picks "ivf" (True) or "exact" (False),
# and None picks by size. A new builder registers here and is chosen by name.
KNN_GRAPHS: dict[str, KnnGraph] = {"exact": _exact_graph, "ivf": _ivf_graph}


def choose_graph(n_items: int, approximate: bool | str | None) -> str:
    """The builder's name: given by name, or exact up to EXACT_MAX_ITEMS items and ivf above."""
    if isinstance(approximate, str):
        return approximate
    if approximate is None:
        approximate = n_items > EXACT_MAX_ITEMS
    return "ivf" if approximate else "exact"


def neighbours(
    matrix: np.ndarray,
    k: int,
    threshold: float,
    *,
    memory_mb: int,
    approximate: bool | str | None,
    on_rows: Callable[[int], None] | None = None,
) -> Neighbourhood:
    """Exact blocked all-pairs, or the approximate k-NN graph for large inputs (KNN_GRAPHS)."""
    build = KNN_GRAPHS[choose_graph(matrix.shape[0], approximate)]
    return build(matrix, k, threshold, block_bytes=memory_mb << 20, on_rows=on_rows)


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def components(n_items: int, pairs: list[tuple[int, int, float]]) -> np.ndarray:
    """Connected-component id of every item in the graph of ``pairs``."""
    uf = _UnionFind(n_items)
    for i, j, _ in pairs:
        uf.union(i, j)
    return np.array([uf.find(i) for i in range(n_items)], dtype=np.int64)


VERIFY_ITEMS = 150_000  # items whose evidence (16 KB each at most) is held at once
VERIFY_THREADS = 2


def analyze_vectors(
    matrix: np.ndarray,
    paths: list[list[str]],
    *,
    threshold: float,
    anomaly_top: int,
    k: int,
    quality: dict[str, dict[str, Any]] | None = None,
    evidence: EvidenceLoader | None = None,
    on_rows: Callable[[int], None] | None = None,
    memory_mb: int = DEFAULT_MEMORY_MB,
    approximate: bool | str | None = None,
    blocked: set[tuple[int, int]] | None = None,
    links_out: list[Link] | None = None,
    slices: Sequence[tuple[str, str] | None] | None = None,
    small: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The `analyze` answer for unit vectors ``matrix`` whose rows hold ``paths``.

    Duplicates: each item's nearest neighbours are verified on the evidence that
    ``evidence(indices)`` loads (embedlab.duplicates); ``threshold`` applies to the
    verified probability of one picture. Without evidence for a pair, the
    probability comes from its cosine alone. Anomalies: embedlab.anomaly's
    density-aware isolation, plus its flag weight for an image with a quality flag
    that is rare in the collection (``quality``: path -> stored metrics).
    ``approximate`` picks the k-NN graph of embedlab.ivf (None: above
    EXACT_MAX_ITEMS items); ``memory_mb`` bounds the similarity blocks.
    ``blocked`` item pairs (marked "not a duplicate", embedlab.marks) are never
    grouped; ``links_out`` receives every verified link less the marked ones.
    ``slices``: per item, its DICOM (series key, slice key) or None; two slices of
    one series at two places are kept apart like a marked pair (``other_slices``).
    ``small``: the items smaller than the evidence thumbnail, also proposed by their
    thumbnails (``small_candidates``).
    """
    graph_k = max(k, CANDIDATE_K)
    hood = neighbours(matrix, graph_k, 2.0, memory_mb=memory_mb, approximate=approximate, on_rows=on_rows)
    candidates = candidate_pairs(hood.index, hood.sim)
    if small and evidence is not None:
        candidates = with_small_candidates(candidates, matrix, small, evidence)
    apart = other_slices(candidates, slices) if slices is not None else set()
    if apart:
        blocked = (blocked or set()) | apart
    links = verify_in_chunks(candidates, evidence, budget=fit_budget(len(matrix)))
    if links_out is not None:
        links_out.extend(link for link in links if (link.a, link.b) not in (blocked or set()))
    anomaly_hood = hood.nearest(k)
    data = report(
        anomaly_hood, paths, anomaly_top=anomaly_top, quality=quality, links=links, threshold=threshold, blocked=blocked
    )
    if apart:  # only where an index has such slices: otherwise the answer is exactly as before
        data["series_slices_apart"] = len(apart)
    return data


def small_candidates(matrix: np.ndarray, small: Sequence[int], evidence: EvidenceLoader) -> list[Candidate]:
    """Pairs of pictures smaller than the thumbnail proposed by their thumbnails under any move (``thumbnail_pairs``).

    Each with its vectors' cosine and its rank in the thumbnail search. Up to
    THUMB_MAX_ITEMS such pictures (the search is exact, all pairs); beyond, none.
    """
    items = sorted(set(small))
    if len(items) < 2:
        return []
    if len(items) > THUMB_MAX_ITEMS:
        log.info("%d pictures smaller than the thumbnail: proposed by their vectors only", len(items))
        return []
    grey = np.zeros((len(items), COARSE_SIDE, COARSE_SIDE), dtype=np.float32)
    for start in range(0, len(items), VERIFY_ITEMS):
        part = items[start : start + VERIFY_ITEMS]
        loaded = evidence(part)
        have = [n for n, item in enumerate(part, start) if item in loaded]
        if have:  # no evidence (an older index): all zero, so nothing is proposed for it
            grey[have] = coarse_thumbs(np.stack([loaded[items[n]].thumb for n in have]))[0][:, 1]
    out = []
    for a, b, _, rank in thumbnail_pairs(grey):
        i, j = items[a], items[b]
        cosine = float(np.dot(matrix[i].astype(np.float32), matrix[j].astype(np.float32)))
        out.append((i, j, cosine, rank))
    return out


def with_small_candidates(
    candidates: list[Candidate], matrix: np.ndarray, small: Sequence[int], evidence: EvidenceLoader
) -> list[Candidate]:
    """``candidates`` plus the thumbnail proposals they lack, in (i, j) order."""
    have = {(c[0], c[1]) for c in candidates}
    extra = [c for c in small_candidates(matrix, small, evidence) if (c[0], c[1]) not in have]
    return sorted(candidates + extra) if extra else candidates


def item_slices(
    paths: Sequence[Sequence[str]], placed: dict[str, tuple[str, str]]
) -> list[tuple[str, str] | None] | None:
    """Per item (its paths), the DICOM (series key, slice key) of any of its files (Store.series_slices); None: none."""
    if not placed:
        return None
    return [next((placed[p] for p in item if p in placed), None) for item in paths]


def other_slices(candidates: Sequence[Candidate], slices: Sequence[tuple[str, str] | None]) -> set[tuple[int, int]]:
    """Candidate pairs that are two places of one DICOM series: different images, whatever their pixels say.

    Neighbouring slices agree at thumbnail size as well as a re-encoded copy does
    (bench/slices.py); the file's own tags settle it. Two files at one place (two
    exports or codecs of one slice) are left to the verifier, as are slice keys of
    different kinds (a position against an instance number).
    """
    out: set[tuple[int, int]] = set()
    for i, j, _, _ in candidates:
        a, b = slices[i], slices[j]
        if a is None or b is None or a[0] != b[0]:
            continue
        (kind_a, _, place_a), (kind_b, _, place_b) = a[1].partition(":"), b[1].partition(":")
        if kind_a == kind_b and place_a != place_b:
            out.add((i, j))
    return out


def fit_budget(n_items: int) -> FitBudget:
    """The keypoint fits `analyze` affords for a collection of ``n_items`` (duplicates.FitBudget)."""
    return LARGE_BUDGET if n_items > LARGE_COLLECTION else FitBudget()


def verify_in_chunks(
    candidates: list[Candidate],
    evidence: EvidenceLoader | None,
    on_pairs: Callable[[int], None] | None = None,
    budget: FitBudget | None = None,
) -> list[Link]:
    """Score every candidate, holding the evidence of at most VERIFY_ITEMS items at a time.

    A pair's second item is anywhere in the collection, so small chunks of pairs
    would read the same evidence again and again: chunks grow until they touch
    VERIFY_ITEMS distinct items (all of them, up to that size: one read each).
    """
    links: list[Link] = []
    for chunk in _chunks_by_items(candidates, VERIFY_ITEMS):
        items = sorted({c[0] for c in chunk} | {c[1] for c in chunk})
        loaded = evidence(items) if evidence is not None else {}
        local = {item: n for n, item in enumerate(items)}
        verifier = Verifier([loaded.get(item) for item in items], budget=budget)
        judged = verifier.links([(local[i], local[j], s, r) for i, j, s, r in chunk], threads=VERIFY_THREADS)
        links.extend(replace(link, a=c[0], b=c[1]) for link, c in zip(judged, chunk, strict=True))
        if on_pairs is not None:
            on_pairs(len(chunk))
    return links


def _chunks_by_items(candidates: list[Candidate], limit: int) -> Iterator[list[Candidate]]:
    """Consecutive runs of candidates that touch at most ``limit`` distinct items each."""
    start, seen = 0, set[int]()
    for n, (i, j, _, _) in enumerate(candidates):
        seen.update((i, j))
        if len(seen) > limit:
            yield candidates[start:n]
            start, seen = n, {i, j}
    if start < len(candidates):
        yield candidates[start:]


def report(
    hood: Neighbourhood,
    paths: list[list[str]],
    *,
    anomaly_top: int,
    quality: dict[str, dict[str, Any]] | None,
    links: list[Link],
    threshold: float,
    blocked: set[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Duplicate groups from verified links and ranked anomalies from a neighbourhood (exact or approximate).

    ``blocked`` pairs (marks) filter the links before grouping; without marks the links are used as they are."""
    multi_path = [len(p) > 1 for p in paths]
    if blocked:
        from .marks import without_marked

        links = without_marked(len(paths), links, threshold, multi_path, blocked)
    groups = build_groups(len(paths), links, threshold, multi_path)
    path_groups = [sorted(p for m in g.members for p in paths[m]) for g in groups]
    order = sorted(range(len(groups)), key=lambda g: path_groups[g])
    found = anomaly.score(hood.index, hood.sim, None if quality is None else [quality.get(p[0]) for p in paths])
    scores = found.score
    # Most isolated first; ties by path so output order never depends on chance.
    ranked = sorted(range(len(paths)), key=lambda i: (-round(float(scores[i]), 9), paths[i][0]))
    anomalies: list[str] = []
    details: list[dict[str, object]] = []
    for i in ranked:
        if len(anomalies) >= anomaly_top:
            break
        for path in paths[i][: anomaly_top - len(anomalies)]:
            anomalies.append(path)
            details.append(
                {
                    "path": path,
                    "score": round(float(scores[i]), SCORE_DECIMALS),
                    "isolation": round(float(found.isolation[i]), SCORE_DECIMALS),
                    "isolation_percentile": round(float(found.percentile[i]), 2),
                    "mean_distance": round(float(found.distance[i]), SCORE_DECIMALS),
                    "flags": found.flags[i],
                    "counted_flags": found.counted[i],
                    "reasons": [*found.reasons[i], anomaly.isolation_reason(found, i)],
                    "neighbours": [
                        {"path": paths[int(j)][0], "score": round(float(s), SCORE_DECIMALS)}
                        for j, s in zip(hood.index[i], hood.sim[i], strict=True)
                    ],
                }
            )
    return {
        "duplicate_groups": [path_groups[g] for g in order],
        "duplicate_details": [group_details(groups[g], paths) for g in order],
        "anomalies": anomalies,
        "anomaly_details": details,
    }


def group_details(group: Group, paths: list[list[str]]) -> dict[str, Any]:
    """One group for people: its representative, weakest and strongest link, and what each link is."""
    links: list[dict[str, Any]] = [
        {
            "a": paths[group.representative][0],
            "b": paths[link.b if link.a == group.representative else link.a][0],
            "score": round(link.score, SCORE_DECIMALS),
            "kind": link.kind,
            **({"edit": link.edit} if link.edit else {}),
        }
        for link in group.links
    ]
    for member in group.members:  # byte-identical files: one content, linked at exactly 1
        first, *copies = sorted(paths[member])
        links.extend({"a": first, "b": copy, "score": 1.0, "kind": "same_bytes"} for copy in copies)
    scores = [float(link["score"]) for link in links]
    return {
        "paths": sorted(p for m in group.members for p in paths[m]),
        "representative": sorted(paths[group.representative])[0],
        "min_link": min(scores),
        "max_link": max(scores),
        "links": links,
    }
