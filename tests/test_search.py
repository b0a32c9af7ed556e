"""Search ranking: stable, tie-broken by path, and the same through both engines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from embedlab.backbones import Backbone
from embedlab.images import decode
from embedlab.indexer import embed_folder
from embedlab.search import Searcher
from embedlab.store import ImageRow, Store


def _shape(kind: str, colour: tuple[int, int, int], size: int = 96) -> Image.Image:
    img = Image.new("RGB", (size, size), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    box = (size // 5, size // 5, size * 4 // 5, size * 4 // 5)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    else:
        for x in range(0, size, 12):
            draw.rectangle((x, 0, x + 5, size), fill=colour)
    return img


@pytest.fixture
def tiny(work: Path) -> Path:
    """A tiny synthetic set with exact ties: byte-identical copies under several names."""
    imgs = work / "imgs"
    imgs.mkdir()
    _shape("circle", (200, 30, 30)).save(imgs / "c_circle.png")
    _shape("square", (30, 30, 200)).save(imgs / "a_square.png")
    _shape("stripes", (30, 160, 30)).save(imgs / "stripes.png")
    for name in ("z_copy.png", "b_copy.png", "m_copy.png"):
        shutil.copyfile(imgs / "c_circle.png", imgs / name)
    embed_folder("./imgs", "./index")
    return imgs


def test_ranking_is_stable_with_ties_broken_by_path(tiny: Path, backbone: Backbone) -> None:
    query = backbone.embed([decode(tiny / "c_circle.png").rgb])[0]
    with Store("index") as store:
        first = Searcher(store).top_k(query, 5)
        second = Searcher(store).top_k(query, 5)
    assert first == second
    assert [h.path for h in first[:4]] == ["imgs/b_copy.png", "imgs/c_circle.png", "imgs/m_copy.png", "imgs/z_copy.png"]
    assert all(h.score == 1.0 for h in first[:4])
    assert first[4].score < 1.0
    assert [h.score for h in first] == sorted((h.score for h in first), reverse=True)


@pytest.mark.parametrize("k", [1, 3, 6, 50])
def test_sqlite_vec_and_numpy_agree(built_index: Path, photo_dir: Path, backbone: Backbone, k: int) -> None:
    queries = backbone.embed([decode(p).rgb for p in sorted(photo_dir.glob("*.png"))[:4]])
    with Store(built_index) as store:
        assert store.vec_loaded
        vec, exact = Searcher(store), Searcher(store, exact=True)
        assert (vec.engine, exact.engine) == ("sqlite-vec", "numpy")
        for q in queries:
            assert vec.top_k(q, k) == exact.top_k(q, k)
        # And the raw KNN of sqlite-vec agrees with NumPy's order on its own.
        shas, matrix = store.load_vectors(through_vec=True)
        knn = [s for s, _ in store.knn(queries[0], len(shas))]
    assert knn == [shas[i] for i in np.argsort(-(matrix @ queries[0]), kind="stable")]


def test_vectors_read_through_sqlite_vec_equal_the_stored_ones(built_index: Path) -> None:
    with Store(built_index) as store:
        a_shas, a = store.load_vectors(through_vec=True)
        b_shas, b = store.load_vectors(through_vec=False)
    assert a_shas == b_shas and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("k", [4081, 5000])
def test_engines_agree_above_the_sqlite_vec_k_limit(tiny: Path, k: int, capsys: pytest.CaptureFixture[str]) -> None:
    """sqlite-vec answers at most 4,096 neighbours; a larger k must still return what --exact returns."""
    from embedlab.cli import main
    from embedlab.store import KNN_MAX

    extra = KNN_MAX + 200
    with Store("./index") as store:
        dim = int(store.meta()["dim"])
        vectors = np.random.default_rng(0).standard_normal((extra, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        shas = [f"{i:064x}" for i in range(extra)]
        run_id = store.start_run("embed")
        with store.transaction():
            store.insert_vectors(shas, vectors, run_id)
            store.upsert_images(
                [
                    ImageRow(path=f"imgs/more/{i:05d}.png", root="imgs", sha256=s, size=1, mtime_ns=1, status="ok")
                    for i, s in enumerate(shas)
                ],
                run_id,
            )
    answers = []
    for engine in ([], ["--exact"]):
        argv = ["-q", "search", "--index", "./index", "--query-dir", "./imgs", "--k", str(k), "--json", *engine]
        assert main(argv) == 0
        answers.append([json.loads(line) for line in capsys.readouterr().out.splitlines()])
    vec, exact = answers
    total = extra + 6  # the tiny set's six files
    assert [len(r["results"]) for r in exact] == [min(k, total)] * 6
    assert vec == exact
