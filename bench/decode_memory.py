"""Peak memory of decoding small files that hold huge pictures (issue 14, item 7).

Each case is decoded in a fresh process (so peaks do not mix) and the process's peak
resident memory above its baseline after imports is reported. ``--unbounded`` also runs
each single-file case as decoding did before the budget (no reduction before conversion,
no budget), for comparison; it needs several GB.

    python bench/decode_memory.py                 # 14000 px: grey16, RGBA, palette; two files on two threads
    python bench/decode_memory.py --side 6000 --unbounded
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, resource, sys, threading, time
def peak_kib():  # VmHWM: ru_maxrss would carry the parent's peak over fork and exec
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.path.insert(0, sys.argv[1])
from embedlab import images
unbounded, paths = sys.argv[2] == "1", sys.argv[3:]
if unbounded:  # decoding as it was before the budget: convert the full-size picture
    images.REDUCE_ABOVE_BYTES = 1 << 62
    images.set_decode_budget(1 << 30)
base = peak_kib()
started = time.perf_counter()
out = {}
def one(p):
    try:
        d = images.decode(p)
        out[p] = f"{d.width}x{d.height} {d.mode} -> {d.rgb.width}x{d.rgb.height}"
    except images.ImageError as exc:
        out[p] = f"error: {exc}"
threads = [threading.Thread(target=one, args=(p,)) for p in paths]
for t in threads: t.start()
for t in threads: t.join()
peak = peak_kib()
print(json.dumps({"peak_mib": round((peak - base) / 1024), "seconds": round(time.perf_counter() - started, 2),
                  "results": [out[p] for p in paths]}))
"""


def make_files(folder: Path, side: int) -> dict[str, Path]:
    """Small, highly compressible PNGs of ``side`` x ``side`` pixels in three modes."""
    files = {"grey16": folder / f"grey16_{side}.png", "rgba": folder / f"rgba_{side}.png"}
    files["palette"] = folder / f"palette_{side}.png"
    ramp = (np.arange(side, dtype=np.uint32) * 65535 // max(1, side - 1)).astype(np.uint16)
    if not files["grey16"].exists():
        Image.fromarray(np.broadcast_to(ramp, (side, side)).copy()).save(files["grey16"])  # uint16: mode I;16
    if not files["rgba"].exists():
        Image.new("RGBA", (side, side), (30, 120, 200, 128)).save(files["rgba"])
    if not files["palette"].exists():
        Image.new("P", (side, side), 3).save(files["palette"])
    return files


def measure(paths: list[Path], unbounded: bool) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), "1" if unbounded else "0", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=14000, help="picture side in pixels (default 14000)")
    parser.add_argument("--unbounded", action="store_true", help="also measure decoding without the budget")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        files = make_files(Path(tmp), args.side)
        sizes = {k: f"{p.stat().st_size / 1024:.0f} KB" for k, p in files.items()}
        print(f"made {args.side}x{args.side} files in {time.perf_counter() - t0:.1f}s: {sizes}", file=sys.stderr)
        cases: list[tuple[str, list[Path], bool]] = [(k, [p], False) for k, p in files.items()]
        cases.append(("grey16 + rgba, two threads", [files["grey16"], files["rgba"]], False))
        if args.unbounded:
            cases += [(f"{k} (unbounded, as before)", [p], True) for k, p in files.items() if k != "palette"]
        print("| case | peak MiB above baseline | seconds | result |\n|---|---|---|---|")
        for name, paths, unbounded in cases:
            row = measure(paths, unbounded)
            print(f"| {name} | {row['peak_mib']} | {row['seconds']} | {'; '.join(row['results'])} |", flush=True)


if __name__ == "__main__":
    main()
