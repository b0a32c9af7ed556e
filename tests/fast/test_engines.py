"""The search-engine registry on a real (empty) SQLite store: the first engine that claims serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedlab import engines
from embedlab.analysis import KNN_GRAPHS, choose_graph, neighbours
from embedlab.store import Store, StoreError

from ..conftest import unit_rows


def test_engines_are_chosen_as_before(tmp_path: Path) -> None:
    with Store(tmp_path / "idx", create=True) as store:
        assert list(engines.ENGINES) == ["ann", "sqlite-vec", "numpy"]
        assert engines.choose_engine(store, exact=True, ann="auto") == "numpy"
        assert engines.choose_engine(store, exact=False, ann="never") == ("sqlite-vec" if store.vec_loaded else "numpy")
    with Store(tmp_path / "idx", use_vec=False) as store:
        assert engines.choose_engine(store, exact=False, ann="auto") == "numpy"


def test_a_registered_engine_is_asked_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Fixed:
        def __init__(self, store: Store, paths: engines.Paths) -> None:
            self.store = store

        def candidates(self, query: np.ndarray, want: int) -> tuple[list[str], np.ndarray]:
            return ["a" * 64], np.array([1.0])

    entry = engines.EngineEntry("fixed", lambda store, request: request.ann == "always", Fixed)
    monkeypatch.setattr(engines, "ENGINES", {"fixed": entry, **engines.ENGINES})
    with Store(tmp_path / "idx", create=True) as store:
        assert engines.choose_engine(store, exact=False, ann="always") == "fixed"
        assert engines.choose_engine(store, exact=True, ann="auto") == "numpy"


def test_ann_always_without_usearch_is_an_error_in_library_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedlab import ann

    monkeypatch.setattr(ann, "available", lambda: False)
    with Store(tmp_path / "idx", create=True) as store, pytest.raises(StoreError) as caught:
        engines.choose_engine(store, exact=False, ann="always")
    assert str(caught.value) == "ann='always' needs the usearch package: pip install usearch==2.26.6"


def test_knn_graph_builders_by_name_agree_on_small_input() -> None:
    rng = np.random.default_rng(0)
    matrix = unit_rows(rng.normal(size=(300, 24))).astype(np.float32)
    assert set(KNN_GRAPHS) == {"exact", "ivf"}
    assert (choose_graph(300, None), choose_graph(300, True), choose_graph(300, "exact")) == ("exact", "ivf", "exact")
    exact = neighbours(matrix, 5, 0.5, memory_mb=8, approximate=False)
    ivf = neighbours(matrix, 5, 0.5, memory_mb=8, approximate="ivf")
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(exact.index, ivf.index, strict=True)])
    assert recall > 0.9
