"""Inference engines behind one interface, and the on-disk cache of converted models.

Chosen by measurement on a 2-core CPU (EfficientNet-Lite0, docs/BENCHMARKS.md):
OpenVINO at fp32 runs the same network about 4-5x faster than PyTorch eager
(ONNX Runtime about 3x), with features within 1e-5 of torch. So ``auto`` uses
OpenVINO wherever it is installed and torch otherwise (and for CUDA GPUs,
which cluster workers ask for by name).

The converted model is derived data: built once from the weights, keyed by
their SHA-256, the runtime and converter versions and the architecture and
input shape, and kept under a cache folder (``EMBEDLAB_CACHE``, else the user
cache). A warm cache loads without importing torch or timm. A conversion is
written to a temporary folder and renamed into place, so a half-written model
is never read; a cache that cannot be written is skipped (the model is then
converted in memory on every run, and a warning says so).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .registry import BackboneError, BackboneInfo

if TYPE_CHECKING:
    from .registry import BackboneSpec

log = logging.getLogger("embedlab")

# Fixed forward-pass shape and thread count: both change float rounding, and
# vectors must not depend on how a run happened to be batched or scheduled.
MICRO_BATCH = 4
THREADS = 2
RUNTIMES = ("auto", "openvino", "torch")
# Bumped whenever what a conversion writes changes (graph outputs, save options).
CONVERT_VERSION = "1"
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


class Engine(Protocol):
    """Runs one backbone: a fixed-shape batch in, pooled features and logits out."""

    runtime: str  # "torch" or "openvino"
    precision: str

    def describe(self) -> str:
        """Runtime, version and precision, as recorded with the index (``openvino 2026.4.1 fp32``)."""
        ...

    def pooled(self, batch: np.ndarray) -> np.ndarray:
        """(MICRO_BATCH, 3, H, W) float32 -> (MICRO_BATCH, C) float32 globally average-pooled features."""
        ...

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """ImageNet logits for a batch of any size (proves the weights loaded)."""
        ...


def requested_runtime() -> str:
    """``EMBEDLAB_RUNTIME``: auto (default), openvino or torch."""
    value = os.environ.get("EMBEDLAB_RUNTIME", "").strip().lower() or "auto"
    if value not in RUNTIMES:
        raise BackboneError(f"unknown runtime {value!r} (EMBEDLAB_RUNTIME); choose from {', '.join(RUNTIMES)}")
    return value


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def cache_dir() -> Path:
    """``EMBEDLAB_CACHE``, else ``$XDG_CACHE_HOME/embedlab``, else ``~/.cache/embedlab``."""
    explicit = os.environ.get("EMBEDLAB_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embedlab"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def model_key(spec: BackboneSpec, runtime_version: str) -> str:
    """What a converted model depends on: weights, runtime, converter, architecture, input shape."""
    info = spec.info
    pre = info.preprocess
    parts = {
        "convert": CONVERT_VERSION,
        "weights_sha256": spec.weights_sha256,
        "runtime": f"openvino {runtime_version}",
        "builder": info.builder,
        "arch": info.arch,
        "input": [MICRO_BATCH, 3, pre.crop, pre.crop],
        "preprocess": [pre.resize, pre.crop, list(pre.mean), list(pre.std), pre.resample.name],
        # The graph is traced from these; a new release may build another one.
        "torch": _version("torch"),
        "timm": _version("timm"),
        "torchvision": _version("torchvision"),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load_engine(spec: BackboneSpec, runtime: str | None = None) -> Engine:
    """The engine for a spec: OpenVINO when asked for or (``auto``) installed, else torch."""
    runtime = runtime or requested_runtime()
    if runtime not in RUNTIMES:
        raise BackboneError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime == "torch" or (runtime == "auto" and not openvino_available()):
        if spec.precision != "fp32":
            raise BackboneError(f"precision {spec.precision} needs the openvino runtime")
        return TorchEngine.build(spec.info, spec.weights_path)
    try:
        return OpenVINOEngine.load(spec)
    except BackboneError:
        raise
    except Exception as exc:  # a runtime that does not install or convert this model
        if runtime == "openvino" or spec.precision != "fp32":
            raise BackboneError(f"openvino cannot run {spec.name}: {type(exc).__name__}: {exc}") from None
        log.warning("openvino cannot run %s (%s); using torch", spec.name, type(exc).__name__)
        return TorchEngine.build(spec.info, spec.weights_path)


def configure_torch() -> None:
    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(THREADS)


class TorchEngine:
    """PyTorch eager: the reference, the fallback, and the CUDA path."""

    runtime = "torch"
    precision = "fp32"

    def __init__(self, trunk: Any, head: Any) -> None:
        self.trunk, self.head = trunk, head

    @classmethod
    def build(cls, info: BackboneInfo, weights: Path) -> TorchEngine:
        from .models import build

        configure_torch()
        trunk, head, _ = build(info, weights)
        return cls(trunk, head)

    def describe(self) -> str:
        return f"torch {_version('torch')} fp32"

    def pooled(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out: np.ndarray = self.trunk(torch.from_numpy(batch)).mean(dim=(2, 3)).cpu().numpy()
        return out

    def logits(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out: np.ndarray = self.head(self.trunk(torch.from_numpy(batch)).mean(dim=(2, 3))).cpu().numpy()
        return out


@dataclass
class OpenVINOEngine:
    """OpenVINO on the CPU, compiled for one fixed input shape, THREADS threads, one stream."""

    compiled: Any
    request: Any
    precision: str
    version: str
    runtime: str = "openvino"

    @classmethod
    def load(cls, spec: BackboneSpec) -> OpenVINOEngine:
        import openvino as ov

        core = ov.Core()
        if spec.precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise BackboneError("this CPU has no bf16 support; use precision fp32")
        if spec.precision == "bf16":
            log.warning("bf16 (opt-in): about 2x faster, but vectors move (1 - cosine up to 0.07 against fp32)")
        model = _cached_model(core, spec, ov.__version__)
        config = {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[spec.precision],
            "INFERENCE_NUM_THREADS": THREADS,
            "NUM_STREAMS": 1,
        }
        compiled = core.compile_model(model, "CPU", config)
        return cls(compiled, compiled.create_infer_request(), spec.precision, ov.__version__.split("-")[0])

    def describe(self) -> str:
        return f"openvino {self.version} {self.precision}"

    def pooled(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(batch), MICRO_BATCH):
            chunk = batch[start : start + MICRO_BATCH]
            padded = np.zeros((MICRO_BATCH, *batch.shape[1:]), np.float32)
            padded[: len(chunk)] = chunk
            self.request.infer({0: padded})
            out.append(np.array(self.request.get_output_tensor(1).data[: len(chunk)], dtype=np.float32))
        return np.concatenate(out)


def _cached_model(core: Any, spec: BackboneSpec, version: str) -> Any:
    """The converted model: read from the cache, or converted (and cached when the cache is writable)."""
    key = model_key(spec, version)
    folder = cache_dir() / "models" / f"{spec.name}-{key[:24]}"
    xml = folder / "model.xml"
    if xml.is_file():
        try:
            return core.read_model(str(xml))
        except Exception as exc:  # damaged by hand or a full disk earlier: rebuild it
            log.warning("cached model %s is unreadable (%s); converting again", folder.name, type(exc).__name__)
            shutil.rmtree(folder, ignore_errors=True)
    log.info("converting %s for openvino (once per weights and version; needs torch)", spec.name)
    model = convert(spec)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    except OSError as exc:
        log.warning(
            "model cache %s is not writable (%s): converting on every run; set EMBEDLAB_CACHE to a writable folder",
            folder.parent,
            exc.strerror,
        )
        return model
    try:
        import openvino as ov

        ov.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        (staging / "key.json").write_text(json.dumps({"backbone": spec.name, "key": key}) + "\n")
        for path in staging.iterdir():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        try:
            os.rename(staging, folder)  # atomic: readers see no folder or a complete one
        except OSError:
            if not xml.is_file():  # not a concurrent writer that got there first
                raise
    except OSError as exc:
        log.warning("cannot write the model cache (%s); using the converted model uncached", exc.strerror)
        return model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return core.read_model(str(xml))  # the same bytes every later run reads: the same vectors


def convert(spec: BackboneSpec) -> Any:
    """Trace the torch module (trunk, pooling, head) into an OpenVINO model of one fixed input shape."""
    import openvino as ov
    import torch

    from .models import Pooled, build

    configure_torch()
    trunk, head, _ = build(spec.info, spec.weights_path)
    side = spec.info.preprocess.crop
    shape = [MICRO_BATCH, 3, side, side]
    with warnings.catch_warnings():  # the converter traces with torch.jit, which warns it is deprecated
        warnings.simplefilter("ignore", FutureWarning)
        return ov.convert_model(Pooled(trunk, head), example_input=torch.zeros(shape), input=[shape])


def torch_imported() -> bool:
    return "torch" in sys.modules
