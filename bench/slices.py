"""Slices of one series: how often embedlab calls two different slices of one MRI volume the same picture.

    python bench/slices.py            # Markdown table on stdout (about 15 s on 2 cores)

The duplicate benchmark (bench/dupset.py) lists slices of one volume at least 8 apart as hard
negatives; a folder that holds a whole series also holds its neighbours, 1 to 7 slices apart.
For both T1 volumes of Debian's mricron-data (colin27, a single human subject; inia19, a
macaque template), each plane and each gap, pairs of slices are embedded with the default
recipe, their same-picture evidence computed as `embed` stores it, and judged as `analyze`
judges a candidate pair (embedlab.duplicates.Verifier with the shipped model). Reported: the
median probability and the share of pairs at or above the default --dup-threshold 0.92.
Sagittal pairs "mirrored" are the slices the same distance left and right of the midline of
the volume's foreground, which a near-symmetric brain makes look alike (so bench/dupset.py takes
sagittal slices from one side of the midline only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from datasets import MEDICAL_PACKAGE, PLANES, _plane_axis, fetch_deb  # noqa: E402
from dupset import MRIVolume, Source  # noqa: E402

from embedlab import evidence  # noqa: E402
from embedlab.backbones import load_backbone  # noqa: E402
from embedlab.duplicates import Verifier  # noqa: E402

VOLUMES = {"colin27": "ch2.nii.gz", "inia19": "inia19-t1-brain.nii.gz"}
GAPS = (1, 2, 3, 4, 6, 8, 12)
BASES = 6  # base slices per plane, spread over the middle of the foreground
THRESHOLD = 0.92


def pairs_for(vol: MRIVolume, plane: str) -> dict[str, list[tuple[int, int]]]:
    """Slice index pairs per row label: each gap from BASES base slices, and mirrored sagittal slices."""
    grid = sorted(set(vol.slots[plane]))
    bases = [grid[int(i)] for i in np.linspace(len(grid) * 0.25, len(grid) * 0.75, BASES).round()]
    depth = vol.gray.shape[_plane_axis(plane)]
    out = {f"{gap} apart": [(b, b + gap) for b in bases if b + gap < depth] for gap in GAPS}
    if plane == "sagittal":
        middle = round(vol.midline)  # the collection takes sagittal slices from one side of it only
        out["mirrored about the midline"] = [(middle - d, middle + d) for d in (6, 10, 14, 18, 22, 26)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache")
    args = parser.parse_args(argv)
    root = fetch_deb(MEDICAL_PACKAGE, args.cache)
    backbone = load_backbone("efficientnet_lite0")
    print("| volume | plane | slices | pairs | median P(same picture) | share >= 0.92 |")
    print("|---|---|---|---:|---:|---:|")
    for name, filename in VOLUMES.items():
        src = Source(sid=f"mricron:{name}", family="mri", stratum="mri_t1", meta={"nifti": filename, "modality": "mri"})
        vol = MRIVolume(src, root, np.random.default_rng(0))
        for plane in PLANES:
            for label, pairs in pairs_for(vol, plane).items():
                indices = sorted({i for pair in pairs for i in pair})
                pictures = [vol.image(plane, i).convert("RGB") for i in indices]
                row = {i: n for n, i in enumerate(indices)}
                vectors = backbone.embed(pictures)
                verifier = Verifier([evidence.compute(p) for p in pictures])
                scores = []
                for a, b in pairs:
                    cosine = float(vectors[row[a]] @ vectors[row[b]])
                    scores.append(verifier.link(row[a], row[b], cosine).score)
                share = sum(s >= THRESHOLD for s in scores) / len(scores)
                print(f"| {name} | {plane} | {label} | {len(scores)} | {statistics.median(scores):.3f} | {share:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
