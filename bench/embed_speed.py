"""Embedding throughput and latency, each ratio measured within one run.

    python bench/embed_speed.py                         # everything (about 30 minutes on 2 cores, first run longer)
    python bench/embed_speed.py --camera 200 --rerun 0 --repeat 5   # a quicker look

* runtimes: model-only throughput (forward pass + pooling on ready tensors, the
  micro-batches `embed` uses) of torch eager, OpenVINO fp32 and bf16 (and ONNX
  Runtime when the ``onnx`` exporter is installed), interleaved run by run, with
  each one's distance to torch's features;
* throughput: end-to-end `embed` into a fresh index against the default
  runtime's model-only throughput, interleaved, on the sample assets and on
  camera-sized JPEGs (3000x2000, made once from scikit-image photos with crops,
  flips and noise), with and without the same-picture evidence;
* decode cost per camera JPEG (one thread) at full scale, the old draft rule (short
  side >= 512) and the new one (the network's resize, long side >= 512), and what
  draft mode does to vectors, quality metrics and the same-picture judgement;
* whole commands as fresh processes with a warm model cache: `embed` of the sample
  assets into a new index and `search` with 6 new query images, per runtime
  (interleaved), with wall time, CPU time, peak memory and whether torch was imported;
* `embed` again on an unchanged folder of --rerun files, and `search` with
  query images the index already holds, as fresh processes (torch not imported).

Generated images and the re-run index live in bench/.cache/ (not in git).
Prints a Markdown table (medians of --repeat runs) on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedlab import indexer  # noqa: E402
from embedlab.backbones import MICRO_BATCH, Backbone, load_backbone, set_determinism  # noqa: E402
from embedlab.duplicates import Verifier  # noqa: E402
from embedlab.evidence import Evidence  # noqa: E402
from embedlab.evidence import compute as compute_evidence  # noqa: E402
from embedlab.images import ImageError, decode, quality_metrics, scan_images, sha256_file  # noqa: E402
from embedlab.indexer import Job, decode_job, embed_folder  # noqa: E402
from embedlab.store import Store  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "hubble_deep_field", "retina", "horse")
CAMERA = (3000, 2000)
BATCH = 32
Row = tuple[str, str]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# -- generated image sets ---------------------------------------------------------


@functools.cache
def _source_photos() -> list[np.ndarray]:
    """Read once per process: every generated image crops one of these."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    photos = []
    for name in SOURCES:
        with Image.open(next(folder.glob(f"{name}.*"))) as img:
            photos.append(np.asarray(img.convert("RGB")))
    return photos


def _camera_jpeg(args: tuple[int, Path]) -> None:
    """One 3000x2000 JPEG: a random 3:2 crop of a photo, upscaled, maybe mirrored, with sensor-like noise.

    File i is the same in every set size, so a smaller set links the files of a larger one.
    """
    index, path = args
    for twin in sorted(path.parent.parent.glob(f"camera-*/{path.name}")):
        if twin != path:
            os.link(twin, path)
            return
    rng = np.random.default_rng(index)
    photos = _source_photos()
    src = photos[index % len(photos)]
    h, w = src.shape[:2]
    cw = int(min(w, h * 1.5) * rng.uniform(0.6, 1.0))
    ch = int(cw / 1.5)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = Image.fromarray(src[y : y + ch, x : x + cw]).resize(CAMERA, Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    noisy = np.asarray(img, dtype=np.int16) + rng.normal(0, 5, (CAMERA[1], CAMERA[0], 1)).astype(np.int16)
    _save_jpeg(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), path)


def _tile(distinct: int, args: tuple[int, Path]) -> None:
    """One small JPEG for the re-run folder; files ``distinct`` apart share their bytes."""
    index, path = args
    index %= distinct
    rng = np.random.default_rng(10_000_000 + index)
    photos = _source_photos()
    src = photos[index % len(photos)]
    side = 96
    y, x = int(rng.integers(0, src.shape[0] - side)), int(rng.integers(0, src.shape[1] - side))
    tile = src[y : y + side, x : x + side].astype(np.int16) + rng.integers(-6, 7, (side, side, 3))
    _save_jpeg(Image.fromarray(np.clip(tile, 0, 255).astype(np.uint8)), path)


