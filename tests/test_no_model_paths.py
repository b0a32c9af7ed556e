"""Work that needs no model never loads one, and the embedding pipeline is deterministic.

Whether torch was imported is read from Python's own ``-X importtime`` report
of a real CLI subprocess, so these tests see what a user's process does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from embedlab.backbones import Backbone
from embedlab.images import sha256_file
from embedlab.indexer import embed_folder, embed_paths
from embedlab.registry import BackboneError
from embedlab.store import Store

from .conftest import four_photos, skimage_image, small

ROOT = Path(__file__).resolve().parent.parent
_HEAVY = re.compile(r"^import time:.*\|\s*(torch|timm|torchvision)$", re.MULTILINE)


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run embedlab in a fresh interpreter; also return which heavy packages it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "embedlab.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=None if env is None else os.environ | env,
    )
    return proc, set(_HEAVY.findall(proc.stderr))


@pytest.fixture
def indexed(work: Path) -> Path:
    """Four photos, one broken file, embedded in-process into ./index."""
    imgs = four_photos(work / "imgs")
    (imgs / "broken.png").write_bytes(b"\x89PNG not really")
    report = embed_folder("./imgs", "./index")
    assert (report.new, report.failed, report.embedded_vectors) == (4, 1, 4)
    return work


def test_unchanged_rerun_loads_no_model(indexed: Path) -> None:
    proc, heavy = run_cli("embed", "--images-dir", "./imgs", "--out", "./index", "--json", cwd=indexed)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["unchanged"], summary["new"], summary["embedded_vectors"], summary["failed"]) == (5, 0, 0, 1)
    assert "load_model" not in summary["timings"]
    assert heavy == set()

    # Something new to embed: the model is loaded, from the converted-model cache the
    # in-process embed filled, so still without torch.
    small(skimage_image("moon"), 128).save(indexed / "imgs" / "moon.png")
    proc, heavy = run_cli("embed", "--images-dir", "./imgs", "--out", "./index", "--json", cwd=indexed)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["embedded_vectors"] == 1 and "load_model" in summary["timings"]
    assert heavy == set()

    # A cold cache: torch and timm build the model once, to convert it.
    small(skimage_image("coins"), 100).save(indexed / "imgs" / "coins_small.png")
    cold = {"EMBEDLAB_CACHE": str(indexed / "cold-cache")}
    proc, heavy = run_cli("embed", "--images-dir", "./imgs", "--out", "./index", "--json", cwd=indexed, env=cold)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["embedded_vectors"] == 1
    assert {"torch", "timm"} <= heavy
    assert list((indexed / "cold-cache" / "models").glob("efficientnet_lite0-*/model.xml"))


def test_a_changed_weights_file_is_refused_without_loading_a_model(indexed: Path) -> None:
    weights = indexed / "efficientnet-copy.pth"
    from embedlab.registry import default_weights

    weights.write_bytes(default_weights("efficientnet_lite0").read_bytes() + b"\0")
    proc, heavy = run_cli("embed", "--images-dir", "./imgs", "--out", "./index", "--weights", str(weights), cwd=indexed)
    assert proc.returncode == 1
    assert "index was built with weights" in proc.stderr and "Traceback" not in proc.stderr
    assert heavy == set()


def test_queries_the_index_has_seen_need_no_model(indexed: Path, backbone: Backbone) -> None:
    queries = indexed / "queries"
    queries.mkdir()
    shutil.copyfile(indexed / "imgs" / "coffee.png", queries / "renamed_coffee.png")  # same bytes, new name
    (queries / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")

    # The stored vector is exactly what the model computes for those bytes.
    with Store(indexed / "index") as store:
        stored = store.vectors_by_sha([sha256_file(queries / "renamed_coffee.png")])
    (fresh,) = embed_paths(backbone, [queries / "renamed_coffee.png"])
    assert next(iter(stored.values())).tobytes() == fresh.tobytes()

    proc, heavy = run_cli("search", "--index", "./index", "--query-dir", "./queries", "--k", "2", "--json", cwd=indexed)
    assert proc.returncode == 0, proc.stderr
    assert heavy == set()
    broken, coffee = (json.loads(line) for line in proc.stdout.splitlines())
    assert broken["results"] == [] and "error" in broken
    assert coffee["results"][0] == {"path": "imgs/coffee.png", "score": 1.0}

    # A query it has not seen: the model is loaded (from the converted-model cache: no
    # torch), and the seen query's answer is unchanged.
    small(skimage_image("chelsea"), 128).convert("RGB").save(queries / "new_cat.png")
    proc, heavy = run_cli("search", "--index", "./index", "--query-dir", "./queries", "--k", "2", "--json", cwd=indexed)
    assert proc.returncode == 0, proc.stderr
    assert heavy == set()
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["query"]).name for r in lines] == ["broken.jpg", "new_cat.png", "renamed_coffee.png"]
    assert lines[1]["results"][0]["score"] < 1.0 and lines[2] == coffee


def test_rehash_catches_content_rewritten_with_the_same_size_and_mtime(work: Path) -> None:
    imgs = work / "imgs"
    imgs.mkdir()
    target = imgs / "scan.bmp"  # BMP: the file size depends on the pixel count only
    small(skimage_image("camera"), 96).convert("RGB").resize((96, 96)).save(target)
    embed_folder("./imgs", "./index")
    with Store(work / "index") as store:
        before = store.ok_paths_by_sha()
    stat = os.stat(target)
    small(skimage_image("coins"), 96).convert("RGB").resize((96, 96)).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(target).st_size == stat.st_size

    trusted = embed_folder("./imgs", "./index")  # size and mtime match: not even read
    assert (trusted.unchanged, trusted.embedded_vectors) == (1, 0)
    rehashed = embed_folder("./imgs", "./index", rehash=True)
    assert (rehashed.unchanged, rehashed.new, rehashed.embedded_vectors) == (0, 1, 1)
    with Store(work / "index") as store:
        after = store.ok_paths_by_sha()
    assert list(after) == [sha256_file(target)] and after != before
    again = embed_folder("./imgs", "./index", rehash=True)  # content confirmed: nothing to do
    assert (again.unchanged, again.embedded_vectors) == (1, 0)


def test_vectors_and_rows_do_not_depend_on_the_worker_count(work: Path) -> None:
    imgs = work / "imgs"
    imgs.mkdir()
    for i, name in enumerate(("astronaut", "camera", "chelsea", "coffee", "coins", "horse", "rocket")):
        img = small(skimage_image(name), 160 + 16 * i).convert("RGB")
        img.save(imgs / f"{name}.jpg", quality=85)
    shutil.copyfile(imgs / "coffee.jpg", imgs / "coffee_copy.jpg")
    (imgs / "broken.jpg").write_bytes((imgs / "camera.jpg").read_bytes()[:300])
    tables = []
    for workers in (1, 3):
        out = f"./index{workers}"
        # Batches of 2: several batches decode ahead while the model runs.
        embed_folder("./imgs", out, workers=workers, batch_size=2)
        with Store(out) as store:
            vectors = store.execute("SELECT sha256, vector FROM embeddings ORDER BY sha256")
            rows = store.execute(
                "SELECT path, sha256, width, height, entropy, contrast, sharpness, brightness, status, error "
                "FROM images ORDER BY path"
            )
        tables.append(([(s, bytes(v)) for s, v in vectors], rows))
    assert tables[0] == tables[1]
    assert len(tables[0][0]) == 7 and len(tables[0][1]) == 9


def test_a_weights_file_that_does_not_load_leaves_no_signature(work: Path) -> None:
    imgs = work / "imgs"
    imgs.mkdir()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(imgs / "green.png")
    bad = work / "resnet18-bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="cannot read weights"):
        embed_folder("./imgs", "./index", backbone_name="resnet18", weights=str(bad))
    assert not (work / "index").exists()  # the run made the folder and embedded nothing: it is gone again
    (work / "index").mkdir()  # a folder the user made stays, and what the run left has no signature
    with pytest.raises(BackboneError, match="cannot read weights"):
        embed_folder("./imgs", "./index", backbone_name="resnet18", weights=str(bad))
    with Store(work / "index") as store:
        assert "signature" not in store.meta()
    report = embed_folder("./imgs", "./index")  # the default backbone can still take the index
    assert (report.backbone, report.embedded_vectors) == ("efficientnet_lite0", 1)
