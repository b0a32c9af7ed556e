"""Search extras: diverse re-ranking (MMR) and per-result explanations.

A query with near-duplicates in the index otherwise fills its top-k with copies
of one picture; maximal marginal relevance trades a little similarity to the
query for dissimilarity to what is already picked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .duplicates import FitBudget, Verifier
from .evidence import QUERY_FEATURES, Evidence
from .search import SCORE_DECIMALS, Hit, Searcher, cosine_scores
from .store import Store

# How many candidates MMR chooses from, per result wanted.
POOL_FACTOR = 4
# Candidates verified against a query's own evidence; a verified copy of the query comes first.
COPY_POOL = 40  # on the tune half of bench/dupbench.py: 20 puts 21 of 24 copy queries' sources first, 40 and 60 23
COPY_THRESHOLD = 0.5  # chosen on the tune half (0.92 found fewer copies there)


def mmr_order(query_sims: np.ndarray, pairwise: np.ndarray, k: int, lam: float) -> list[int]:
    """Greedy MMR: pick argmax of lam * sim(q, d) - (1 - lam) * max sim(d, picked).

    Candidates come sorted best first, so ties resolve to the better-ranked one
    and the order is deterministic.
    """
    n = len(query_sims)
    picked: list[int] = []
    redundancy = np.full(n, -np.inf)
    available = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        red = np.where(np.isfinite(redundancy), redundancy, 0.0)
        gain = np.where(available, lam * query_sims - (1.0 - lam) * red, -np.inf)
        best = int(np.argmax(gain))
        picked.append(best)
        available[best] = False
        redundancy = np.maximum(redundancy, pairwise[best])
    return picked


class Ranker:
    """Top-k through a Searcher, optionally diversified and explained."""

    def __init__(self, store: Store, searcher: Searcher):
        self.store = store
        self.searcher = searcher
        self.sha_of = {path: sha for sha, paths in searcher.paths.items() for path in paths}
        self._exact: tuple[list[str], np.ndarray] | None = None

    def top_k(
        self,
        query: np.ndarray,
        k: int,
        *,
        diverse: float | None = None,
        threshold: float | None = None,
        evidence: Evidence | None = None,
        turned: Sequence[np.ndarray] = (),
    ) -> list[Hit]:
        """Top k, or with ``diverse`` (MMR's lambda) k picked by MMR among the best candidates.

        ``threshold`` drops results below it first, so MMR never trades a
        relevant result for an unrelated one (a blank image is novel too).
        With the query's ``evidence``, the best COPY_POOL candidates are verified
        against it and verified copies (P >= COPY_THRESHOLD) move to the front,
        most certain first, each with its ``copy`` probability. ``turned``: the
        query's vectors turned by quarter turns; their nearest are verified too (a
        rotated copy's source), and join the results only when verified as copies.
        """
        floor = -np.inf if threshold is None else threshold
        if evidence is not None and diverse is None:
            pool = [h for h in self.searcher.top_k(query, max(k, COPY_POOL)) if h.score >= floor]
            return self._copies_first(pool, evidence, self._turned_pool(query, turned, pool, floor))[:k]
        if diverse is None:
            return [h for h in self.searcher.top_k(query, k) if h.score >= floor]
        pool = [h for h in self.searcher.top_k(query, max(k * POOL_FACTOR, k + 16)) if h.score >= floor]
        if not pool:
            return []
        vectors = self.store.vectors_for([self.sha_of[h.path] for h in pool])
        sims = np.array([h.score for h in pool], dtype=np.float64)
        order = mmr_order(sims, cosine_scores(vectors, vectors.T), k, diverse)
        return [pool[i] for i in order]

    def _turned_pool(self, query: np.ndarray, turned: Sequence[np.ndarray], pool: list[Hit], floor: float) -> list[Hit]:
        """The nearest of each turned query vector not already in ``pool``, scored against the query itself."""
        seen = {h.path for h in pool}
        extra: dict[str, str] = {}
        for vector in turned:
            for hit in self.searcher.top_k(np.asarray(vector, dtype=np.float32), COPY_POOL):
                if hit.path not in seen and hit.path not in extra:
                    extra[hit.path] = self.sha_of[hit.path]
        if not extra:
            return []
        unique = sorted(set(extra.values()))
        scores = cosine_scores(self.store.vectors_for(unique), query)
        score_of = {sha: round(float(s), SCORE_DECIMALS) for sha, s in zip(unique, scores, strict=True)}
        hits = [Hit(path, score_of[sha]) for path, sha in extra.items()]
        return sorted((h for h in hits if h.score >= floor), key=lambda h: (-h.score, h.path))

    def _copies_first(self, pool: list[Hit], evidence: Evidence, extra: Sequence[Hit] = ()) -> list[Hit]:
        """Verify the pool (and ``extra``) against the query as `analyze` verifies a pair (duplicates.Verifier).

        Hits of ``extra`` stay out of the answer unless verified as copies."""
        listed = len(pool)
        pool = [*pool, *extra]
        shas = [self.sha_of[h.path] for h in pool]
        unique = sorted(set(shas))
        stored = self.store.evidence_for(unique)
        # Every corner of a fresh query (QUERY_FEATURES) against the stored ones of each candidate.
        budget = FitBudget(keypoints=QUERY_FEATURES)
        verifier = Verifier([evidence, *(stored.get(sha) for sha in unique)], budget=budget)
        cosine = {sha: h.score for sha, h in zip(shas, pool, strict=True)}
        candidates = [(0, n + 1, cosine[sha], 0) for n, sha in enumerate(unique) if sha in stored]
        verified = {unique[link.b - 1]: link.score for link in verifier.links(candidates)}
        copies = [
            replace(h, copy=round(verified[s], SCORE_DECIMALS))
            for h, s in zip(pool, shas, strict=True)
            if verified.get(s, 0.0) >= COPY_THRESHOLD
        ]
        copies.sort(key=lambda h: (-(h.copy or 0.0), -h.score, h.path))
        rest = [h for h, s in zip(pool[:listed], shas[:listed], strict=True) if verified.get(s, 0.0) < COPY_THRESHOLD]
        return copies + rest

    def exact_ranks(self, query: np.ndarray) -> dict[str, int]:
        """Every indexed path's 1-based rank in a full exact scan (ties by path, as `search`)."""
        if self._exact is None:
            self._exact = self.store.load_vectors(through_vec=False)
        shas, matrix = self._exact
        scores = np.round(cosine_scores(matrix, query), SCORE_DECIMALS)
        ranked = sorted(
            (
                (float(s), path)
                for sha, s in zip(shas, scores, strict=True)
                for path in self.searcher.paths.get(sha, ())
            ),
            key=lambda t: (-t[0], t[1]),
        )
        return {path: rank for rank, (_, path) in enumerate(ranked, 1)}
