"""Embed on a Ray cluster: Ray Data workers decode and embed, this process alone writes.

The driver scans and plans exactly as a local run (``indexer._plan``: stat
cache, then content hash), streams the files that need the model through one
Ray Data ``map_batches`` stage of actors that each load the backbone once and
run ``indexer.embed_jobs``, and writes what comes back with
``indexer.write_batch``, one transaction per batch. So the store keeps a single
writer, an interrupted run resumes like a local one, and vectors are
bit-identical to a local run: the workers run the driver's own code (shipped as
a runtime ``py_modules`` entry), the same weights (checked by sha256), the same
fixed thread count and forward shape.

Ray is optional (``pip install '.[ray]'``): nothing here imports it until used.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import typing
import warnings
from collections import Counter
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import EmbedlabError
from .evidence import Evidence
from .runtime import requested_runtime

if TYPE_CHECKING:
    import pyarrow as pa

    from .indexer import Embedded, Job
    from .registry import BackboneSpec

log = logging.getLogger("embedlab")

INSTALL_HINT = "--ray needs Ray, which is not installed: pip install '.[ray]' (or pip install 'ray[data]==2.60.0')"
LOCAL = "local"  # --ray without an address: start a Ray instance on this machine
ACTOR_START_S = 600  # every worker must have loaded its model by then, or the cluster is too small
PACKAGE_DIR = Path(__file__).resolve().parent


class ClusterError(EmbedlabError):
    """Ray is missing, unreachable or too small, or a worker failed; the message is one line."""


@dataclass(frozen=True)
class RaySettings:
    """Where to run and how big each worker is (``embed --ray ...`` flags)."""

    address: str = LOCAL  # "local", "auto", "host:port" or "ray://host:port"
    workers: int | None = None  # None: as many as the cluster's CPUs (or GPUs) hold
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    decode_threads: int = 2  # threads decoding images inside each worker


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to rebuild the driver's backbone and check it is the same one."""

    backbone: str
    recipe: str
    weights: str  # the driver's weights file; used when the worker sees it, else the packaged default
    weights_sha256: str
    signature: str
    root: str
    seed: int
    gpu: bool
    decode_threads: int
    max_pixels: int  # embed --max-pixels: a worker must refuse the files the driver would
    log_paths: bool
    precision: str = "fp32"
    draft_side: int = 0  # the index's JPEG draft scale (BackboneSpec.draft_side)
    runtime: str = "auto"  # the driver's EMBEDLAB_RUNTIME; a GPU worker always runs torch


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # Ray Data needs the [data] extra (pyarrow, pandas)
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return ray


def _arrow_type(hint: Any) -> pa.DataType:
    import pyarrow as pa

    args = set(typing.get_args(hint)) or {hint}
    for python_type, arrow_type in ((bool, pa.bool_()), (int, pa.int64()), (float, pa.float64())):
        if python_type in args:
            return arrow_type
    return pa.string()


def _job_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("i", pa.int64()),
            ("path", pa.string()),
            ("abspath", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("ctime_ns", pa.int64()),
            ("sha256", pa.string()),
        ]
    )


def _result_schema() -> pa.Schema:
    """Every ImageRow column (types from its annotations), the job's index, the vector bytes, the node."""
    import pyarrow as pa

    from .store import ImageRow

    hints = typing.get_type_hints(ImageRow)
    columns = [(f.name, _arrow_type(hints[f.name])) for f in fields(ImageRow)]
    evidence = [*((name, pa.binary()) for name in EVIDENCE_BLOBS), ("ev_size", pa.string())]
    return pa.schema([("i", pa.int64()), *columns, ("vector", pa.binary()), *evidence, ("node", pa.string())])


EVIDENCE_BLOBS = ("ev_thumb", "ev_points", "ev_descriptors")  # Evidence.to_blobs() order


