"""`search`: nearest indexed images for query images, by cosine similarity.

The engines (`embedlab.engines`: sqlite-vec KNN, an exact NumPy scan, the HNSW
sidecar of large indexes) propose candidate contents with exact scores; this
module turns them into ranked paths, identically whichever engine answered.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .engines import ANN_CANDIDATES, ANN_CHOICES, ENGINES, choose_engine, cosine_scores
from .store import Store

log = logging.getLogger("embedlab")

SCORE_DECIMALS = 6
# Extra candidates fetched so that float32 distance rounding at the cut cannot
# drop a vector that the exact re-score ranks inside top k.
_CANDIDATE_MARGIN = 16

__all__ = ["ANN_CANDIDATES", "ANN_CHOICES", "SCORE_DECIMALS", "Hit", "Searcher", "choose_engine", "cosine_scores"]


@dataclass(frozen=True)
class Hit:
    path: str
    score: float
    copy: float | None = None  # P(same picture as the query), for a verified copy


class Searcher:
    """Answers top-k queries against one index through the engine the registry picks."""

    def __init__(self, store: Store, *, exact: bool = False, ann: str = "auto"):
        self.store = store
        self.engine = choose_engine(store, exact=exact, ann=ann)
        entry = ENGINES[self.engine]
        self._paths = None if entry.paths_per_query else store.ok_paths_by_sha()
        self._engine = entry.open(store, lambda: self.paths)

    @property
    def paths(self) -> dict[str, list[str]]:
        """Every embedded content hash with its sorted paths."""
        if self._paths is None:
            self._paths = self.store.ok_paths_by_sha()
        return self._paths

    def top_k(self, query: np.ndarray, k: int) -> list[Hit]:
        if k <= 0 or (self._paths is not None and not self._paths):
            return []
        shas, scores = self._engine.candidates(query, k + _CANDIDATE_MARGIN)
        found = self._paths if self._paths is not None else self.store.ok_paths_for(shas)
        hits = [
            Hit(path, round(float(score), SCORE_DECIMALS))
            for sha, score in zip(shas, scores, strict=True)
            for path in found.get(sha, ())
        ]
        hits.sort(key=lambda h: (-h.score, h.path))
        return hits[:k]
