"""A loaded backbone: preprocessing, an inference engine and the descriptor recipe.

A backbone is everything that turns an RGB image into a vector: weights,
resize/crop, normalisation, pooling and the descriptor recipe. Its ``signature``
goes into the index so that vectors of different making are never mixed. The
forward pass runs on an engine from ``embedlab.runtime`` (OpenVINO or torch);
this module itself imports neither torch nor timm.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .descriptor import DEFAULT_RECIPE, RECIPES, Recipe, compose, layout_features
from .preprocess import Preprocess
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
from .runtime import MICRO_BATCH, THREADS, Engine, configure_torch, load_engine

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "EMBEDDING_VERSION",
    "MICRO_BATCH",
    "TORCH_THREADS",
    "WEIGHTS_DIR",
    "Backbone",
    "BackboneError",
    "BackboneSpec",
    "Preprocess",
    "build_backbone",
    "default_weights",
    "load_backbone",
    "set_determinism",
]
TORCH_THREADS = THREADS


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
    engine: Engine
    recipe: Recipe = field(default_factory=lambda: RECIPES[DEFAULT_RECIPE])
    precision: str = "fp32"
    draft_side: int = 0

    @property
    def spec(self) -> BackboneSpec:
        return BackboneSpec(
            self.name, self.recipe, self.weights_path, self.weights_sha256, self.precision, self.draft_side
        )

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def signature(self) -> str:
        return self.spec.signature

    @property
    def decode_side(self) -> int:
        """Short side a JPEG keeps when decoded at reduced DCT scale (``images.decode``)."""
        return self.spec.decode_side

    @property
    def runtime(self) -> str:
        """The engine, its version and precision (``openvino 2026.4.1 fp32``)."""
        return self.engine.describe()

    def prepare(self, rgb: Image.Image, grey: Image.Image | None = None) -> Prepared:
        """Thread-safe CPU work for one image (runs in the decode workers); ``grey``: its ``convert("L")``, if made."""
        return Prepared(self.preprocess(rgb), layout_features(rgb, self.preprocess.crop_box(*rgb.size), grey))

    def vectors(self, prepared: Sequence[Prepared]) -> np.ndarray:
        """Stored vectors (unit float32) for prepared images."""
        cnn = self.features(np.stack([p.tensor for p in prepared]))
        return compose(cnn, np.stack([p.layout for p in prepared]), self.recipe)

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Pooled, L2-normalised float32 vectors for a preprocessed batch.

        The forward pass always sees zero-padded micro-batches of one fixed
        shape: CPU kernels pick algorithms by shape, so a vector would otherwise
        change in its last bits with the batch it happened to be in.
        """
        n = len(batch)
        padded = np.zeros((-(-n // MICRO_BATCH) * MICRO_BATCH, *batch.shape[1:]), dtype=np.float32)
        padded[:n] = batch
        chunks = [self.engine.pooled(padded[i : i + MICRO_BATCH]) for i in range(0, len(padded), MICRO_BATCH)]
        pooled = np.concatenate(chunks)[:n].astype(np.float64)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.engine.logits(batch)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.vectors([self.prepare(im) for im in images])


def set_determinism(seed: int) -> None:
    """Fix every source of randomness we know of; inference is then bit-stable."""
    random.seed(seed)
    np.random.seed(seed)
    if "torch" in sys.modules:  # only a torch engine (or a conversion) imported it
        import torch

        torch.manual_seed(seed)
        configure_torch()


def load_backbone(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    recipe: str = DEFAULT_RECIPE,
    *,
    runtime: str | None = None,
    precision: str | None = None,
) -> Backbone:
    """Build a backbone from local weights only; never touches the network."""
    return build_backbone(backbone_spec(name, weights, recipe, precision=precision), runtime)


def build_backbone(spec: BackboneSpec, runtime: str | None = None) -> Backbone:
    """Load the model a spec describes on ``runtime`` (default: ``EMBEDLAB_RUNTIME``, else auto)."""
    engine = load_engine(spec, runtime)
    info = spec.info
    return Backbone(
        spec.name,
        info.cnn_dim,
        spec.weights_path,
        spec.weights_sha256,
        info.preprocess,
        engine,
        spec.recipe,
        spec.precision,
        spec.draft_side,
    )
