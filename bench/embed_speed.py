"""Embedding throughput and no-model latency, each ratio measured within one run.

    python bench/embed_speed.py                         # everything (about 30 minutes on 2 cores, first run longer)
    python bench/embed_speed.py --camera 200 --rerun 1000 --repeat 3   # a quicker look

* throughput: end-to-end `embed` into a fresh index against the backbone's
  model-only throughput (forward pass + pooling on ready tensors, same batches),
  interleaved run by run, on the sample assets and on camera-sized JPEGs
  (3000x2000, made once from scikit-image photos with crops, flips and noise);
* decode cost per camera JPEG (one thread) with and without JPEG draft mode, and
  what draft mode does to the vectors (cosine to the full decode, and to a
  small PNG copy of the same photo);
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

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedlab.backbones import Backbone, load_backbone, set_determinism  # noqa: E402
from embedlab.images import ImageError, decode, quality_metrics, scan_images, viewed_rgb  # noqa: E402
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
            tensors.append(backbone.prepare(decode(info.abspath).rgb).tensor)
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


def bench_throughput(label: str, folder: Path, backbone: Backbone, repeat: int, workers: int) -> list[Row]:
    """Interleaved runs: model-only, then a fresh `embed`, so both see the same machine load.

    Beside wall-clock rates, CPU time per image (all threads of this process)
    is recorded: on a busy machine wall time measures the neighbours too, while
    model CPU / embed CPU estimates the ratio an idle machine of this size would give.
    """
    tensors = ready_tensors(backbone, folder, 256)
    model, phase, whole, model_cpu, embed_cpu = [], [], [], [], []
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
        log(
            f"{label} run {run + 1}: model-only {model[-1]:.1f} img/s ({model_cpu[-1]:.0f} CPU ms/img), "
            f"embed {phase[-1]:.1f} img/s (whole run {whole[-1]:.1f}; {embed_cpu[-1]:.0f} CPU ms/img), "
            f"load {load_average()}"
        )
    m, p, w = statistics.median(model), statistics.median(phase), statistics.median(whole)
    per_run = statistics.median(pi / mi for pi, mi in zip(phase, model, strict=True))
    mc, ec = statistics.median(model_cpu), statistics.median(embed_cpu)
    return [
        (f"{label}: images embedded", str(report.embedded_vectors)),
        (f"{label}: model-only (forward + pooling)", f"{m:.1f} img/s"),
        (f"{label}: `embed` decode + infer + write (workers={workers})", f"{p:.1f} img/s"),
        (f"{label}: ratio embed / model-only (of medians; median of per-run ratios)", f"{p / m:.2f} ; {per_run:.2f}"),
        (
            f"{label}: whole `embed` call incl. model load, scan and hashing",
            f"{w:.1f} img/s ({w / m:.2f} of model-only)",
        ),
        (
            f"{label}: CPU per image, model-only / whole `embed` (ratio)",
            f"{mc:.0f} ms / {ec:.0f} ms ({mc / ec:.2f})",
        ),
    ]


def bench_memory_format(backbone: Backbone, folder: Path, repeat: int) -> list[Row]:
    """Forward pass in the default (NCHW) layout against channels_last, interleaved; same micro-batches."""
    import copy

    import torch

    from embedlab.backbones import MICRO_BATCH

    tensors = ready_tensors(backbone, folder, 128)
    tensors = tensors[: len(tensors) // MICRO_BATCH * MICRO_BATCH]
    last = copy.deepcopy(backbone.trunk).to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def pooled(trunk: torch.nn.Module, fmt: torch.memory_format) -> np.ndarray:
        chunks = [
            trunk(torch.from_numpy(tensors[i : i + MICRO_BATCH]).contiguous(memory_format=fmt)).mean(dim=(2, 3))
            for i in range(0, len(tensors), MICRO_BATCH)
        ]
        return torch.cat(chunks).numpy()

    rates: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    for _ in range(repeat):
        rates["contiguous"].append(len(tensors) / timed(lambda: pooled(backbone.trunk, torch.contiguous_format)))
        rates["channels_last"].append(len(tensors) / timed(lambda: pooled(last, torch.channels_last)))
    a, b = pooled(backbone.trunk, torch.contiguous_format), pooled(last, torch.channels_last)
    nchw, nhwc = statistics.median(rates["contiguous"]), statistics.median(rates["channels_last"])
    return [
        ("forward pass, default NCHW layout (as shipped)", f"{nchw:.1f} img/s"),
        ("forward pass, channels_last", f"{nhwc:.1f} img/s ({nhwc / nchw:.2f}x)"),
        (
            "channels_last features bit-identical to NCHW",
            f"{a.tobytes() == b.tobytes()} (max diff {np.abs(a - b).max():.1e})",
        ),
    ]


# -- decoding large JPEGs ---------------------------------------------------------


def decode_variant(path: Path, min_side: int | None) -> Image.Image:
    """Full decode (None) or JPEG draft mode keeping the shorter side at least ``min_side``."""
    with Image.open(path) as img:
        if min_side is not None and min(img.size) >= 2 * min_side:
            scale = min_side / min(img.size)
            img.draft("RGB", (int(img.width * scale), int(img.height * scale)))
        img.load()
        rgb = viewed_rgb(img)
        rgb.load()
    return rgb


def bench_decoding(folder: Path, backbone: Backbone, repeat: int) -> list[Row]:
    files = [info.abspath for info in scan_images(folder)[:24]]
    rows: list[Row] = []
    mean_mb = statistics.mean(f.stat().st_size for f in files) / 1e6
    rows.append(("camera JPEGs: mean file size", f"{mean_mb:.2f} MB"))

    def per_file(fn: Callable[[Path], object]) -> float:
        return statistics.median(timed(lambda: [fn(f) for f in files]) for _ in range(repeat)) / len(files) * 1000

    def full_work(min_side: int | None) -> Callable[[Path], object]:
        def work(path: Path) -> object:
            rgb = decode_variant(path, min_side)
            return backbone.prepare(rgb), quality_metrics(rgb)

        return work

    info = scan_images(folder)
    jobs = {i.abspath: Job(i, "-") for i in info[:24]}
    rows.append(
        (
            "camera JPEG, per file, 1 thread: what `embed` does (decode, metrics, preprocess, layout)",
            f"{per_file(lambda f: decode_job(backbone, str(folder), jobs[f])):.1f} ms",
        )
    )
    for min_side, name in ((None, "full decode"), (512, "draft, short side >= 512"), (256, "draft, short side >= 256")):
        rows.append(
            (
                f"camera JPEG, per file, 1 thread: {name}, then metrics + preprocess",
                f"{per_file(full_work(min_side)):.1f} ms",
            )
        )

    # What draft mode does to vectors: against the full decode, and against a small PNG copy.
    sample = files[:16]
    vec = {}
    for min_side in (None, 512, 256):
        vec[min_side] = backbone.vectors([backbone.prepare(decode_variant(f, min_side)) for f in sample])
    small = []
    for f in sample:
        with Image.open(f) as img:
            small.append(img.convert("RGB").resize((750, 500), Image.Resampling.LANCZOS))
    small_vec = backbone.vectors([backbone.prepare(im) for im in small])
    for min_side in (512, 256):
        same = (vec[min_side] * vec[None]).sum(axis=1)
        rows.append((f"draft >= {min_side}: cosine to the full-decode vector (min / median)", _stat(same)))
    for min_side in (None, 512, 256):
        name = "full decode" if min_side is None else f"draft >= {min_side}"
        score = (vec[min_side] * small_vec).sum(axis=1)
        rows.append((f"{name}: cosine to a 750x500 copy of the same photo (min / median)", _stat(score)))
    return rows


def _stat(values: np.ndarray) -> str:
    return f"{float(values.min()):.4f} / {float(np.median(values)):.4f}"


# -- no-model paths as fresh processes ----------------------------------------------

_HEAVY = re.compile(r"^import time:.*\|\s*(torch|timm)$", re.MULTILINE)


def cli(args: list[str]) -> tuple[float, float, bool]:
    """Wall and CPU seconds of one embedlab process, and whether it imported torch or timm.

    CPU time (user + system) barely moves with the machine's load; wall time does.
    """
    cmd = [sys.executable, "-X", "importtime", str(ROOT / "embedlab.py"), "-q", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
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
    args = parser.parse_args()
    import torch

    started = load_average()
    backbone = load_backbone("efficientnet_lite0")
    set_determinism(0)
    rows: list[Row] = []
    if not args.skip_assets:
        rows += bench_memory_format(backbone, ROOT / "assets" / "images", args.repeat)
        rows += bench_throughput("sample assets", ROOT / "assets" / "images", backbone, args.repeat, args.workers)
    if args.camera:
        camera = make_set(CACHE / f"camera-{args.camera}", args.camera, _camera_jpeg, "{:05d}.jpg")
        rows += bench_decoding(camera, backbone, args.repeat)
        rows += bench_throughput(f"{args.camera:,} camera JPEGs", camera, backbone, args.repeat, args.workers)
    if args.rerun:
        rows += bench_no_model(args.rerun, args.rerun_distinct, args.repeat)
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads; medians of {args.repeat} runs; "
        f"load average {started} at start, {load_average()} at end\n"
    )
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
