"""Pretrained vision backbones, each with its own preprocessing, loaded offline.

A backbone is everything that turns an RGB image into a vector: weights,
resize/crop, normalisation, pooling and the descriptor recipe. Its ``signature``
goes into the index so that vectors of different making are never mixed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .descriptor import DEFAULT_RECIPE, RECIPES, Recipe, compose, layout_features
from .registry import (
    BACKBONES,
    DEFAULT_BACKBONE,
    EMBEDDING_VERSION,
    WEIGHTS_DIR,
    BackboneError,
    BackboneSpec,
    backbone_spec,
    default_weights,
)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "EMBEDDING_VERSION",
    "WEIGHTS_DIR",
    "Backbone",
    "BackboneError",
    "BackboneSpec",
    "build_backbone",
    "default_weights",
    "load_backbone",
]
# Fixed forward-pass shape and thread count: both change float rounding, and
# vectors must not depend on how a run happened to be batched or scheduled.
MICRO_BATCH = 4
TORCH_THREADS = 2


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, then normalise per channel."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: Image.Resampling

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The centre square, in source pixels, that the network sees."""
        side = min(width, height) * self.crop / self.resize
        left, top = (width - side) / 2.0, (height - side) / 2.0
        return (left, top, left + side, top + side)

    def __call__(self, rgb: Image.Image) -> np.ndarray:
        # Resampling only the crop box equals resize-then-crop without ever
        # materialising a huge intermediate for extreme aspect ratios.
        img = rgb.resize((self.crop, self.crop), self.resample, box=self.crop_box(*rgb.size))
        unit = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        normed = (unit - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(normed.transpose(2, 0, 1), dtype=np.float32)


@dataclass(frozen=True)
class Prepared:
    """One image ready for the forward pass: network input and layout part."""

    tensor: np.ndarray
    layout: np.ndarray


@dataclass
class Backbone:
    """A loaded model and everything needed to reproduce its vectors."""

    name: str
    cnn_dim: int
    weights_path: Path
    weights_sha256: str
    preprocess: Preprocess
    trunk: nn.Module  # image batch -> feature map (B, C, H, W)
    head: nn.Module  # pooled features -> ImageNet logits, used to prove the weights loaded
    recipe: Recipe = field(default_factory=lambda: RECIPES[DEFAULT_RECIPE])

    @property
    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.name, self.recipe, self.weights_path, self.weights_sha256)

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def signature(self) -> str:
        return self.spec.signature

    def prepare(self, rgb: Image.Image) -> Prepared:
        """Thread-safe CPU work for one image (runs in the decode workers)."""
        return Prepared(self.preprocess(rgb), layout_features(rgb, self.preprocess.crop_box(*rgb.size)))

    def vectors(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Stored vectors (unit float32) for prepared images."""
        cnn = self.features(np.stack([p.tensor for p in prepared]))
        return compose(cnn, np.stack([p.layout for p in prepared]), self.recipe)

    @torch.inference_mode()
    def features(self, batch: np.ndarray) -> np.ndarray:
        """Pooled, L2-normalised float32 vectors for a preprocessed batch.

        The forward pass always sees zero-padded micro-batches of one fixed
        shape: CPU kernels pick algorithms by shape, so a vector would otherwise
        change in its last bits with the batch it happened to be in.
        """
        n = len(batch)
        padded = np.zeros((-(-n // MICRO_BATCH) * MICRO_BATCH, *batch.shape[1:]), dtype=np.float32)
        padded[:n] = batch
        chunks = [self.trunk(torch.from_numpy(padded[i : i + MICRO_BATCH])) for i in range(0, len(padded), MICRO_BATCH)]
        pooled = torch.cat(chunks)[:n].mean(dim=(2, 3)).double()
        pooled = pooled / pooled.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return pooled.float().numpy()

    @torch.inference_mode()
    def logits(self, batch: np.ndarray) -> np.ndarray:
        fmap = self.trunk(torch.from_numpy(batch))
        return self.head(fmap.mean(dim=(2, 3))).numpy()

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.vectors([self.prepare(im) for im in images])


def set_determinism(seed: int) -> None:
    """Fix every source of randomness we know of; inference is then bit-stable."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    _configure_torch()


def _configure_torch() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(TORCH_THREADS)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise BackboneError(f"cannot read weights file {path.name}: {type(exc).__name__}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BackboneError(f"weights file {path.name} does not hold a state dict")
    return obj


def _efficientnet_lite0(weights: Path) -> tuple[nn.Module, nn.Module, Preprocess, int]:
    import timm

    model: Any = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = _load_state_dict(weights)
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneError(f"{weights.name} is not an EfficientNet-Lite0 state dict")
    # The package ships lukemelas-style names (_blocks.N._depthwise_conv); timm's
    # tf_efficientnet_lite0 has the same tensors in the same order.
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise BackboneError(f"{weights.name}: {src_key} does not fit {dst_key}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
    model.eval()
    pre = Preprocess(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), Image.Resampling.BICUBIC)
    return _TimmFeatures(model), model.get_classifier(), pre, 1280


def _resnet(arch: str) -> Callable[[Path], tuple[nn.Module, nn.Module, Preprocess, int]]:
    def build(weights: Path) -> tuple[nn.Module, nn.Module, Preprocess, int]:
        import torchvision

        model = getattr(torchvision.models, arch)(weights=None)
        try:
            model.load_state_dict(_load_state_dict(weights))
        except RuntimeError:
            raise BackboneError(f"{weights.name} is not a torchvision {arch} state dict") from None
        model.eval()
        trunk = nn.Sequential(*list(model.children())[:-2])
        imagenet = Preprocess(256, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), Image.Resampling.BILINEAR)
        return trunk, model.fc, imagenet, model.fc.in_features

    return build


class _TimmFeatures(nn.Module):
    """A timm model's convolutional trunk (everything before pooling)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.forward_features(x)
        return out


_BUILDERS: dict[str, Callable[[Path], tuple[nn.Module, nn.Module, Preprocess, int]]] = {
    "efficientnet_lite0": _efficientnet_lite0,
    "resnet18": _resnet("resnet18"),
    "resnet50": _resnet("resnet50"),
}
assert tuple(_BUILDERS) == BACKBONES, "registry.BACKBONES must name every builder"


def load_backbone(name: str, weights: str | os.PathLike[str] | None = None, recipe: str = DEFAULT_RECIPE) -> Backbone:
    """Build a backbone from local weights only; never touches the network."""
    return build_backbone(backbone_spec(name, weights, recipe))


def build_backbone(spec: BackboneSpec) -> Backbone:
    """Load the model a spec describes (the only place that pays for torch and timm)."""
    _configure_torch()
    trunk, head, pre, dim = _BUILDERS[spec.name](spec.weights_path)
    if dim != spec.cnn_dim:
        raise BackboneError(f"{spec.weights_path.name} gives {dim}-d features, expected {spec.cnn_dim}")
    return Backbone(spec.name, dim, spec.weights_path, spec.weights_sha256, pre, trunk, head, spec.recipe)
