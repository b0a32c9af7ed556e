"""`search`: nearest indexed images for query images, by cosine similarity.

Two engines give the same answer: sqlite-vec KNN (candidates from the vec0
table, then exact re-scoring) and an exact NumPy scan of the stored vectors,
used when the extension cannot load or when asked for. Large indexes add a
third, approximate one (`embedlab.ann`, an HNSW sidecar): its candidates are
re-scored exactly too, so only a neighbour the graph misses can differ.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .store import KNN_MAX, Store, StoreError

log = logging.getLogger("embedlab")

SCORE_DECIMALS = 6
# Extra candidates fetched from sqlite-vec so that float32 distance rounding
# at the cut cannot drop a vector that the exact re-score ranks inside top k.
_CANDIDATE_MARGIN = 16
# Candidates asked of the HNSW graph before the exact re-score: a wide pool
# costs little (one indexed read of a few hundred KB) and lifts recall.
ANN_CANDIDATES = 64
ANN_CHOICES = ("auto", "always", "never")


@dataclass(frozen=True)
class Hit:
    path: str
    score: float
    copy: float | None = None  # P(same picture as the query), for a verified copy


def cosine_scores(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of unit vectors, in float64 so both engines round identically."""
    return matrix.astype(np.float64) @ query.astype(np.float64)


class Searcher:
    """Answers top-k queries against one index, through sqlite-vec or NumPy."""

    def __init__(self, store: Store, *, exact: bool = False, ann: str = "auto"):
        self.store = store
        self.engine = choose_engine(store, exact=exact, ann=ann)
        self._ann = None
        self._shas: list[str] = []
        self._matrix: np.ndarray | None = None
        # The HNSW engine looks paths up per query: loading all of them costs 3 s at 1M images.
        self._paths = None if self.engine == "ann" else store.ok_paths_by_sha()
        if self.engine == "ann":
            from .ann import open_synced

            self._ann = open_synced(store)
        if self.engine == "numpy":
            self._shas, self._matrix = store.load_vectors(through_vec=False)

    @property
    def paths(self) -> dict[str, list[str]]:
        """Every embedded content hash with its sorted paths."""
        if self._paths is None:
            self._paths = self.store.ok_paths_by_sha()
        return self._paths

    def top_k(self, query: np.ndarray, k: int) -> list[Hit]:
        if k <= 0 or (self._paths is not None and not self._paths):
            return []
        shas, scores = self._candidates(query, k)
        found = self._paths if self._paths is not None else self.store.ok_paths_for(shas)
        hits = [
            Hit(path, round(float(score), SCORE_DECIMALS))
            for sha, score in zip(shas, scores, strict=True)
            for path in found.get(sha, ())
        ]
        hits.sort(key=lambda h: (-h.score, h.path))
        return hits[:k]

    def _candidates(self, query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
        want = k + _CANDIDATE_MARGIN
        if self._ann is not None:
            rowids = self._ann.search(query, max(want, ANN_CANDIDATES))
            ann_shas = [s for s in self.store.shas_for_rowids(rowids.tolist()) if s is not None]
            if not ann_shas:
                return [], np.zeros(0)
            return ann_shas, cosine_scores(self.store.vectors_for(ann_shas), query)
        if self.engine == "sqlite-vec" and want <= KNN_MAX:
            shas = [sha for sha, _ in self.store.knn(query, want) if sha in self.paths]
            if not shas:
                return [], np.zeros(0)
            return shas, cosine_scores(self.store.vectors_for(shas), query)
        if self._matrix is None:  # sqlite-vec answers at most KNN_MAX: the exact scan serves larger k
            self._shas, self._matrix = self.store.load_vectors(through_vec=False)
        rough = self._matrix @ query.astype(np.float32)  # float32 BLAS scan, then exact re-score
        keep = np.argpartition(-rough, want - 1)[:want] if len(rough) > want else np.arange(len(rough))
        return [self._shas[i] for i in keep], cosine_scores(self._matrix[keep], query)


def choose_engine(store: Store, *, exact: bool, ann: str) -> str:
    """numpy (--exact), ann (large index, or --ann always), else sqlite-vec when it loaded."""
    if exact:
        return "numpy"
    if ann != "never":
        from .ann import ANN_MIN_VECTORS, available, hint_install

        if ann == "always" or store.vector_count() >= ANN_MIN_VECTORS:
            if available():
                return "ann"
            if ann == "always":
                raise StoreError("--ann always needs the usearch package: pip install usearch==2.26.6")
            hint_install(store)
    return "sqlite-vec" if store.vec_loaded else "numpy"
