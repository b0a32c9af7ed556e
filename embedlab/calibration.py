"""`calibrate`: how the same-picture judgement does on this index's own images, without labels.

Known near-duplicates are manufactured from a sample of the indexed images
(the encodings and edits in ``transforms.py``). A variant's verified
probability of being its own source is a positive; its best probability
against an indexed image *distinct* from the source is a negative (what it
could be confused with). Recall per edit kind at the --dup-threshold in use
tells which edits this collection's duplicates survive. Without labels,
"distinct" means not linked to the source by any chain of pairs scoring at least
``distinct_below`` (0.80 by default, well under any sensible threshold), so the
index's own near-duplicates of a sampled image are not counted against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import EvidenceLoader, components, neighbourhood
from .backbones import Backbone
from .duplicates import CANDIDATE_K, Verifier
from .evidence import compute as compute_evidence
from .images import ImageError, decode, fs_path, viewed_rgb
from .search import cosine_scores
from .transforms import EDITS, VARIANTS, apply_variant, encode_decode

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99)


@dataclass(frozen=True)
class Calibration:
    positives: dict[str, list[float]]  # variant name -> similarity to its source
    negatives: list[float]  # every variant's best similarity to another image
    sampled: int

    def table(self) -> list[dict[str, float]]:
        pos = np.concatenate([np.asarray(v) for v in self.positives.values()]) if self.positives else np.zeros(0)
        neg = np.asarray(self.negatives)
        rows = []
        for t in THRESHOLDS:
            tp, fp = int((pos >= t).sum()), int((neg >= t).sum())
            precision = tp / (tp + fp) if tp + fp else 1.0
            recall = tp / len(pos) if len(pos) else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            rows.append({"threshold": t, "precision": precision, "recall": recall, "f1": f1})
        return rows

    def suggested_threshold(self, min_precision: float = 0.97, min_recall: float = 0.95) -> float:
        """The highest threshold that still meets both targets (else the best F1).

        Highest, because the sample cannot show hard negatives it never saw
        (other slices of a scan, other crops of a texture): extra margin is cheap.
        """
        rows = self.table()
        meeting = [r["threshold"] for r in rows if r["precision"] >= min_precision and r["recall"] >= min_recall]
        if meeting:
            return max(meeting)
        return max(rows, key=lambda r: (r["f1"], r["threshold"]))["threshold"]

    def as_dict(self, threshold: float = 0.92) -> dict[str, Any]:
        """Everything measured; ``per_variant`` recall is at ``threshold`` (the --dup-threshold in use)."""
        return {
            "sampled_images": self.sampled,
            "suggested_dup_threshold": self.suggested_threshold(),
            "dup_threshold": threshold,
            "per_variant": {
                name: {
                    "recall": round(float(np.mean(np.asarray(v) >= threshold)), 4),
                    "min": round(min(v), 4),
                    "median": round(float(np.median(v)), 4),
                }
                for name, v in self.positives.items()
                if v
            },
            "negatives": {
                "max": round(max(self.negatives), 4) if self.negatives else None,
                "median": round(float(np.median(self.negatives)), 4) if self.negatives else None,
            },
            "pr_table": [{k: round(v, 4) for k, v in r.items()} for r in self.table()],
        }


def calibrate(
    backbone: Backbone,
    shas: list[str],
    matrix: np.ndarray,
    paths: list[list[str]],
    evidence: EvidenceLoader,
    *,
    sample: int = 40,
    seed: int = 0,
    distinct_below: float = 0.80,
) -> Calibration:
    """Verified same-picture probability of each edit against its source, and against the nearest distinct images.

    For every sampled image and every edit (encodings and the EDITS of
    transforms.py) the edited copy is embedded and its evidence computed as
    `embed` would; it is verified against its source (a positive) and against
    its CANDIDATE_K nearest indexed images outside the source's family (the
    best of those is a negative): exactly the candidates `analyze` would verify.
    """
    family = components(len(shas), neighbourhood(matrix, 0, distinct_below).pairs)
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(shas), size=min(sample, len(shas)), replace=False).tolist()) if shas else []
    kinds = {**VARIANTS, **EDITS}
    positives: dict[str, list[float]] = {name: [] for name in kinds}
    negatives: list[float] = []
    used = 0
    for i in chosen:
        try:
            source = decode(Path(fs_path(paths[i][0]))).rgb  # stored as path text
        except (ImageError, OSError):
            continue  # the file moved since it was indexed
        used += 1
        edited = [viewed_rgb(encode_decode(*apply_variant(source, name))) for name in kinds]
        vectors = backbone.vectors([backbone.prepare(rgb) for rgb in edited])
        for name, rgb, vec in zip(kinds, edited, vectors, strict=True):
            sims = cosine_scores(matrix, vec)
            own = sims.copy()
            own[family == family[i]] = -np.inf
            nearest = [int(j) for j in np.argsort(-own, kind="stable")[:CANDIDATE_K] if np.isfinite(own[j])]
            stored = evidence([i, *nearest])
            pool = [compute_evidence(rgb)] + [stored.get(j) for j in [i, *nearest]]
            verifier = Verifier(pool)
            positives[name].append(verifier.link(0, 1, float(sims[i])).score)
            scores = [verifier.link(0, n + 2, float(sims[j])).score for n, j in enumerate(nearest)]
            negatives.append(max(scores, default=0.0))
    return Calibration(positives, negatives, used)


def save_plot(calibration: Calibration, path: Path) -> bool:
    """PR curve as PNG when matplotlib is installed; returns whether it was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = calibration.table()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([r["recall"] for r in rows], [r["precision"] for r in rows], marker="o")
    for r in rows[::3]:
        ax.annotate(f"{r['threshold']:.2f}", (r["recall"], r["precision"]), fontsize=7)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("near-duplicate threshold calibration")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
