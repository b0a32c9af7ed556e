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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .evidence import Evidence
from .verify import Logistic, Model, PairEvidence, measure, normalised_thumb

CANDIDATE_K = 20  # nearest neighbours of each item that are verified (10 missed 6 % of true pairs on the tune half)
CANDIDATE_COSINE = 0.45  # proposals below this cosine are never verified (tuned for recall on the tune half)
SAME_PIXELS_NCC = 0.985  # thumbnails this close under no move: the same pixels, re-encoded or resized

# Fitted by bench/dupbench.py --fit on the tuning half; see docs/SCORES.md.
MODEL = Model(
    pixel=Logistic(weights=(1.5704, -0.4826, 0.6517), bias=-2.4154),
    geometry=Logistic(weights=(2.3711, 13.7918, 1.368, 3.6696, -3.4778, -0.4872), bias=-11.4159),
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


def candidate_pairs(
    index: np.ndarray, sim: np.ndarray, *, k: int = CANDIDATE_K, floor: float = CANDIDATE_COSINE
) -> list[tuple[int, int, float]]:
    """Unique (i, j, cosine) with i < j from each row's k nearest neighbours at or above ``floor``."""
    seen: dict[tuple[int, int], float] = {}
    kk = min(k, index.shape[1])
    for i in range(index.shape[0]):
        for j, s in zip(index[i, :kk], sim[i, :kk], strict=True):
            if s < floor:
                break  # rows are nearest first
            a, b = (i, int(j)) if i < j else (int(j), i)
            if a != b:
                seen[(a, b)] = float(s)
    return [(a, b, s) for (a, b), s in sorted(seen.items())]


class Verifier:
    """Scores candidate pairs on stored evidence; normalised thumbnails are computed once per item."""

    def __init__(self, evidence: Sequence[Evidence | None], model: Model = MODEL):
        self.evidence = evidence
        self.model = model
        self._norm: dict[int, tuple[np.ndarray, bool]] = {}

    def _normalised(self, i: int) -> tuple[np.ndarray, bool]:
        if i not in self._norm:
            ev = self.evidence[i]
            assert ev is not None
            self._norm[i] = normalised_thumb(ev.thumb)
        return self._norm[i]

    def pair(self, i: int, j: int, cosine: float) -> PairEvidence | None:
        a, b = self.evidence[i], self.evidence[j]
        if a is None or b is None:
            return None
        (na, fa), (nb, fb) = self._normalised(i), self._normalised(j)
        return measure(a, b, cosine, na, nb, fa and fb)

    def link(self, i: int, j: int, cosine: float) -> Link:
        measured = self.pair(i, j, cosine)
        if measured is None:
            p = float(COSINE_ONLY(np.array([cosine]))[()])
            return Link(i, j, p, "similar_vectors", None, cosine)
        p = float(self.model.probability([measured])[0])
        kind, edit = describe(measured)
        return Link(i, j, p, kind, edit, cosine)


def describe(p: PairEvidence) -> tuple[str, str | None]:
    """What kind of link the measurements show (for people; the score alone decides grouping)."""
    pixel = max(p.pixel, p.pixel_rank)
    if p.pixel_move == "same" and pixel >= SAME_PIXELS_NCC:
        return "same_pixels", None
    if pixel >= SAME_PIXELS_NCC or (p.pixel_move != "same" and pixel >= p.warped):
        return "edited_copy", p.pixel_move  # mirror or rotation by quarter turns
    if p.inliers:
        return "edited_copy", "geometry" if p.overlap < 0.9 or pixel < 0.9 else "tone"
    return "edited_copy", "tone"


def verify_candidates(
    candidates: Sequence[tuple[int, int, float]],
    evidence: Sequence[Evidence | None],
    on_pairs: Callable[[int], None] | None = None,
) -> list[Link]:
    """Every candidate scored, in candidate order."""
    verifier = Verifier(evidence)
    links = []
    for n, (i, j, s) in enumerate(candidates, 1):
        links.append(verifier.link(i, j, s))
        if on_pairs is not None and n % 1000 == 0:
            on_pairs(1000)
    return links


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
