"""Near-duplicate groups: candidates from the vectors, verdicts from the evidence, groups that do not chain.

A cosine threshold on CNN vectors groups look-alikes (two shirts of one
catalogue, neighbouring slices of one scan) and then chains them through
each other into groups of hundreds. Here the vectors only *propose*: each
item's CANDIDATE_K nearest neighbours above CANDIDATE_COSINE. Each proposal is
verified on stored evidence (embedlab.verify) and gets a probability of being
one picture; a group is then built around a representative that every member
is itself verified against, so A~B and B~C never put A with C by themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import overload

import numpy as np

from .evidence import Evidence
from .verify import (
    ASPECT_TOLERANCE,
    COARSE_FLOOR,
    COARSE_SIDE,
    DIHEDRAL,
    FIT_KEYPOINTS,
    GEOMETRY_RANK,
    Logistic,
    Model,
    PairEvidence,
    coarse_thumbs,
    dihedral_move,
    finish,
    needs_geometry,
    normalised_thumb,
    pixel_agreement_batch,
)

CANDIDATE_K = 20  # nearest neighbours of each item that are verified (10 missed 6 % of true pairs on the tune half)
CANDIDATE_COSINE = 0.45  # proposals below this cosine are never verified (tuned for recall on the tune half)
THUMB_K = 10  # pictures smaller than the thumbnail: also each one's 10 nearest by its thumbnail under the 8 moves
THUMB_MAX_ITEMS = 20_000  # ... an exact all-pairs search, so only up to this many such pictures
THUMB_BLOCK = 512  # rows per block of that search (2 x 512 x THUMB_MAX_ITEMS floats: 80 MB)
PIXEL_BLOCK = 1024  # candidate pairs whose thumbnails are compared in one NumPy pass
FLAT_TONE = 2.0  # grey levels between two flat pictures that are still one
SAME_PIXELS_NCC = 0.985  # thumbnails this close under no move: the same pixels, re-encoded or resized

# Fitted by bench/dupbench.py --fit on the tuning half (geometry refitted alone with its core agreement,
# --fit --channels geometry, 2026-12-04); see docs/BENCHMARKS.md ("Same picture").
MODEL = Model(
    pixel=Logistic(weights=(1.2634, 0.4552, 16.049), bias=-2.3259),
    geometry=Logistic(weights=(3.2527, 9.1459, 2.3275, 5.8069, -4.1426, -0.4582), bias=-16.7018),
    inset=Logistic(weights=(4.0816,), bias=-7.4554),
)
# For a pair where one side has no evidence (an index embedded before evidence existed).
COSINE_ONLY = Logistic(weights=(19.0552,), bias=-18.1651)


@dataclass(frozen=True)
class Link:
    """A verified pair of items (indices into the analysed matrix, a < b)."""

    a: int
    b: int
    score: float  # P(same picture), the value --dup-threshold applies to
    kind: str  # same_pixels or edited_copy
    edit: str | None  # for an edited copy: mirror, rotation, geometry (crop, pad, canvas...), tone
    cosine: float


@dataclass
class Group:
    """Items judged one picture: every member is linked to the representative at or above the threshold."""

    representative: int
    members: list[int]
    links: list[Link] = field(default_factory=list)


Candidate = tuple[int, int, float, int]  # (i, j, cosine, rank): i < j, rank of the nearer direction


def candidate_pairs(
    index: np.ndarray, sim: np.ndarray, *, k: int = CANDIDATE_K, floor: float = CANDIDATE_COSINE
) -> list[Candidate]:
    """Unique pairs with i < j from each row's k nearest neighbours at or above ``floor``.

    Each comes with its rank: the position of one in the other's neighbour list,
    the smaller of the two directions (0: one is the other's nearest neighbour).
    """
    seen: dict[tuple[int, int], tuple[float, int]] = {}
    kk = min(k, index.shape[1])
    for i in range(index.shape[0]):
        for rank, (j, s) in enumerate(zip(index[i, :kk], sim[i, :kk], strict=True)):
            if s < floor:
                break  # rows are nearest first
            a, b = (i, int(j)) if i < j else (int(j), i)
            if a != b:
                before = seen.get((a, b))
                seen[(a, b)] = (float(s), rank if before is None else min(rank, before[1]))
    return [(a, b, s, r) for (a, b), (s, r) in sorted(seen.items())]


def thumbnail_pairs(coarse_grey: np.ndarray, k: int = THUMB_K, floor: float = COARSE_FLOOR) -> list[Candidate]:
    """Unique pairs (i < j, NCC, rank) from each row's ``k`` nearest by coarse thumbnail under any flip or quarter turn.

    The vectors propose poorly for pictures smaller than the thumbnail: the network
    sees a 25 px face or a 28 px shirt blown up to its input size, and a turned or
    noisy copy lands far from its source (bench/dupbench.py: most true pairs the
    vectors never proposed are such pictures). ``coarse_grey``: (n, S, S) normalised
    coarse thumbnails (``verify.coarse``, grey channel); pairs below ``floor`` are
    left out, as the verifier would rule them out at once.
    """
    n = coarse_grey.shape[0]
    kk = min(k, n - 1)
    if kk < 1:
        return []
    flat = np.ascontiguousarray(coarse_grey.reshape(n, -1), dtype=np.float32)
    moved = [
        np.ascontiguousarray(dihedral_move(coarse_grey, turns, mirrored).reshape(n, -1), dtype=np.float32)
        for _, turns, mirrored in DIHEDRAL
    ]
    seen: dict[tuple[int, int], tuple[float, int]] = {}
    for start in range(0, n, THUMB_BLOCK):
        block = flat[start : start + THUMB_BLOCK]
        best = block @ moved[0].T
        for other in moved[1:]:
            np.maximum(best, block @ other.T, out=best)
        best[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf
        top = np.argpartition(-best, kk - 1, axis=1)[:, :kk]
        for row, found in enumerate(top):
            i = start + row
            values = best[row, found]
            keep = values >= floor
            if not keep.any():
                continue
            # Nearest first, ties by index: the order never depends on the partition.
            order = np.lexsort((found[keep], -values[keep]))
            for rank, (j, value) in enumerate(
                zip(found[keep][order].tolist(), values[keep][order].tolist(), strict=True)
            ):
                a, b = (i, j) if i < j else (j, i)
                before = seen.get((a, b))
                seen[(a, b)] = (value, rank if before is None else min(rank, before[1]))
    return [(a, b, v, r) for (a, b), (v, r) in sorted(seen.items())]


@dataclass(frozen=True)
class FitBudget:
    """How many keypoint fits a collection can afford: each item's ``rank`` nearest, on ``keypoints`` per side.

    The fits are a large part of `analyze`'s time at scale (about 0.14 ms a pair at 256
    keypoints with faiss on two cores; matching is quadratic in the keypoints).
    ``LARGE_BUDGET`` (3 nearest, 256 strongest) is as good on the tune half of
    bench/dupbench.py (F1 0.925 against 0.923) at 0.4 of the fitting work, and 0.013 F1
    worse on the holdout half; `analyze` uses it above ``LARGE_COLLECTION`` items only,
    like its approximate k-NN graph.
    """

    rank: int = GEOMETRY_RANK
    keypoints: int = FIT_KEYPOINTS
    # An inset also looked for turned where the fit found nothing: 16 more template matches a pair,
    # which at 100k items (synthetic evidence, whose fits always fail) cost 53 s of verification.
    turn_unfitted: bool = True
    # Two pictures smaller than the thumbnail also tried as a crop of one another, enlarged back
    # (verify._zoomed_inset): 8 coarse template matches a pair, 9 more where one matches well.
    zoom_small: bool = True


LARGE_COLLECTION = 20_000
LARGE_BUDGET = FitBudget(rank=3, keypoints=256, turn_unfitted=False, zoom_small=False)


class Verifier:
    """Scores candidate pairs on stored evidence; normalised thumbnails are computed once per item."""

    def __init__(self, evidence: Sequence[Evidence | None], model: Model = MODEL, budget: FitBudget | None = None):
        self.evidence = evidence
        self.model = model
        self.budget = budget or FitBudget()
        # Every item's coarse thumbnail and flatness (2 KB); its full normalised thumbnail (48 KB)
        # only once a pair needs it at full size: most candidate pairs are ruled out at 16 px, and
        # holding every item's full thumbnail cost 4.9 GB and a page fault per 4 KB at 100k items.
        # Per-item arrays, so a block of pairs gathers its rows at once (filled as items are first met;
        # np.zeros only maps pages on first write).
        self._norm: dict[int, np.ndarray] = {}
        n = len(evidence)
        self._coarse = np.zeros((n, 2, COARSE_SIDE, COARSE_SIDE), dtype=np.float32)
        self._flat = np.zeros(n, dtype=bool)
        self._aspect = np.ones(n)
        self._ready = np.zeros(n, dtype=bool)

    def _thumb(self, i: int) -> np.ndarray:
        ev = self.evidence[i]
        assert ev is not None
        return ev.thumb

    def _prepare(self, items: np.ndarray) -> None:
        """The items' coarse thumbnails, flatness and aspect ratio, made once, in one batch."""
        new = np.unique(items[~self._ready[items]])
        if len(new):
            self._coarse[new], self._flat[new] = coarse_thumbs(np.stack([self._thumb(i) for i in new.tolist()]))
            self._aspect[new] = [self.evidence[i].aspect for i in new.tolist()]
            self._ready[new] = True

    def _normalised(self, i: int) -> np.ndarray:
        """The item's full normalised thumbnail, made again (the same values) the first time a pair needs it."""
        if i not in self._norm:
            self._norm[i] = normalised_thumb(self._thumb(i))[0]
        return self._norm[i]

    def pair(self, i: int, j: int, cosine: float) -> PairEvidence | None:
        return self.measure_all([(i, j, cosine, 0)])[0]

    def link(self, i: int, j: int, cosine: float) -> Link:
        return self.links([(i, j, cosine, 0)])[0]

    def links(self, candidates: Sequence[Candidate], threads: int = 1) -> list[Link]:
        """Every candidate judged (``measure_all``), as links with their probability and kind."""
        measured = self.measure_all(candidates, threads)
        have = [n for n, m in enumerate(measured) if m is not None]
        probabilities = self.model.probability([measured[n] for n in have])  # type: ignore[misc]
        p_of = dict(zip(have, probabilities, strict=True))
        out: list[Link] = []
        for n, ((i, j, cosine, _), m) in enumerate(zip(candidates, measured, strict=True)):
            if m is None:
                out.append(Link(i, j, float(COSINE_ONLY(np.array([cosine]))[()]), "similar_vectors", None, cosine))
                continue
            kind, edit = describe(m)
            out.append(Link(i, j, float(p_of[n]), kind, edit, cosine))
        return out

    def measure_all(self, candidates: Sequence[Candidate], threads: int = 1) -> list[PairEvidence | None]:
        """Measurements of every candidate (None without evidence): pixels in blocks, keypoints where they matter.

        OpenCV's matcher and RANSAC release the GIL, so ``threads`` fit pairs at
        once, while this thread goes on comparing the next blocks' thumbnails; each
        pair is judged on its own, so the answers never depend on it.
        """
        have = [n for n, (i, j, _, _) in enumerate(candidates) if self.evidence[i] and self.evidence[j]]
        measured: dict[int, PairEvidence] = {}
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            fitted = [(job[0], pool.submit(self._finish, job)) for job in self._blocks(candidates, have, measured)]
            for n, future in fitted:
                measured[n] = future.result()
        return [measured.get(n) for n in range(len(candidates))]

    def _blocks(
        self, candidates: Sequence[Candidate], have: list[int], measured: dict[int, PairEvidence]
    ) -> Iterator[tuple[int, int, int, float, float, float, str, bool, float]]:
        """Thumbnails compared block by block: pairs needing no fit go to ``measured``, the rest are yielded."""
        for start in range(0, len(have), PIXEL_BLOCK):
            block = have[start : start + PIXEL_BLOCK]
            pairs = [candidates[n] for n in block]
            first = np.fromiter((i for i, _, _, _ in pairs), dtype=np.intp, count=len(pairs))
            second = np.fromiter((j for _, j, _, _ in pairs), dtype=np.intp, count=len(pairs))
            self._prepare(np.concatenate([first, second]))
            na = _Thumbs(self._normalised, first.tolist())
            nb = _Thumbs(self._normalised, second.tolist())
            ca, cb = self._coarse[first], self._coarse[second]
            aspect_a, aspect_b = self._aspect[first], self._aspect[second]
            grey, ranks, move, detail = pixel_agreement_batch(na, nb, aspect_a, aspect_b, ca, cb)
            # Two flat pictures have no structure to correlate: they are the same pixels when their
            # tone and shape agree (blank exports of one slide), else nothing alike.
            for k in np.flatnonzero(self._flat[first] & self._flat[second]).tolist():
                i, j = pairs[k][0], pairs[k][1]
                same = _same_flat(self.evidence[i], self.evidence[j])  # type: ignore[arg-type]
                grey[k] = ranks[k] = detail[k] = 1.0 if same else -1.0
            for n, (i, j, cosine, rank), g, r, m, d in zip(block, pairs, grey, ranks, move, detail, strict=True):
                job = (n, i, j, cosine, float(g), float(r), DIHEDRAL[int(m)][0], rank < self.budget.rank, float(d))
                if needs_geometry(job[4], job[5], cosine, job[7]):
                    yield job
                else:  # no keypoint fit: nothing to wait for
                    measured[n] = self._finish(job)

    def _finish(self, job: tuple[int, int, int, float, float, float, str, bool, float]) -> PairEvidence:
        _, i, j, cosine, grey, ranks, how, geometry, detail = job
        a, b = self.evidence[i], self.evidence[j]
        assert a is not None and b is not None
        flat = bool(self._flat[i] and self._flat[j])
        budget = self.budget
        keypoints, turn, zoom = budget.keypoints, budget.turn_unfitted, budget.zoom_small
        return finish(a, b, cosine, flat, grey, ranks, how, geometry, detail, keypoints, turn, zoom)