def _save_jpeg(img: Image.Image, path: Path) -> None:
    """Write under a hidden name, then rename: an interrupted run leaves no half file for a scan to find."""
    part = path.with_name(f".{path.name}.part")
    img.save(part, format="JPEG", quality=90)
    part.replace(path)


def make_set(folder: Path, count: int, maker: Callable[[tuple[int, Path]], None], pattern: str) -> Path:
    """Create the missing files of a generated set (kept in the cache between runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(i, folder / pattern.format(i)) for i in range(count) if not (folder / pattern.format(i)).exists()]
    if todo:
        log(f"generating {len(todo)} images in {folder.relative_to(ROOT)} (once)")
        with ProcessPoolExecutor(max_workers=2) as pool:
            list(pool.map(maker, todo, chunksize=16))
    return folder


# -- throughput -------------------------------------------------------------------


def ready_tensors(backbone: Backbone, folder: Path, limit: int) -> np.ndarray:
    tensors = []
    for info in scan_images(folder)[:limit]:
        try:
            tensors.append(backbone.prepare(decode(info.abspath, draft_side=backbone.decode_side).rgb).tensor)
        except ImageError:  # the sample assets hold one broken file on purpose
            continue
    return np.stack(tensors)


def model_only(backbone: Backbone, tensors: np.ndarray) -> tuple[float, float]:
    """Images/s and CPU ms per image of the forward pass + pooling alone, fed in the batches `embed` uses."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(tensors), BATCH):
        backbone.features(tensors[i : i + BATCH])
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return len(tensors) / wall, cpu / len(tensors) * 1000


