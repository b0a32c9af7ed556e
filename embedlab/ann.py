"""HNSW sidecar for fast `search` on large indexes (usearch, optional).

sqlite-vec answers a KNN query with a full scan: about 0.2 s at 100k and 2 s
at a million 1347-d vectors. Above ANN_MIN_VECTORS, `search` asks a usearch
HNSW graph (`INDEX/embedlab.usearch`, vectors held as float16 by default) for
a few dozen candidates and re-scores them exactly from the `embeddings` table,
so the scores printed are the same float64 cosines as the exact engines.

The sidecar is derived data, like the vec0 table: its keys are the rowids of
`embeddings`, and `sync` brings it level with that table (adds the missing
rows in rowid order, drops the gone ones) whenever they disagree, so it can
never serve a vector the store no longer holds. It is built on one thread:
a multi-threaded HNSW build inserts in a racy order and is not reproducible.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from .store import Store, StoreError

log = logging.getLogger("embedlab")

ANN_FILE = "embedlab.usearch"
ANN_MIN_VECTORS = 20_000  # below this sqlite-vec's exact scan answers in < 50 ms
DTYPES = ("f16", "i8", "f32")
DEFAULT_DTYPE = "f16"
CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 512  # 1M clustered vectors: recall@5 0.984 (128: 0.944, 256: 0.964)
_REBUILD_FRACTION = 0.2  # rebuild instead of deleting more than this share of the graph
_CHUNK = 8192


def hint_install(store: Store) -> None:
    """Suggest usearch for a large index once per index (a note in its meta), as information, so
    ``-q`` silences it and scripts that run many commands see it once, not on every command."""
    if store.meta().get("usearch_hint") == "1":
        return
    log.info("the index is large; pip install usearch==2.26.6 for the fast search path (said once per index)")
    if not store.read_only:
        with suppress(StoreError):
            store.set_meta(usearch_hint="1")


def available() -> bool:
    """True when the optional usearch package is installed."""
    return importlib.util.find_spec("usearch") is not None


def sidecar_path(store: Store) -> Path:
    return store.dir / ANN_FILE


def _new_index(dim: int, dtype: str) -> Any:
    from usearch.index import Index

    return Index(
        ndim=dim,
        metric="cos",
        dtype=dtype,
        connectivity=CONNECTIVITY,
        expansion_add=EXPANSION_ADD,
        expansion_search=EXPANSION_SEARCH,
    )


class AnnIndex:
    """The usearch graph of one store, opened read-only when it is in sync."""

    def __init__(self, index: Any, dtype: str):
        self.index = index
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.index)

    def search(self, query: np.ndarray, count: int) -> np.ndarray:
        """Rowids of about the ``count`` nearest vectors, nearest first."""
        self.index.expansion_search = max(EXPANSION_SEARCH, count)
        matches = self.index.search(np.ascontiguousarray(query, dtype=np.float32), count)
        return np.asarray(matches.keys, dtype=np.int64)


def open_synced(store: Store, dtype: str | None = None, *, threads: int = 1) -> AnnIndex:
    """The store's sidecar, brought level with `embeddings` first (built when missing).

    ``dtype`` (f16, i8, f32) applies when the sidecar is (re)built; an existing
    sidecar of another dtype is rebuilt. ``threads`` above 1 builds faster but not
    reproducibly (benchmarks only; embedlab's commands build on one).
    """
    if not available():
        raise StoreError("the fast search path needs the usearch package: pip install usearch==2.26.6")
    from usearch.index import Index

    dim = int(store.meta().get("dim", "0"))
    path = sidecar_path(store)
    want = dtype or store.meta().get("ann_dtype", DEFAULT_DTYPE)
    rowids = store.vector_rowids()
    index = None
    if path.is_file():
        try:
            index = Index.restore(str(path), view=True)
        except Exception as exc:  # a damaged or foreign file is rebuilt, never trusted
            log.warning("the search sidecar could not be read (%s); rebuilding it", type(exc).__name__)
    if index is not None and (index.ndim != dim or _dtype_name(index) != want):
        index = None
    if index is not None and _same_keys(index, rowids):
        return AnnIndex(index, want)
    if index is not None:
        index = Index.restore(str(path), view=False)  # a viewed file cannot change
    index = _sync(store, index, rowids, dim, want, threads)
    tmp = path.with_name(path.name + ".tmp")
    index.save(str(tmp))
    os.replace(tmp, path)
    store.set_meta(ann_dtype=want)
    return AnnIndex(index, want)


def remove_sidecar(store: Store) -> None:
    sidecar_path(store).unlink(missing_ok=True)


def _dtype_name(index: Any) -> str:
    return str(index.dtype).rsplit(".", 1)[-1].lower()


def _keys(index: Any) -> np.ndarray:
    return np.sort(np.asarray(index.keys, dtype=np.int64)) if len(index) else np.zeros(0, np.int64)


def _same_keys(index: Any, rowids: np.ndarray) -> bool:
    return len(index) == len(rowids) and bool(np.array_equal(_keys(index), rowids))


def _sync(store: Store, index: Any, rowids: np.ndarray, dim: int, dtype: str, threads: int) -> Any:
    """Add the rows `embeddings` holds and the graph lacks; drop the ones it no longer holds."""
    have = _keys(index) if index is not None else np.zeros(0, np.int64)
    gone = np.setdiff1d(have, rowids)
    if index is None or len(gone) > _REBUILD_FRACTION * max(1, len(have)):
        if index is not None:
            log.info("rebuilding the search sidecar (%d of %d vectors gone)", len(gone), len(have))
        index, have, gone = _new_index(dim, dtype), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(gone):
        index.remove(gone)
    missing = np.setdiff1d(rowids, have)
    if len(missing):
        log.info("adding %d vectors to the search sidecar (%s HNSW)", len(missing), dtype)
        for keys, vectors in store.iter_vectors_by_rowid(int(missing[0]), _CHUNK):
            keep = np.isin(keys, missing)
            if keep.any():
                index.add(keys[keep], vectors[keep], threads=threads)
    return index