class _Thumbs(Sequence[np.ndarray]):
    """Items' full normalised thumbnails, made only when indexed (pixel_agreement_batch needs few of them)."""

    def __init__(self, make: Callable[[int], np.ndarray], items: list[int]):
        self._make, self._items = make, items

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, k: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, k: slice) -> list[np.ndarray]: ...
    def __getitem__(self, k: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(k, slice):
            return [self._make(i) for i in self._items[k]]
        return self._make(self._items[k])


def _same_flat(a: Evidence, b: Evidence) -> bool:
    """Flat thumbnails of one tone (within FLAT_TONE grey levels) and one aspect ratio."""
    same_tone = abs(float(a.thumb.mean()) - float(b.thumb.mean())) <= FLAT_TONE
    return same_tone and abs(np.log(a.aspect / b.aspect)) <= ASPECT_TOLERANCE


def describe(p: PairEvidence) -> tuple[str, str | None]:
    """What kind of link the measurements show (for people; the score alone decides grouping)."""
    pixel = max(p.pixel, p.pixel_rank)
    if p.pixel_move == "same" and pixel >= SAME_PIXELS_NCC:
        return "same_pixels", None
    if pixel >= SAME_PIXELS_NCC or (p.pixel_move != "same" and pixel >= p.warped):
        return "edited_copy", p.pixel_move  # mirror or rotation by quarter turns
    if p.inliers:
        return "edited_copy", "geometry" if p.overlap < 0.9 or pixel < 0.9 else "tone"
    if p.inset > -1.0:
        return "edited_copy", "geometry"  # found inside the larger picture: a canvas, a window, a crop
    return "edited_copy", "tone"


def build_groups(n_items: int, links: Sequence[Link], threshold: float, multi_path: Sequence[bool]) -> list[Group]:
    """Groups from links at or above ``threshold``, split so that nothing joins through a chain.

    Within each connected component the representative is the item with the most
    (then strongest) links; it takes every item linked to it directly, and the rest
    of the component is grouped again the same way. An item that holds several
    byte-identical files is a group on its own even without links.
    """
    adjacency: dict[int, dict[int, Link]] = {}
    for link in links:
        if link.score >= threshold:
            adjacency.setdefault(link.a, {})[link.b] = link
            adjacency.setdefault(link.b, {})[link.a] = link
    groups: list[Group] = []
    placed: set[int] = set()
    for component in _components(adjacency):
        remaining = set(component)
        while len(remaining) >= 2:
            rep = max(sorted(remaining), key=lambda i: _weight(adjacency.get(i, {}), remaining))
            linked = sorted(j for j in adjacency.get(rep, {}) if j in remaining)
            if not linked:
                break
            members = sorted([rep, *linked])
            groups.append(Group(rep, members, [adjacency[rep][j] for j in linked]))
            remaining -= set(members)
            placed.update(members)
    groups.extend(Group(i, [i]) for i in range(n_items) if multi_path[i] and i not in placed)
    return groups


def _weight(neighbours: dict[int, Link], remaining: set[int]) -> tuple[int, float]:
    inside = [link.score for j, link in neighbours.items() if j in remaining]
    return len(inside), math.fsum(inside)


def _components(adjacency: dict[int, dict[int, Link]]) -> list[list[int]]:
    seen: set[int] = set()
    out = []
    for start in sorted(adjacency):
        if start in seen:
            continue
        stack, comp = [start], []
        seen.add(start)
        while stack:
            node = stack.pop()
            comp.append(node)
            for nxt in adjacency[node]:
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        out.append(sorted(comp))
    return out