def jobs_table(jobs: Sequence[Job]) -> pa.Table:
    """The driver's jobs as Arrow rows; paths made absolute, since workers do not share our cwd."""
    import pyarrow as pa

    return pa.table(
        {
            "i": list(range(len(jobs))),
            "path": [j.info.path for j in jobs],
            "abspath": [os.path.abspath(j.info.abspath) for j in jobs],
            "size": [j.info.size for j in jobs],
            "mtime_ns": [j.info.mtime_ns for j in jobs],
            "ctime_ns": [j.info.ctime_ns for j in jobs],
            "sha256": [j.sha256 for j in jobs],
        },
        schema=_job_schema(),
    )


def results_table(indices: Sequence[int], results: Sequence[Embedded], node: str) -> pa.Table:
    """Worker results as Arrow rows; a vector travels as its little-endian float32 bytes, bit for bit."""
    import numpy as np
    import pyarrow as pa

    records = []
    for i, item in zip(indices, results, strict=True):
        vector = None if item.vector is None else np.ascontiguousarray(item.vector, dtype="<f4").tobytes()
        blobs: dict[str, Any] = dict.fromkeys(EVIDENCE_BLOBS)
        size = None
        if item.evidence is not None:
            blobs = dict(zip(EVIDENCE_BLOBS, item.evidence.to_blobs(), strict=True))
            size = f"{item.evidence.width}x{item.evidence.height}"
        records.append({"i": i, **asdict(item.row), "vector": vector, **blobs, "ev_size": size, "node": node})
    return pa.Table.from_pylist(records, schema=_result_schema())


def embedded_from_record(record: dict[str, Any], jobs: Sequence[Job]) -> Embedded:
    """One result row back into the driver's own ``Embedded`` (its own Job object, its own paths)."""
    import numpy as np

    from .indexer import Embedded
    from .store import ImageRow

    row = ImageRow(**{f.name: record[f.name] for f in fields(ImageRow)})
    blob = record["vector"]
    vector = None if blob is None else np.frombuffer(blob, dtype="<f4").copy()
    evidence = None
    if record.get("ev_size"):
        width, height = (int(v) for v in record["ev_size"].split("x"))
        evidence = Evidence.from_blobs(width, height, *(record[name] for name in EVIDENCE_BLOBS))
    return Embedded(jobs[record["i"]], row, vector, evidence)


class EmbedWorker:
    """One Ray Data actor: loads the backbone once, then embeds batch after batch."""

    def __init__(self, spec: WorkerSpec) -> None:
        import ray

        from .backbones import load_backbone, set_determinism
        from .settings import Settings, install

        set_determinism(spec.seed)
        install(Settings(max_pixels=spec.max_pixels, log_paths=spec.log_paths))
        weights = spec.weights if os.path.isfile(spec.weights) else None
        backbone = load_backbone(
            spec.backbone,
            weights,
            spec.recipe,
            runtime="torch" if spec.gpu else spec.runtime,
            precision=spec.precision,
        )
        backbone = replace(backbone, draft_side=spec.draft_side)
        if backbone.weights_sha256 != spec.weights_sha256 or backbone.signature != spec.signature:
            raise ClusterError(
                f"worker on {socket.gethostname()} loads {backbone.signature} weights "
                f"{backbone.weights_sha256[:12]}, the driver {spec.signature} {spec.weights_sha256[:12]}; "
                "put the weights file on storage every node sees, at the same path"
            )
        if spec.gpu:
            engine: Any = backbone.engine
            engine.trunk = _on_gpu(engine.trunk)
        self.backbone = backbone
        self.root = spec.root
        self.node = ray.get_runtime_context().get_node_id()
        self.pool = ThreadPoolExecutor(max_workers=max(1, spec.decode_threads))

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .backbones import TORCH_THREADS
        from .images import ImageFileInfo
        from .indexer import Job, embed_jobs

        # Ray Data calls this on a thread of its own, where OpenMP starts from Ray's
        # OMP_NUM_THREADS (the worker's CPU count), not from the count set in __init__:
        # pin the local run's thread count here, so the kernels are the local ones.
        # (OpenVINO fixes its thread count when the model is compiled.)
        if self.backbone.engine.runtime == "torch":
            import torch

            torch.set_num_threads(TORCH_THREADS)

        records = batch.to_pylist()
        jobs = [
            Job(
                ImageFileInfo(r["path"], Path(r["abspath"]), r["size"], r["mtime_ns"], ctime_ns=r["ctime_ns"]),
                r["sha256"],
            )
            for r in records
        ]
        results = embed_jobs(self.backbone, self.root, jobs, self.pool)
        return results_table([r["i"] for r in records], results, self.node)


