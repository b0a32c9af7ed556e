"""Large-index paths on small real data: HNSW search sidecar, k-NN graph, bounded memory."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedlab import analysis, ann, ivf
from embedlab.analysis import analyze_vectors, load_for_analysis, neighbourhood
from embedlab.backbones import Backbone
from embedlab.cli import main
from embedlab.engines import AnnEngine
from embedlab.images import decode
from embedlab.ivf import knn_graph
from embedlab.search import Searcher
from embedlab.store import Store

from .conftest import skimage_image, small, unit_rows


def _json(argv: list[str]) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["-q", *argv]) == 0
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around n // 20 centres with a decaying spectrum, like image embeddings."""
    rng = np.random.default_rng(seed)
    scale = np.arange(1, dim + 1) ** -0.75
    centres = rng.normal(size=(n // 20, dim)) * scale
    points = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.normal(size=(n, dim)) * scale
    points[:, 0] += scale.sum() ** 0.5  # a shared component, as the hybrid recipe's constant
    return unit_rows(points).astype(np.float32)


def test_exact_analysis_does_not_depend_on_the_block_size(built_index: Path) -> None:
    with Store(built_index) as store:
        shas, matrix = store.load_vectors(through_vec=False)
        by_sha, quality = store.ok_paths_by_sha(), store.quality()
    paths = [by_sha[s] for s in shas]
    one_row = neighbourhood(matrix, 5, 0.6, block_bytes=1)  # one row per block
    whole = neighbourhood(matrix, 5, 0.6, block_bytes=1 << 30)
    # BLAS may round the last bit differently for another block shape; nothing more.
    assert np.array_equal(one_row.index, whole.index)
    assert np.allclose(one_row.sim, whole.sim, rtol=0, atol=1e-12)
    assert [p[:2] for p in one_row.pairs] == [p[:2] for p in whole.pairs] and len(whole.pairs) > 0
    small_budget = analyze_vectors(matrix, paths, threshold=0.9, anomaly_top=4, k=3, quality=quality, memory_mb=1)
    default = analyze_vectors(matrix, paths, threshold=0.9, anomaly_top=4, k=3, quality=quality)
    assert small_budget == default and default["duplicate_groups"]


def test_block_rows_follow_the_memory_budget() -> None:
    assert analysis.block_rows(1_000_000, 1024 << 20) == 44  # 44 x 1M x 24 bytes <= 1 GiB
    assert analysis.block_rows(100, 1) == 1


def test_knn_graph_equals_exact_on_real_vectors(built_index: Path) -> None:
    with Store(built_index) as store:
        _, matrix = store.load_vectors(through_vec=False)
    exact = neighbourhood(matrix, 4, 0.6)
    graph = knn_graph(matrix, 4, 0.6, block_bytes=1 << 20)
    assert np.array_equal(graph.index, exact.index)
    assert np.allclose(graph.sim, exact.sim, rtol=0, atol=1e-12)
    assert [(i, j) for i, j, _ in graph.pairs] == [(i, j) for i, j, _ in exact.pairs]


def test_knn_graph_recall_on_clustered_vectors() -> None:
    matrix = _clustered(3000, 96, seed=0)
    exact = neighbourhood(matrix, 10, 0.95)
    graph = knn_graph(matrix, 10, 0.95, block_bytes=4 << 20, nprobe=12)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.index, graph.index, strict=True)])
    assert 0.95 <= recall < 1.0  # approximate, yet close (and few cells probed, so not a full scan)
    found = graph.index == exact.index
    assert np.allclose(graph.sim[found], exact.sim[found], rtol=0, atol=1e-12)  # scores are exact
    assert {(i, j) for i, j, _ in graph.pairs} <= {(i, j) for i, j, _ in exact.pairs}
    again = knn_graph(matrix, 10, 0.95, block_bytes=1 << 20, nprobe=12)  # other blocks, same answer
    assert np.array_equal(again.index, graph.index) and again.pairs == graph.pairs


def test_pool_merge_keeps_the_best_of_old_and_new() -> None:
    rng = np.random.default_rng(3)
    take, n = 6, 40
    pool_val = -np.sort(-rng.random((n, take)).astype(np.float32), axis=1)
    pool_idx = rng.permutation(1000)[: n * take].reshape(n, take).astype(np.int32)
    pool_val[5] = -np.inf  # a row not filled yet
    pool_idx[5] = -1
    rows = rng.integers(0, n, 300).astype(np.int32)
    idx = (1000 + np.arange(300)).astype(np.int32)
    val = rng.random(300).astype(np.float32)
    expect = {}
    for r in range(n):
        old = [(float(v), int(i)) for v, i in zip(pool_val[r], pool_idx[r], strict=True)]
        new = [(float(v), int(i)) for v, i, rr in zip(val, idx, rows, strict=True) if rr == r]
        expect[r] = sorted(old + new, key=lambda p: -p[0])[:take]
    ivf._merge(pool_idx, pool_val, rows, idx, val)
    for r in range(n):
        assert list(zip(pool_val[r].tolist(), pool_idx[r].tolist(), strict=True)) == expect[r]