def _onnxruntime(torch_model: Backbone) -> Callable[[np.ndarray], np.ndarray] | str:
    """ONNX Runtime fp32 on the same graph, when the ``onnx`` exporter is installed (else why not)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime as ort
        import torch

        from embedlab.models import Pooled
    except ImportError as exc:
        return f"not measured ({exc.name} not installed)"
    engine: Any = torch_model.engine
    side = torch_model.preprocess.crop
    path = Path(tempfile.mkdtemp()) / "model.onnx"
    torch.onnx.export(
        Pooled(engine.trunk, engine.head), torch.zeros(MICRO_BATCH, 3, side, side), str(path), dynamo=False
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 2, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


def bench_runtimes(folder: Path, repeat: int) -> list[Row]:
    """Model-only throughput of every runtime and precision, interleaved run by run, as ratios to torch."""
    torch_model = load_backbone("efficientnet_lite0", runtime="torch")
    models: dict[str, Backbone] = {"torch eager fp32": torch_model}
    models["openvino fp32"] = load_backbone("efficientnet_lite0", runtime="openvino", precision="fp32")
    try:
        models["openvino bf16 (opt-in)"] = load_backbone("efficientnet_lite0", runtime="openvino", precision="bf16")
    except Exception as exc:
        log(f"openvino bf16: {exc}")
    tensors = ready_tensors(torch_model, folder, 128)
    tensors = tensors[: len(tensors) // MICRO_BATCH * MICRO_BATCH]
    feature_fns: dict[str, Callable[[np.ndarray], np.ndarray]] = {k: m.features for k, m in models.items()}
    ort = _onnxruntime(torch_model)
    if callable(ort):

        def ort_features(batch: np.ndarray) -> np.ndarray:
            pooled = np.concatenate([ort(batch[i : i + MICRO_BATCH]) for i in range(0, len(batch), MICRO_BATCH)])
            return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)

        feature_fns["onnxruntime fp32"] = ort_features
    rates: dict[str, list[float]] = {k: [] for k in feature_fns}
    ratios: dict[str, list[float]] = {k: [] for k in feature_fns}
    for run in range(repeat):
        this = {
            k: len(tensors) / timed(lambda fn=fn: [fn(tensors[i : i + BATCH]) for i in range(0, len(tensors), BATCH)])
            for k, fn in feature_fns.items()
        }  # type: ignore[misc]
        for k, v in this.items():
            rates[k].append(v)
            ratios[k].append(v / this["torch eager fp32"])
        log(
            f"runtimes run {run + 1}: "
            + ", ".join(f"{k} {v:.1f}" for k, v in this.items())
            + f"; load {load_average()}"
        )
    reference = torch_model.features(tensors)
    rows: list[Row] = []
    for k, fn in feature_fns.items():
        feats = fn(tensors)
        gap = 1.0 - (feats.astype(np.float64) * reference).sum(axis=1)
        same = fn(tensors).tobytes() == feats.tobytes()
        rows.append(
            (
                f"model-only, {k}, 2 threads, micro-batches of {MICRO_BATCH}",
                f"{statistics.median(rates[k]):.1f} img/s ({statistics.median(ratios[k]):.2f}x torch); "
                f"max |diff| to torch {np.abs(feats - reference).max():.1e}, max 1-cos {gap.max():.1e}; "
                f"repeatable: {same}",
            )
        )
    if not callable(ort):
        rows.append(("model-only, onnxruntime fp32", ort))
    return rows


def _no_evidence(rgb: Image.Image, grey: Image.Image | None = None) -> Evidence:
    """A stand-in for the same-picture evidence, to cost it: an empty record of the right shape."""
    return Evidence(
        rgb.width, rgb.height, np.zeros((64, 64), np.uint8), np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    )


def decode_cpu(folder: Path, backbone: Backbone, repeat: int, limit: int = 256) -> float:
    """CPU ms per file of `embed`'s per-file work (decode_job) on one thread: the part the model does not bound.

    CPU time, and the fastest of ``repeat`` passes, so a busy machine's neighbours move it little.
    """
    info = scan_images(folder)[:limit]
    jobs = [Job(i, sha256_file(i.abspath)) for i in info]  # as planned: no "changed" warning
    best = float("inf")
    for _ in range(max(1, repeat)):
        cpu0 = time.process_time()
        for job in jobs:
            decode_job(backbone, str(folder), job)
        best = min(best, time.process_time() - cpu0)
    return best / max(1, len(jobs)) * 1000


def bench_throughput(label: str, folder: Path, backbone: Backbone, repeat: int, workers: int) -> list[Row]:
    """Interleaved runs: model-only, a fresh `embed`, and a fresh `embed` without evidence, so all see the same load.

    Beside wall-clock rates, CPU time per image (all threads of this process)
    is recorded: on a busy machine wall time measures the neighbours too, while
    model CPU / embed CPU estimates the ratio an idle machine of this size would give.
    """
    tensors = ready_tensors(backbone, folder, 256)
    work = decode_cpu(folder, backbone, repeat)
    model, phase, bare, whole, model_cpu, embed_cpu = [], [], [], [], [], []
    for run in range(repeat):
        rate, cpu = model_only(backbone, tensors)
        model.append(rate)
        model_cpu.append(cpu)
        with tempfile.TemporaryDirectory() as tmp:
            cpu0 = time.process_time()
            report = embed_folder(str(folder), tmp, batch_size=BATCH, workers=workers)
            embed_cpu.append((time.process_time() - cpu0) / report.embedded_vectors * 1000)
        phase.append(report.embedded_vectors / report.timings["embed"])
        whole.append(report.embedded_vectors / report.seconds)
        real = indexer.compute_evidence
        indexer.compute_evidence = _no_evidence  # type: ignore[assignment]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                plain = embed_folder(str(folder), tmp, batch_size=BATCH, workers=workers)
        finally:
            indexer.compute_evidence = real
        bare.append(plain.embedded_vectors / plain.timings["embed"])
        log(
            f"{label} run {run + 1}: model-only {model[-1]:.1f} img/s ({model_cpu[-1]:.0f} CPU ms/img), "
            f"embed {phase[-1]:.1f} img/s (whole run {whole[-1]:.1f}; {embed_cpu[-1]:.0f} CPU ms/img), "
            f"without evidence {bare[-1]:.1f} img/s, load {load_average()}"
        )
    m, p, w, b = (statistics.median(x) for x in (model, phase, whole, bare))
    per_run = statistics.median(pi / mi for pi, mi in zip(phase, model, strict=True))
    per_run_bare = statistics.median(bi / mi for bi, mi in zip(bare, model, strict=True))
    mc, ec = statistics.median(model_cpu), statistics.median(embed_cpu)
    # What the machine's cores allow when every file costs the model's CPU and its own per-file work:
    # the model-only rate is no bound for `embed` once the per-file work is as large as the forward pass.
    cpu_bound = (os.cpu_count() or 1) * 1000.0 / (mc + work)
    return [
        (f"{label}: images embedded", str(report.embedded_vectors)),
        (
            f"{label}: CPU per file, 1 thread, besides the forward pass (read, hash, decode, metrics, "
            "preprocess, evidence; fastest of the runs)",
            f"{work:.2f} ms",
        ),
        (f"{label}: model-only (forward + pooling, {backbone.runtime})", f"{m:.1f} img/s"),
        (f"{label}: `embed` decode + evidence + infer + write (workers={workers})", f"{p:.1f} img/s"),
        (f"{label}: `embed` without the same-picture evidence", f"{b:.1f} img/s"),
        (
            f"{label}: ratio embed / model-only (median of per-run ratios): with evidence ; without",
            f"{per_run:.2f} ; {per_run_bare:.2f}",
        ),
        (
            f"{label}: whole `embed` call incl. model load, scan and hashing",
            f"{w:.1f} img/s ({w / m:.2f} of model-only)",
        ),
        (
            f"{label}: CPU per image, model-only / whole `embed` (ratio)",
            f"{mc:.1f} ms / {ec:.1f} ms ({mc / ec:.2f})",
        ),
        (
            f"{label}: CPU bound of `embed` (cores / (model CPU + per-file CPU)); embed / that bound",
            f"{cpu_bound:.1f} img/s; {p / cpu_bound:.2f}",
        ),
    ]


# -- decoding large JPEGs ---------------------------------------------------------

FULL = 10**9  # a draft side no JPEG reaches: full-scale decoding
DRAFTS = (
    (FULL, "full decode"),
    (512, "draft, short side >= 512 (before)"),
    (256, "draft, short >= 256 and long >= 512 (now)"),
)


def bench_decoding(folder: Path, backbone: Backbone, repeat: int) -> list[Row]:
    files = [info.abspath for info in scan_images(folder)[:24]]
    rows: list[Row] = []
    mean_mb = statistics.mean(f.stat().st_size for f in files) / 1e6
    rows.append(("camera JPEGs: mean file size", f"{mean_mb:.2f} MB"))

    def per_file(fn: Callable[[Path], object]) -> float:
        return statistics.median(timed(lambda: [fn(f) for f in files]) for _ in range(repeat)) / len(files) * 1000

    def work(side: int, evidence: bool) -> Callable[[Path], object]:
        def run(path: Path) -> object:
            rgb = decode(path, draft_side=side).rgb
            return backbone.prepare(rgb), quality_metrics(rgb), compute_evidence(rgb) if evidence else None

        return run

    info = scan_images(folder)
    jobs = {i.abspath: Job(i, sha256_file(i.abspath)) for i in info[:24]}  # as planned: no "changed" warning
    rows.append(
        (
            "camera JPEG, per file, 1 thread: what `embed` does (read, hash, decode, metrics, preprocess, evidence)",
            f"{per_file(lambda f: decode_job(backbone, str(folder), jobs[f])):.1f} ms",
        )
    )
    for side, name in DRAFTS:
        size = decode(files[0], draft_side=side).rgb.size
        rows.append(
            (
                f"camera JPEG, per file, 1 thread: {name} ({size[0]}x{size[1]}), decode only / + metrics, "
                "preprocess / + evidence",
                f"{per_file(lambda f, side=side: decode(f, draft_side=side)):.1f} ms / "
                f"{per_file(work(side, False)):.1f} ms / {per_file(work(side, True)):.1f} ms",
            )
        )

    # What draft mode does: vectors, quality metrics and the same-picture judgement against
    # an edited copy (a 90 % crop, resized to 900x600 and re-encoded), each against the full decode.
    sample = files[:16]
    vec, metrics, evidence = {}, {}, {}
    for side, _ in DRAFTS:
        rgbs = [decode(f, draft_side=side).rgb for f in sample]
        vec[side] = backbone.vectors([backbone.prepare(rgb) for rgb in rgbs])
        metrics[side] = [quality_metrics(rgb) for rgb in rgbs]
        evidence[side] = [compute_evidence(rgb) for rgb in rgbs]
    copies = []
    for f in sample:
        with Image.open(f) as img:
            w, h = img.size
            crop = img.convert("RGB").crop((w // 20, h // 20, w - w // 20, h - h // 20)).resize((900, 600))
        copies.append(crop)
    copy_vec = backbone.vectors([backbone.prepare(im) for im in copies])
    copy_ev = [compute_evidence(im) for im in copies]
    for side, name in DRAFTS[1:]:
        same = (vec[side] * vec[FULL]).sum(axis=1)
        rows.append((f"{name}: cosine to the full-decode vector (min / median)", _stat(same)))
        worst = {
            key: max(
                abs(a[key] - b[key]) / max(abs(b[key]), 1e-6) for a, b in zip(metrics[side], metrics[FULL], strict=True)
            )
            for key in ("entropy", "contrast", "sharpness", "brightness", "colourfulness")
        }
        rows.append(
            (
                f"{name}: quality metrics, largest relative change against the full decode",
                ", ".join(f"{k} {v:.3f}" for k, v in worst.items()),
            )
        )
    for side, name in DRAFTS:
        score = (vec[side] * copy_vec).sum(axis=1)
        probs = [
            Verifier([a, b]).link(0, 1, float(c)).score for a, b, c in zip(evidence[side], copy_ev, score, strict=True)
        ]
        rows.append(
            (
                f"{name}: against the edited copy, cosine (min / median); same-picture probability (min / median)",
                f"{_stat(score)}; {_stat(np.array(probs))}",
            )
        )
    return rows


def _stat(values: np.ndarray) -> str:
    return f"{float(values.min()):.4f} / {float(np.median(values)):.4f}"


# -- no-model paths as fresh processes ----------------------------------------------

_HEAVY = re.compile(r"^import time:.*\|\s*(torch|timm)$", re.MULTILINE)


def cli(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, bool]:
    """Wall and CPU seconds of one embedlab process, and whether it imported torch or timm.

    CPU time (user + system) barely moves with the machine's load; wall time does.
    """
    cmd = [sys.executable, "-X", "importtime", str(ROOT / "embedlab.py"), "-q", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, check=True, env=None if env is None else os.environ | env
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu, bool(_HEAVY.search(proc.stderr))


def bench_no_model(count: int, distinct: int, repeat: int) -> list[Row]:
    distinct = min(distinct, count)
    base = CACHE / f"rerun-{count}-{distinct}"
    images = make_set(base / "images", count, functools.partial(_tile, distinct), "{:05d}.jpg")
    index = base / "index"
    images_arg, index_arg = str(images.relative_to(ROOT)), str(index.relative_to(ROOT))
    log(f"embedding {count} files into the cached re-run index (slow the first time)")
    first = embed_folder(images_arg, index_arg)
    log(f"  {first.embedded_vectors} embedded now, {first.unchanged} already there")
    with Store(index) as store:
        rows, vectors = len(store.roots()), len(store.ok_paths_by_sha())

    rerun = [cli(["embed", "--images-dir", images_arg, "--out", index_arg]) for _ in range(repeat)]
    rehash = [cli(["embed", "--images-dir", images_arg, "--out", index_arg, "--rehash"]) for _ in range(repeat)]
    queries = Path(tempfile.mkdtemp())
    try:
        for info in scan_images(images)[:: max(1, count // 6)][:6]:
            shutil.copyfile(info.abspath, queries / f"seen_{info.abspath.name}")
        search = ["search", "--index", index_arg, "--query-dir", str(queries), "--k", "5", "--json"]
        seen = [cli(search) for _ in range(repeat)]
        assets = str(ROOT / "assets" / "queries")
        new = [
            cli(["search", "--index", index_arg, "--query-dir", assets, "--k", "5", "--json"]) for _ in range(repeat)
        ]
    finally:
        shutil.rmtree(queries, ignore_errors=True)

    def row(runs: list[tuple[float, float, bool]]) -> str:
        torch = "imports torch" if any(t for _, _, t in runs) else "no torch import"
        wall, cpu = statistics.median(w for w, _, _ in runs), statistics.median(c for _, c, _ in runs)
        return f"{wall:.2f} s wall, {cpu:.2f} s CPU ({torch})"

    return [
        ("re-run index: image rows / distinct vectors", f"{rows:,} / {vectors:,}"),
        (f"`embed` again, {count:,} unchanged files (fresh process)", row(rerun)),
        (f"`embed --rehash`, {count:,} unchanged files, every file hashed (fresh process)", row(rehash)),
        (f"`search`, 6 queries the index holds, k=5, index of {count:,} (fresh process)", row(seen)),
        (f"`search`, 6 new queries (model load), k=5, index of {count:,} (fresh process)", row(new)),
    ]


def bench_commands(repeat: int) -> list[Row]:
    """Whole commands from a fresh process, warm model cache, one runtime after the other in each round."""
    runtimes = {"openvino": {"EMBEDLAB_RUNTIME": "openvino"}, "torch": {"EMBEDLAB_RUNTIME": "torch"}}
    load_backbone("efficientnet_lite0", runtime="openvino")  # warm the cache (a no-op when it is)
    results: dict[str, dict[str, list[tuple[float, float, bool, float]]]] = {
        r: {"embed": [], "search": []} for r in runtimes
    }
    for run in range(repeat):
        for name, env in runtimes.items():
            with tempfile.TemporaryDirectory() as tmp:
                index, metrics = os.path.join(tmp, "index"), os.path.join(tmp, "m.json")
                args = ["embed", "--images-dir", "assets/images", "--out", index, "--metrics-out", metrics]
                wall, cpu, heavy = cli(args, env)
                results[name]["embed"].append((wall, cpu, heavy, _peak(metrics)))
                args = ["search", "--index", index, "--query-dir", "assets/queries", "--k", "5", "--json"]
                wall, cpu, heavy = cli([*args, "--metrics-out", metrics], env)
                results[name]["search"].append((wall, cpu, heavy, _peak(metrics)))
            log(
                f"commands run {run + 1}, {name}: embed {results[name]['embed'][-1][0]:.2f} s, "
                f"search {results[name]['search'][-1][0]:.2f} s; load {load_average()}"
            )
    rows: list[Row] = []
    for command, what in (
        ("embed", "`embed` of the sample assets into a new index"),
        ("search", "`search`, 6 new queries, k=5"),
    ):
        for name in runtimes:
            runs = results[name][command]
            torch = "imports torch" if any(r[2] for r in runs) else "no torch import"
            rows.append(
                (
                    f"{what} (fresh process, warm cache), {name}",
                    f"{statistics.median(r[0] for r in runs):.2f} s wall, "
                    f"{statistics.median(r[1] for r in runs):.2f} s CPU, "
                    f"peak {statistics.median(r[3] for r in runs):.0f} MiB ({torch})",
                )
            )
    return rows


def _peak(metrics: str) -> float:
    """peak_rss_mib from a --metrics-out file, wherever it sits."""
    import json

    def find(obj: Any) -> float | None:
        if isinstance(obj, dict):
            if "peak_rss_mib" in obj:
                return float(obj["peak_rss_mib"])
            for value in obj.values():
                if (found := find(value)) is not None:
                    return found
        return None

    with open(metrics) as fh:
        return find(json.load(fh)) or float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camera", type=int, default=2000, help="camera-sized JPEGs to embed (0 to skip)")
    parser.add_argument("--rerun", type=int, default=10_000, help="files in the unchanged re-run folder (0 to skip)")
    parser.add_argument(
        "--rerun-distinct",
        type=int,
        default=10**9,
        help="distinct contents among the re-run files (default: all); the rest are byte-identical copies, "
        "so building the cached index once embeds only this many",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="decode threads, as `embed --workers`")
    parser.add_argument("--skip-assets", action="store_true", help="skip the sample-asset throughput runs")
    parser.add_argument("--skip-commands", action="store_true", help="skip the fresh-process command runs")
    args = parser.parse_args()
    import torch

    started = load_average()
    backbone = load_backbone("efficientnet_lite0")
    set_determinism(0)
    rows: list[Row] = []
    if not args.skip_assets:
        rows += bench_runtimes(ROOT / "assets" / "images", args.repeat)
        rows += bench_throughput("sample assets", ROOT / "assets" / "images", backbone, args.repeat, args.workers)
    if not args.skip_commands:
        rows += bench_commands(args.repeat)
    if args.camera:
        camera = make_set(CACHE / f"camera-{args.camera}", args.camera, _camera_jpeg, "{:05d}.jpg")
        rows += bench_decoding(camera, backbone, args.repeat)
        rows += bench_throughput(f"{args.camera:,} camera JPEGs", camera, backbone, args.repeat, args.workers)
    if args.rerun:
        rows += bench_no_model(args.rerun, args.rerun_distinct, args.repeat)
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, default runtime {backbone.runtime}; medians of {args.repeat} runs; "
        f"load average {started} at start, {load_average()} at end\n"
    )
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
