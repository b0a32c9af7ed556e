"""The inference runtime: OpenVINO's vectors, their cache, and how they relate to torch's.

Real weights and real conversions throughout: the session's model cache (conftest)
is converted once, and the tests that need a cold or unwritable cache get their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedlab import runtime
from embedlab.backbones import Backbone, load_backbone
from embedlab.indexer import embed_folder, resolve_spec
from embedlab.registry import REGISTRY, BackboneError, backbone_spec
from embedlab.store import IndexMismatch, Store

from .conftest import PHOTOS, four_photos, skimage_image, small

ROOT = Path(__file__).resolve().parent.parent
# fp32 runtimes may share an index (indexer.check_compatible): this is the bound they must keep.
FP32_COSINE_BOUND = 2e-5


def photos() -> list:  # type: ignore[type-arg]
    return [small(skimage_image(n)).convert("RGB") for n in PHOTOS]


def test_default_runtime_is_openvino_fp32(backbone: Backbone) -> None:
    assert backbone.engine.runtime == "openvino"
    assert backbone.runtime.startswith("openvino ") and backbone.runtime.endswith(" fp32")
    assert backbone.signature == "efficientnet_lite0/hybrid/v1"  # fp32 runtimes share the signature


def test_openvino_and_torch_fp32_agree_within_the_stated_bound(backbone: Backbone) -> None:
    torch_model = load_backbone("efficientnet_lite0", runtime="torch")
    images = photos()
    ov, pt = backbone.embed(images), torch_model.embed(images)
    cosine = np.sum(ov.astype(np.float64) * pt, axis=1)
    assert (1.0 - cosine).max() < FP32_COSINE_BOUND
    assert np.abs(ov - pt).max() < 1e-4
    # ... and the two rank the photos alike.
    assert np.array_equal(np.argsort(-(ov @ ov.T), axis=1), np.argsort(-(pt @ pt.T), axis=1))


def test_vectors_do_not_depend_on_batch_split_or_cache_state(
    backbone: Backbone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = photos()[:7]
    warm = backbone.embed(images)
    assert warm.tobytes() == np.concatenate([backbone.embed([im]) for im in images]).tobytes()
    assert warm[3:].tobytes() == backbone.embed(images[3:]).tobytes()

    # A cold cache holding a damaged entry and a conversion killed midway: neither is
    # used; the model is converted, written atomically, and gives the same bytes.
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cold"))
    import openvino as ov

    key = runtime.model_key(backbone.spec, ov.__version__)
    entry = tmp_path / "cold" / "models" / f"efficientnet_lite0-{key[:24]}"
    entry.mkdir(parents=True)
    (entry / "model.xml").write_text("<net truncated")
    (entry.parent / ".tmp-crashed").mkdir()
    (entry.parent / ".tmp-crashed" / "model.xml").write_text("<net half written")
    cold = load_backbone("efficientnet_lite0")
    assert cold.embed(images).tobytes() == warm.tobytes()
    assert {p.name for p in entry.iterdir()} == {"model.xml", "model.bin", "key.json"}
    assert "truncated" not in (entry / "model.xml").read_text()
    assert sorted(p.name for p in entry.parent.iterdir()) == [".tmp-crashed", entry.name]

    # A cache that cannot be written (a file where the folder should be): converted in memory.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("EMBEDLAB_CACHE", str(blocker / "cache"))
    uncached = load_backbone("efficientnet_lite0")
    assert uncached.embed(images).tobytes() == warm.tobytes()


def test_the_cache_key_follows_weights_runtime_and_architecture() -> None:
    lite0, lite1 = backbone_spec("efficientnet_lite0"), backbone_spec("efficientnet_lite1")
    key = runtime.model_key(lite0, "2026.4.1")
    assert key == runtime.model_key(lite0, "2026.4.1")
    assert key != runtime.model_key(lite0, "2026.5.0")
    assert key != runtime.model_key(lite1, "2026.4.1")


def test_a_warm_cache_loads_and_embeds_without_torch(backbone: Backbone) -> None:
    code = (
        "import sys\n"
        "from PIL import Image\n"
        "from embedlab.backbones import load_backbone\n"
        "b = load_backbone('efficientnet_lite0')\n"
        "v = b.embed([Image.new('RGB', (300, 200), (200, 40, 10))])\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'torchvision') if m in sys.modules)\n"
        "print(v.shape[1], b.runtime.split()[0], heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1347", "openvino", "[]"]


def test_the_registry_plans_every_backbone_without_torch() -> None:
    code = (
        "import sys\n"
        "from embedlab.registry import REGISTRY, backbone_spec\n"
        "specs = [backbone_spec(n) for n in REGISTRY if n.startswith('efficientnet')]\n"
        "print(*[f'{s.name}:{s.dim}:{s.info.preprocess.crop}' for s in specs], 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "efficientnet_lite0:1347:224",
        "efficientnet_lite1:1347:240",
        "efficientnet_lite2:1347:260",
        "False",
    ]
    from embedlab.models import BUILDERS

    assert {info.builder for info in REGISTRY.values()} <= set(BUILDERS)


def test_fp32_runtimes_share_an_index_and_it_says_which_wrote(work: Path) -> None:
    imgs = four_photos(work / "imgs")
    os.environ["EMBEDLAB_RUNTIME"] = "torch"
    try:
        first = embed_folder("./imgs", "./index")
    finally:
        del os.environ["EMBEDLAB_RUNTIME"]
    small(skimage_image("moon"), 128).save(imgs / "moon.png")
    second = embed_folder("./imgs", "./index")
    assert first.runtime.startswith("torch ") and second.runtime.startswith("openvino ")
    assert second.embedded_vectors == 1
    with Store(work / "index") as store:
        meta = store.meta()
    assert meta["precision"] == "fp32" and meta["draft_side"] == "256"
    assert sorted(r.split()[0] for r in meta["runtimes"].split(",")) == ["openvino", "torch"]


def test_precisions_are_never_mixed_in_one_index(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    four_photos(work / "imgs")
    embed_folder("./imgs", "./index")
    monkeypatch.setenv("EMBEDLAB_PRECISION", "bf16")
    with (
        Store(work / "index") as store,
        pytest.raises(IndexMismatch, match="holds fp32 vectors but this run computes bf16"),
    ):
        resolve_spec(store, None, None)
    assert backbone_spec("efficientnet_lite0").signature == "efficientnet_lite0/hybrid/v1/bf16"
    with pytest.raises(BackboneError, match="needs the openvino runtime"):
        load_backbone("efficientnet_lite0", runtime="torch")
    monkeypatch.setenv("EMBEDLAB_PRECISION", "fp16")
    with pytest.raises(BackboneError, match="unknown precision"):
        backbone_spec("efficientnet_lite0")


@pytest.mark.parametrize(("name", "side"), [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_packaged_lite1_and_lite2_classify_coffee_as_espresso(name: str, side: int) -> None:
    model = load_backbone(name, runtime="torch")  # the conversion is Lite0's test; the weights are what differs
    assert model.preprocess.crop == side and model.dim == 1280 + 64 + 2 + 1
    logits = model.logits(np.stack([model.preprocess(skimage_image("coffee").convert("RGB"))]))[0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    assert int(probs.argmax()) == 967 and probs[967] > 0.5


def test_local_weights_are_found_next_to_the_index_not_only_in_the_working_directory(work: Path) -> None:
    torchvision = pytest.importorskip("torchvision")
    import torch

    index = work / "elsewhere" / "index"
    (index / "weights").mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), index / "weights" / "resnet18-local.pth")
    with Store(index, create=True) as store:
        spec = resolve_spec(store, "resnet18", None)
    assert spec.weights_path == index / "weights" / "resnet18-local.pth"
    with Store(index) as store:  # the default backbone is never replaced by weights lying around
        assert resolve_spec(store, None, None).name == "efficientnet_lite0"
    # An explicit folder instead of a file.
    other = work / "my-weights"
    other.mkdir()
    (other / "resnet18-mine.pth").write_bytes((index / "weights" / "resnet18-local.pth").read_bytes())
    assert backbone_spec("resnet18", other).weights_path == other / "resnet18-mine.pth"
    with pytest.raises(BackboneError, match="no weights for resnet50"):
        backbone_spec("resnet50", other, folders=[])


def test_an_index_keeps_the_draft_scale_it_was_made_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from embedlab.indexer import embed_folder, resolve_spec
    from embedlab.store import Store

    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    skimage_image("coffee").convert("RGB").save(tmp_path / "imgs" / "coffee.jpg")
    embed_folder("imgs", "new")
    with Store("new") as store:
        assert resolve_spec(store, None, None).decode_side == 256
        store.execute("DELETE FROM meta WHERE key = 'draft_side'")  # as an index made before the key
    with Store("new") as store:
        assert resolve_spec(store, None, None).decode_side == 512
