"""`evaluate`: retrieval quality of an index over a folder whose subfolders are classes.

Every image queries all the others (leave-one-out); a hit is a result of the
same class. Optional exclusions drop pairs that would make the task trivial,
such as neighbouring slices of one scan.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath

import numpy as np

from .search import cosine_scores


def class_of(path: str, root: str) -> str:
    """The first folder below ``root``: assets/labeled/cat/x.png -> cat."""
    rel = PurePosixPath(path).relative_to(PurePosixPath(root)) if root not in ("", ".") else PurePosixPath(path)
    return rel.parts[0] if len(rel.parts) > 1 else ""


def same_group(pattern: str) -> Callable[[str, str], bool]:
    """Exclusion from a regex whose first group names a source (patient, volume...)."""
    regex = re.compile(pattern)

    def key(path: str) -> str | None:
        match = regex.search(path)
        return match.group(1) if match and match.groups() else None

    return lambda a, b: (ka := key(a)) is not None and ka == key(b)


def retrieval_metrics(
    matrix: np.ndarray,
    labels: Sequence[str],
    *,
    ks: Sequence[int] = (1, 5, 10),
    exclude: Callable[[int, int], bool] | None = None,
) -> dict[str, float]:
    """Mean P@k, recall@k and mAP over all queries that have at least one relevant item."""
    n = len(labels)
    label_arr = np.asarray(labels)
    p_at: dict[int, list[float]] = {k: [] for k in ks}
    r_at: dict[int, list[float]] = {k: [] for k in ks}
    aps: list[float] = []
    for i in range(n):
        sims = cosine_scores(matrix, matrix[i])
        keep = np.ones(n, dtype=bool)
        keep[i] = False
        if exclude is not None:
            keep &= np.array([not exclude(i, j) for j in range(n)])
        candidates = np.flatnonzero(keep)
        order = candidates[np.lexsort((candidates, -sims[candidates]))]
        relevant = label_arr[order] == label_arr[i]
        total = int(relevant.sum())
        if total == 0:
            continue
        for k in ks:
            p_at[k].append(float(relevant[:k].mean()) if k <= len(relevant) else float(relevant.sum() / k))
            r_at[k].append(float(relevant[:k].sum() / total))
        hits = np.cumsum(relevant)
        ranks = np.flatnonzero(relevant) + 1
        aps.append(float((hits[relevant] / ranks).mean()))
    out: dict[str, float] = {}
    for k in ks:
        out[f"P@{k}"] = float(np.mean(p_at[k])) if p_at[k] else 0.0
    for k in ks:
        out[f"recall@{k}"] = float(np.mean(r_at[k])) if r_at[k] else 0.0
    out["mAP"] = float(np.mean(aps)) if aps else 0.0
    out["queries"] = float(len(aps))
    return out
