"""Incremental embedding: only new content is embedded, nothing is ever lost."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from embedlab.backbones import Backbone
from embedlab.images import scan_images, sha256_file
from embedlab.indexer import IndexMismatch, Job, embed_folder, embed_jobs
from embedlab.store import Store

from .conftest import four_photos, skimage_image, small


def _vectors(index: Path) -> dict[str, bytes]:
    with Store(index) as store:
        return dict((s, bytes(v)) for s, v in store.execute("SELECT sha256, vector FROM embeddings"))


def _paths(index: Path) -> dict[str, str]:
    with Store(index) as store:
        return dict(store.execute("SELECT path, sha256 FROM images WHERE status = 'ok'"))


@pytest.fixture
def folder(work: Path) -> Path:
    return four_photos(work / "imgs")


def test_add_rename_delete_change(work: Path, folder: Path) -> None:
    first = embed_folder("./imgs", "./index")
    assert (first.images, first.new, first.embedded_vectors) == (4, 4, 4)
    before = _vectors(work / "index")

    again = embed_folder("./imgs", "./index")
    assert (again.unchanged, again.new, again.embedded_vectors) == (4, 0, 0)

    small(skimage_image("moon"), 128).save(folder / "moon.png")  # add
    (folder / "camera.png").rename(folder / "camera_renamed.png")  # rename
    (folder / "coins.png").unlink()  # delete
    small(skimage_image("horse"), 128).convert("RGB").save(folder / "coffee.png")  # change in place
    report = embed_folder("./imgs", "./index")
    assert report.embedded_vectors == 2  # moon and the new coffee.png, nothing else
    assert (report.reused, report.removed, report.unchanged) == (1, 2, 1)

    after = _vectors(work / "index")
    paths = _paths(work / "index")
    assert sorted(paths) == ["imgs/astronaut.png", "imgs/camera_renamed.png", "imgs/coffee.png", "imgs/moon.png"]
    # The renamed file kept its vector bit for bit; untouched ones too.
    for path in ("imgs/astronaut.png", "imgs/camera_renamed.png"):
        assert after[paths[path]] == before[paths[path]]
    # Deleted and replaced contents left the index: one vector per live content.
    assert set(after) == set(paths.values())


def test_copies_share_one_vector_and_broken_files_are_recorded(work: Path, folder: Path) -> None:
    shutil.copyfile(folder / "coffee.png", folder / "coffee_copy.png")
    (folder / "broken.png").write_bytes((folder / "camera.png").read_bytes()[:500])
    report = embed_folder("./imgs", "./index")
    assert (report.images, report.failed, report.embedded_vectors) == (6, 1, 4)
    with Store(work / "index") as store:
        assert store.errors() == [("imgs/broken.png", "OSError: image file is truncated")]
        by_sha = store.ok_paths_by_sha()
    assert ["imgs/coffee.png", "imgs/coffee_copy.png"] in by_sha.values()


def test_index_is_readable_with_the_stock_sqlite3_module(work: Path, folder: Path) -> None:
    embed_folder("./imgs", "./index")
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    rows = conn.execute("SELECT path, width, height, entropy, status FROM images ORDER BY path").fetchall()
    (dim, blob) = conn.execute("SELECT dim, vector FROM embeddings LIMIT 1").fetchone()
    run = conn.execute("SELECT command, status, backbone, dim, versions, counts FROM runs").fetchone()
    conn.close()
    assert version >= 1
    assert [r[0] for r in rows] == ["imgs/astronaut.png", "imgs/camera.png", "imgs/coffee.png", "imgs/coins.png"]
    assert all(r[1] and r[2] and r[3] > 0 and r[4] == "ok" for r in rows)
    vec = np.frombuffer(blob, dtype="<f4")
    assert dim == 1347 and vec.shape == (1347,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    assert run[:4] == ("embed", "ok", "efficientnet_lite0/hybrid/v1", 1347)
    assert '"torch"' in run[4] and '"new": 4' in run[5]


def test_embedding_without_the_extension_is_caught_up_later(work: Path, folder: Path) -> None:
    embed_folder("./imgs", "./index")
    small(skimage_image("moon"), 128).save(folder / "moon.png")
    with Store(work / "index", use_vec=False) as store:  # as on a Python that cannot load sqlite-vec
        assert not store.vec_loaded
        vec = np.zeros((1, 1347), np.float32)
        vec[0, 0] = 1.0
        with store.transaction():
            store.insert_vectors(["f" * 64], vec, run_id=0)
        assert store.meta()["vec_index_stale"] == "1"
    with Store(work / "index") as store:
        store.ensure_vec_index(1347)
        assert store.meta()["vec_index_stale"] == "0"
        assert store.knn(vec[0], 1)[0][0] == "f" * 64


def test_other_backbone_on_same_index_is_refused(work: Path, folder: Path) -> None:
    embed_folder("./imgs", "./index")
    weights = work / "resnet18-test.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    with pytest.raises(IndexMismatch, match="efficientnet_lite0"):
        embed_folder("./imgs", "./index", backbone_name="resnet18", weights=str(weights))
    # A fresh index takes it, auto-detected from assets/weights/.
    (work / "assets" / "weights").mkdir(parents=True)
    shutil.move(weights, work / "assets" / "weights" / weights.name)
    report = embed_folder("./imgs", "./index18", backbone_name="resnet18")
    assert (report.backbone, report.dim, report.embedded_vectors) == ("resnet18", 512 + 67, 4)
    with pytest.raises(IndexMismatch, match="plain"):
        embed_folder("./imgs", "./index18", recipe="plain")


def test_missing_folder_is_an_error_and_creates_nothing(work: Path) -> None:
    from embedlab.images import ImageError

    with pytest.raises(ImageError, match="not a folder"):
        embed_folder("./nope", "./index")
    assert not (work / "index").exists()


def test_every_command_is_recorded_in_the_runs_manifest(work: Path, folder: Path) -> None:
    from embedlab.cli import main

    assert main(["-q", "embed", "--images-dir", "./imgs", "--out", "./index"]) == 0
    assert main(["-q", "search", "--index", "./index", "--query-dir", "./imgs", "--k", "2", "--json"]) == 0
    assert main(["-q", "analyze", "--index", "./index", "--json"]) == 0
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    runs = conn.execute("SELECT command, status, dim, counts, timings FROM runs ORDER BY id").fetchall()
    conn.close()
    assert [r[:3] for r in runs] == [("embed", "ok", 1347), ("search", "ok", 1347), ("analyze", "ok", 1347)]
    assert '"queries": 4' in runs[1][3] and '"total"' in runs[2][4]


def test_worker_results_do_not_depend_on_how_files_are_batched(work: Path, folder: Path, backbone: Backbone) -> None:
    """The contract any executor (threads, processes, a cluster) relies on."""
    shutil.copyfile(folder / "coins.png", folder / "coins_copy.png")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    files = scan_images("imgs")
    jobs = [Job(info, sha256_file(info.abspath)) for info in files]
    whole = embed_jobs(backbone, "imgs", jobs)
    pieces = [e for start in range(0, len(jobs), 2) for e in embed_jobs(backbone, "imgs", jobs[start : start + 2])]
    assert [e.row for e in whole] == [e.row for e in pieces]
    by_path = {e.row.path: e for e in whole}
    assert by_path["imgs/broken.png"].row.status == "error" and by_path["imgs/broken.png"].vector is None
    assert by_path["imgs/coins_copy.png"].row.sha256 == by_path["imgs/coins.png"].row.sha256
    embedded = {e.row.path: e.vector.tobytes() for e in whole if e.vector is not None}
    assert "imgs/coins_copy.png" not in embedded  # an in-batch copy shares the first one's vector
    for e in pieces:
        if e.vector is not None and e.row.path in embedded:
            assert e.vector.tobytes() == embedded[e.row.path]


def test_huge_batch_size_is_capped_with_a_message(work: Path, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from embedlab.cli import main

    assert main(["embed", "--images-dir", "./imgs", "--out", "./index", "--batch-size", "100000"]) == 0
    assert "--batch-size 100000 is above 256: embedding and committing 256 images at a time" in capsys.readouterr().err
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    assert conn.execute("SELECT batch_size FROM runs WHERE command = 'embed'").fetchone() == (256,)
    conn.close()


def test_a_huge_batch_size_still_commits_in_bounded_transactions(
    work: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted at the last batch, a run keeps every batch before it, whatever --batch-size said.

    The cap is lowered to 2 so that four photos and a bad file make three batches."""
    import logging

    from embedlab import indexer

    monkeypatch.setattr(indexer, "MAX_BATCH", 2)
    (folder / "zz_bad.png").write_bytes(b"not a picture")

    class InterruptAtTheLastBatch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "skipped" in record.getMessage():  # the bad file's batch is being written
                raise KeyboardInterrupt

    logger = logging.getLogger("embedlab")
    handler = InterruptAtTheLastBatch()
    logger.addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            embed_folder("./imgs", "./index", batch_size=100_000)
    finally:
        logger.removeHandler(handler)
    assert len(_paths(work / "index")) == 4  # two whole batches of two committed before the interrupt
    assert len(_vectors(work / "index")) == 4
