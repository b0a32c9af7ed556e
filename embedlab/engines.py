"""Search engines behind one interface, chosen from a registry.

An engine turns a query vector into candidate contents (sha256) with exact
float64 cosines; `search.Searcher` turns those into ranked paths. Every engine
re-scores its candidates from the float32 store, so they differ only in which
candidates they can miss (none, for the exact ones). Adding an engine is one
`register_engine(EngineEntry(...))`: when it claims a request, how it opens on a
store, and (optionally) how its derived data follows an `embed`.

Registered here, in the order they are asked: ``ann`` (the HNSW sidecar of
`embedlab.ann`, for large indexes), ``sqlite-vec`` (vec0 KNN), ``numpy`` (an
exact scan of the matrix in memory, which always answers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import Hint
from .store import KNN_MAX, Store, StoreError

log = logging.getLogger("embedlab")

ANN_CHOICES = ("auto", "always", "never")
# Candidates asked of the HNSW graph before the exact re-score: a wide pool
# costs little (one indexed read of a few hundred KB) and lifts recall.
ANN_CANDIDATES = 64

Paths = Callable[[], dict[str, list[str]]]  # every embedded content hash with its sorted paths


def cosine_scores(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cosine of unit vectors, in float64 so every engine rounds identically."""
    return matrix.astype(np.float64) @ query.astype(np.float64)


@dataclass(frozen=True)
class EngineRequest:
    """What the caller asked for: ``exact`` (a full exact scan) and the ``ann`` mode (auto, always, never)."""

    exact: bool = False
    ann: str = "auto"


class Engine(Protocol):
    """Candidates for one query: content hashes and their exact cosines (any order)."""

    def candidates(self, query: np.ndarray, want: int) -> tuple[list[str], np.ndarray]: ...


@dataclass(frozen=True)
class EngineEntry:
    """One engine in the registry.

    ``claims(store, request)``: whether it serves this request (asked in registry
    order; it may raise when the request names it but it cannot run).
    ``open(store, paths)``: the engine for one store. ``paths_per_query``: it looks
    paths up per query instead of loading all of them (3 s at 1M images).
    ``sync(store, request, dtype)``: bring its derived data level after an embed.
    """

    name: str
    claims: Callable[[Store, EngineRequest], bool]
    open: Callable[[Store, Paths], Engine]
    paths_per_query: bool = False
    sync: Callable[[Store, EngineRequest, str | None], None] | None = None


ENGINES: dict[str, EngineEntry] = {}


def register_engine(entry: EngineEntry) -> None:
    """Add (or replace) an engine; engines registered later are asked later."""
    ENGINES[entry.name] = entry


def choose_engine(store: Store, *, exact: bool, ann: str) -> str:
    """The first registered engine that claims the request."""
    request = EngineRequest(exact=exact, ann=ann)
    for entry in ENGINES.values():
        if entry.claims(store, request):
            return entry.name
    raise StoreError("no search engine can serve this index")  # numpy always claims


def sync_engines(store: Store, ann: str, dtype: str | None = None) -> None:
    """After an embed: every engine with derived data brings it level with the store."""
    request = EngineRequest(ann=ann)
    for entry in ENGINES.values():
        if entry.sync is not None:
            entry.sync(store, request, dtype)


# -- exact NumPy scan ---------------------------------------------------------------


class NumpyEngine:
    """Every vector in memory: a float32 BLAS scan, then an exact re-score of the best."""

    def __init__(self, store: Store, paths: Paths | None = None):
        self.store = store
        self._shas: list[str] = []
        self._matrix: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._matrix is None:
            self._shas, self._matrix = self.store.load_vectors(through_vec=False)
        return self._matrix

    def candidates(self, query: np.ndarray, want: int) -> tuple[list[str], np.ndarray]:
        matrix = self._load()
        rough = matrix @ query.astype(np.float32)
        keep = np.argpartition(-rough, want - 1)[:want] if len(rough) > want else np.arange(len(rough))
        return [self._shas[i] for i in keep], cosine_scores(matrix[keep], query)


# -- sqlite-vec KNN -----------------------------------------------------------------


class SqliteVecEngine:
    """vec0's KNN (a full scan inside SQLite, no load), then an exact re-score; larger k than
    sqlite-vec answers (KNN_MAX) falls back to the NumPy scan."""

    def __init__(self, store: Store, paths: Paths):
        self.store = store
        self.paths = paths
        self._fallback: NumpyEngine | None = None

    def candidates(self, query: np.ndarray, want: int) -> tuple[list[str], np.ndarray]:
        if want > KNN_MAX:
            self._fallback = self._fallback or NumpyEngine(self.store)
            return self._fallback.candidates(query, want)
        known = self.paths()
        shas = [sha for sha, _ in self.store.knn(query, want) if sha in known]
        if not shas:
            return [], np.zeros(0)
        return shas, cosine_scores(self.store.vectors_for(shas), query)


# -- HNSW sidecar -------------------------------------------------------------------


class AnnEngine:
    """HNSW candidates from the usearch sidecar (brought level with the store first), re-scored exactly."""

    def __init__(self, store: Store, paths: Paths | None = None):
        from .ann import open_synced

        self.store = store
        self.index = open_synced(store)

    def candidates(self, query: np.ndarray, want: int) -> tuple[list[str], np.ndarray]:
        rowids = self.index.search(query, max(want, ANN_CANDIDATES))
        shas = [s for s in self.store.shas_for_rowids(rowids.tolist()) if s is not None]
        if not shas:
            return [], np.zeros(0)
        return shas, cosine_scores(self.store.vectors_for(shas), query)


def _ann_claims(store: Store, request: EngineRequest) -> bool:
    if request.exact or request.ann == "never":
        return False
    from .ann import ANN_MIN_VECTORS, available, hint_install

    if request.ann == "always" or store.vector_count() >= ANN_MIN_VECTORS:
        if available():
            return True
        if request.ann == "always":
            raise StoreError("needs the usearch package", hint=Hint("needs_usearch", sep=": "), subject="ann_always")
        hint_install(store)
    return False


def _ann_sync(store: Store, request: EngineRequest, dtype: str | None) -> None:
    """Keep the sidecar in step after an embed: from ANN_MIN_VECTORS vectors, when it exists, or always."""
    from . import ann

    if request.ann == "never":
        return
    large = store.vector_count() >= ann.ANN_MIN_VECTORS or ann.sidecar_path(store).is_file()
    if request.ann == "always" or (large and ann.available()):
        started = time.perf_counter()
        size = len(ann.open_synced(store, dtype))
        log.info("search sidecar in sync: %d vectors, %.2fs", size, time.perf_counter() - started)
    elif large:
        ann.hint_install(store)


register_engine(EngineEntry("ann", _ann_claims, AnnEngine, paths_per_query=True, sync=_ann_sync))
register_engine(
    EngineEntry("sqlite-vec", lambda store, request: not request.exact and store.vec_loaded, SqliteVecEngine)
)
register_engine(EngineEntry("numpy", lambda store, request: True, NumpyEngine))