def test_knn_graph_probing_every_cell_is_exact() -> None:
    """With every cell probed, the pools merged cell by cell hold each item's true nearest."""
    matrix = _clustered(3000, 96, seed=1)
    exact = neighbourhood(matrix, 10, 0.95)
    graph = knn_graph(matrix, 10, 0.95, block_bytes=1 << 20, nprobe=10_000)
    assert np.array_equal(graph.index, exact.index)
    assert np.allclose(graph.sim, exact.sim, rtol=0, atol=1e-12)
    # Duplicate pairs are the edges among each item's 10 nearest (enough for the groups).
    edges = {(min(i, j), max(i, j)) for i, row in enumerate(exact.index.tolist()) for j in row}
    expect = [p[:2] for p in exact.pairs if p[:2] in edges]
    assert [p[:2] for p in graph.pairs] == expect and expect


def test_analyze_cli_ann_and_exact_agree_on_a_real_index(built_index: Path) -> None:
    common = ["analyze", "--index", str(built_index), "--dup-threshold", "0.9", "--anomaly-top", "5", "--json"]
    exact = _json([*common, "--ann", "never"])[0]
    approx = _json([*common, "--ann", "always", "--memory-mb", "1"])[0]
    assert approx == exact and exact["duplicate_groups"]


def test_streamed_load_equals_the_plain_load(built_index: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(built_index) as store:
        shas, matrix = store.load_vectors(through_vec=False)
        monkeypatch.setattr(analysis, "_LOAD_CHUNK", 5)  # several chunks
        streamed_shas, streamed = load_for_analysis(store)
        assert streamed_shas == shas and streamed.dtype == np.float32 and streamed.tobytes() == matrix.tobytes()
        monkeypatch.setattr(analysis, "FLOAT16_ABOVE_BYTES", 0)  # as if a million vectors
        half_shas, half = load_for_analysis(store)
    assert half_shas == shas and half.dtype == np.float16
    assert np.abs(half.astype(np.float32) - matrix).max() < 1e-3


@pytest.fixture
def growing(work: Path, photo_dir: Path) -> Path:
    """A copy of the photo folder that the test can add to and remove from."""
    shutil.copytree(photo_dir, work / "imgs")
    return work / "imgs"


def test_search_sidecar_matches_exact_and_follows_incremental_embeds(
    growing: Path, backbone: Backbone, work: Path
) -> None:
    assert main(["-q", "embed", "--images-dir", "./imgs", "--out", "./index", "--ann", "always"]) == 0
    sidecar = work / "index" / ann.ANN_FILE
    assert sidecar.is_file()
    queries = backbone.embed([decode(p).rgb for p in sorted(growing.glob("*.png"))[:4]])
    with Store("index") as store:
        fast, exact = Searcher(store, ann="always"), Searcher(store, exact=True)
        assert (fast.engine, exact.engine) == ("ann", "numpy")
        for q in queries:
            for k in (1, 5, 50):
                assert fast.top_k(q, k) == exact.top_k(q, k)
        assert fast._paths is None  # paths read per query, never all of them
        some = sorted(exact.paths)[::3]
        assert store.ok_paths_for(some) == {s: exact.paths[s] for s in some}

    # Incremental embed: one image gone, one new; the sidecar follows the store.
    (growing / "moon.png").unlink()
    small(skimage_image("rocket")).convert("RGB").save(growing / "rocket.png")
    assert main(["-q", "embed", "--images-dir", "./imgs", "--out", "./index"]) == 0  # auto: sidecar exists
    rocket = backbone.embed([decode(growing / "rocket.png").rgb])[0]
    with Store("index") as store:
        index = ann.open_synced(store)
        assert np.array_equal(np.sort(np.asarray(index.index.keys, dtype=np.int64)), store.vector_rowids())
        hits = Searcher(store, ann="always").top_k(rocket, 20)
    assert hits[0].path == "imgs/rocket.png" and hits[0].score == 1.0
    assert "imgs/moon.png" not in {h.path for h in hits}


def test_sidecar_is_rebuilt_when_stale_and_builds_reproducibly(built_index: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(built_index, copy)
    with Store(copy) as store:
        ann.open_synced(store)
        first = ann.sidecar_path(store).read_bytes()
        ann.remove_sidecar(store)
        ann.open_synced(store)
        assert ann.sidecar_path(store).read_bytes() == first  # one-thread build: same bytes
        ann.sidecar_path(store).write_bytes(b"not an index")
        assert len(ann.open_synced(store)) == store.vector_count()  # a damaged file is rebuilt


def test_compressed_sidecar_keeps_exact_scores(built_index: Path, photo_dir: Path, tmp_path: Path,
                                               backbone: Backbone) -> None:  # fmt: skip
    copy = tmp_path / "index"
    shutil.copytree(built_index, copy)
    query = backbone.embed([decode(photo_dir / "coffee.png").rgb.rotate(3)])[0]
    with Store(copy) as store:
        exact = Searcher(store, exact=True)
        sizes = {}
        for dtype in ("f16", "i8"):
            assert ann.open_synced(store, dtype).dtype == dtype
            sizes[dtype] = ann.sidecar_path(store).stat().st_size
            fast = Searcher(store, ann="always")
            assert isinstance(fast._engine, AnnEngine)
            assert fast._engine.index.dtype == dtype  # the dtype asked is kept
            for k in (1, 5, 12):
                assert fast.top_k(query, k) == exact.top_k(query, k)
    assert sizes["i8"] < sizes["f16"]