def _on_gpu(trunk: Any) -> Any:
    """The trunk on this worker's GPU, taking and returning CPU tensors so the rest stays as is."""
    import torch

    if not torch.cuda.is_available():
        raise ClusterError(f"worker on {socket.gethostname()} was given a GPU but torch sees no CUDA device")
    device = torch.device("cuda")
    inner = trunk.to(device)

    class OnDevice(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.inner(x.to(device)).cpu()
            return out

    return OnDevice()


def driver_runtime_env() -> dict[str, Any]:
    """For ``ray.init``: ship this very package, so every worker runs the driver's code, installed there or not.

    (Ray accepts local directories only at the job level, not per stage.)
    """
    return {"py_modules": [str(PACKAGE_DIR)]}


def _no_restarts() -> dict[str, Any]:
    """A lost worker fails the run, and a re-run resumes from the last committed batch.

    Ray's actor restarts would also need the pool's arguments to outlive the
    owner (ray-project/ray#53727, which Ray logs as an error on every run).
    """
    return {"max_restarts": 0}


def _reason(exc: BaseException) -> str:
    """The last line of what went wrong on a worker (Ray wraps it in a traceback)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc:
        exc = cause
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


class RayExecutor:
    """``indexer.Executor`` that runs ``embed_jobs`` on a Ray Data actor pool."""

    def __init__(self, settings: RaySettings) -> None:
        self.settings = settings
        self.ray = import_ray()
        self.nodes: Counter[str] = Counter()  # results per Ray node id, for the log and tests
        self.pool_size = 0

    def describe(self) -> dict[str, Any]:
        s = self.settings
        return {
            "ray": self.ray.__version__,
            "ray_address": s.address,
            "ray_workers": s.workers or "auto",
            "ray_cpus_per_worker": s.cpus_per_worker,
            "ray_gpus_per_worker": s.gpus_per_worker,
        }

    def run(
        self, spec: BackboneSpec, root: str, jobs: Sequence[Job], batch_size: int, seed: int
    ) -> Generator[list[Embedded], None, None]:
        if not jobs:
            return
        from .images import decode_settings

        ray, s = self.ray, self.settings
        max_pixels, log_paths = decode_settings()
        worker = WorkerSpec(
            backbone=spec.name,
            recipe=spec.recipe.name,
            weights=os.path.abspath(spec.weights_path),
            weights_sha256=spec.weights_sha256,
            signature=spec.signature,
            root=root,
            seed=seed,
            gpu=s.gpus_per_worker > 0,
            decode_threads=s.decode_threads,
            max_pixels=max_pixels,
            log_paths=log_paths,
            precision=spec.precision,
            draft_side=spec.decode_side,
            runtime=requested_runtime(),
        )
        with self._connected():
            self.pool_size = self._pool_size()
            log.info(
                "ray: %d files on %d workers (%g CPU, %g GPU each), cluster of %d nodes",
                len(jobs),
                self.pool_size,
                s.cpus_per_worker,
                s.gpus_per_worker,
                len([n for n in ray.nodes() if n.get("Alive")]),
            )
            table = jobs_table(jobs)
            # One batch per block: results reach the writer (and the progress bar) batch by batch,
            # and a lost worker costs one batch; a few ms of scheduling each is noise next to a batch.
            rows = max(1, min(batch_size, math.ceil(len(jobs) / self.pool_size)))
            dataset = ray.data.from_arrow([table.slice(start, rows) for start in range(0, len(jobs), rows)])
            with warnings.catch_warnings():
                # Ray 2.60 has no named parameter for max_restarts yet; this one is deprecated.
                warnings.filterwarnings("ignore", message=".*ray_remote_args_fn.*deprecated")
                embedded = self._map(dataset, worker, batch_size)
            try:
                for out in embedded.iter_batches(batch_size=batch_size, batch_format="pyarrow"):
                    records = out.to_pylist()
                    self.nodes.update(r["node"] for r in records)
                    yield [embedded_from_record(r, jobs) for r in records]
            except Exception as exc:  # a worker's error arrives wrapped in Ray's exception types
                raise ClusterError(f"ray: {_reason(exc)}") from None
            log.info("ray: %d results from %d nodes", sum(self.nodes.values()), len(self.nodes))

    def _map(self, dataset: Any, spec: WorkerSpec, batch_size: int) -> Any:
        s = self.settings
        return dataset.map_batches(
            EmbedWorker,
            fn_constructor_kwargs={"spec": spec},
            batch_size=batch_size,
            batch_format="pyarrow",
            # One block at a time per worker: blocks hold only file names (workers read the images
            # from shared storage), so an idle worker anywhere beats one next to the driver's data.
            compute=self.ray.data.ActorPoolStrategy(size=self.pool_size, max_tasks_in_flight_per_actor=1),
            num_cpus=s.cpus_per_worker,
            num_gpus=s.gpus_per_worker or None,
            runtime_env=self._worker_env(),
            ray_remote_args_fn=_no_restarts,
        )

    def _worker_env(self) -> dict[str, Any]:
        if self.settings.gpus_per_worker > 0:
            return {"env_vars": {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}}  # deterministic cuBLAS
        return {}

    def _pool_size(self) -> int:
        """Workers to start: the flag, capped at what the cluster's free CPUs (and GPUs) hold."""
        s, resources = self.settings, self.ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        fits = int(cpus // s.cpus_per_worker) if s.cpus_per_worker > 0 else len(self.ray.nodes())
        if s.gpus_per_worker > 0:
            fits = min(fits, int(gpus // s.gpus_per_worker))
        if fits < 1:
            raise ClusterError(
                f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: "
                f"not enough for one worker of {s.cpus_per_worker:g} CPU and {s.gpus_per_worker:g} GPU"
            )
        if s.workers is not None and s.workers > fits:
            log.warning("ray: %d workers asked for, the cluster holds %d; using %d", s.workers, fits, fits)
        return min(s.workers or fits, fits)

    @contextmanager
    def _connected(self) -> Iterator[None]:
        """Join (or start) Ray for this run and leave it as found; quiet, one log stream."""
        ray = self.ray
        context = ray.data.DataContext.get_current()
        options = context.execution_options
        saved = (options.preserve_order, context.wait_for_min_actors_s)
        saved_bars = (context.enable_progress_bars, context.print_on_execution_start)
        options.preserve_order = True  # batches reach the writer in job order
        context.wait_for_min_actors_s = ACTOR_START_S  # start once all workers are up, so work spreads
        context.enable_progress_bars = context.print_on_execution_start = False  # the driver has its own bar
        # Ray Data logs whole tracebacks on a worker's failure; the CLI says it in one line (-v: all).
        verbose = log.isEnabledFor(logging.DEBUG)
        data_log = logging.getLogger("ray.data")
        saved_level = data_log.level
        data_log.setLevel(logging.NOTSET if verbose else logging.CRITICAL)
        started = False
        try:
            if not ray.is_initialized():
                self._init(verbose)
                started = True
            yield
        finally:
            options.preserve_order, context.wait_for_min_actors_s = saved
            context.enable_progress_bars, context.print_on_execution_start = saved_bars
            data_log.setLevel(saved_level)
            if started:
                ray.shutdown()

    def _init(self, verbose: bool) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # this machine may be offline
        kwargs: dict[str, Any] = {
            # Ray's own warnings (token auth on a local instance, ...) stay out of the one log stream; -v shows them.
            "logging_level": logging.DEBUG if verbose else logging.ERROR,
            "log_to_driver": True,  # workers' output comes to this stderr, prefixed by Ray
            "runtime_env": driver_runtime_env(),
        }
        if self.settings.address == LOCAL:
            kwargs["include_dashboard"] = False
        try:
            self.ray.init(address=self.settings.address, **kwargs)
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError depending on the address
            raise ClusterError(f"cannot start or reach Ray at {self.settings.address}: {_reason(exc)}") from None
