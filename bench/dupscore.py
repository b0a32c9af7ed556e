"""Score near-duplicate groups, anomaly rankings and copy queries against a truth file.

    python bench/dupscore.py --images DIR --truth TRUTH.json [--peers phash,imagededup,fastdup]
    python bench/dupscore.py --images assets/images --truth assets/ground_truth.json --queries assets/queries

runs the peers of ``bench/peers.py`` on DIR and prints one Markdown table, a column per
method, on stdout (progress and the peers' own output on stderr).

Truth format (paths relative to the images folder)::

    {"images": {"relpath": {"source": str, "family": str, "role": ROLE, "kind": str|null, "group": int|null}},
     "duplicate_groups": [{"id": int, "kind": str, "paths": [relpaths, original first]}],
     "hard_negative_pairs": {"<kind>": [[a, b], ...]},
     "oddballs": {"relpath": "<kind>"}, "low_contrast_normals": [relpaths],
     "copy_queries": [{"query": str, "source": relpath, "kind": str}]}

where ROLE is one of original, near_duplicate, natural_duplicate, hard_negative, oddball,
low_contrast, normal. The sample assets' older ``assets/ground_truth.json`` is mapped into it by
:func:`truth_from_sample_assets` (:func:`load_truth` picks the adapter by itself).

Duplicates are scored pairwise: every unordered pair inside a predicted group against every
pair inside a true group. Paths not in ``truth["images"]`` are ignored everywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent

Pair = tuple[str, str]


def collection_key(dataset: Path) -> str:
    """A cache folder name for one built collection: its folder's name and a hash of where it is.

    Two builds (another --seed or --cache) are both called ``dupset``; keyed by name alone, their
    indexes would share a folder and `embed` would index both collections into one."""
    where = hashlib.sha1(str(Path(dataset).resolve()).encode()).hexdigest()[:8]
    return f"{Path(dataset).name}-{where}"


def _pair(a: str, b: str) -> Pair:
    return (a, b) if a <= b else (b, a)


def group_pairs(groups: Iterable[Iterable[str]], known: Mapping[str, Any] | None = None) -> set[Pair]:
    """All unordered pairs inside each group (only paths in ``known`` when given)."""
    out: set[Pair] = set()
    for g in groups:
        members = sorted({p for p in g if known is None or p in known})
        out.update(itertools.combinations(members, 2))
    return out


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


# ---------------------------------------------------------------- duplicates


def score_groups(truth: Mapping[str, Any], predicted_groups: Iterable[Iterable[str]]) -> dict[str, Any]:
    """Pairwise precision/recall/F1 of predicted groups, per-kind recall, hard-negative violations.

    Keys: ``precision``, ``recall``, ``f1`` (None when undefined), ``true_positive_pairs``,
    ``predicted_pairs``, ``true_pairs``, ``predicted_groups``, ``largest_predicted_group``,
    ``largest_true_group``, ``kind_recall`` ({kind: recall}), ``kind_pairs`` ({kind: true
    pairs}), ``hard_negative_violation_rate`` ({kind: rate}) and ``hard_negative_violations``
    ({kind: {"pairs": n, "violations": v}}).
    """
    images = truth["images"]
    predicted = [sorted({p for p in g if p in images}) for g in predicted_groups]
    predicted = [g for g in predicted if len(g) > 1]
    pred_pairs = group_pairs(predicted)

    true_by_kind: dict[str, set[Pair]] = {}
    true_sizes = [0]
    for group in truth.get("duplicate_groups", []):
        members = [p for p in group["paths"] if p in images]
        true_sizes.append(len(set(members)))
        true_by_kind.setdefault(str(group.get("kind")), set()).update(group_pairs([members]))
    true_pairs = set().union(*true_by_kind.values()) if true_by_kind else set()

    tp = len(pred_pairs & true_pairs)
    precision = _ratio(tp, len(pred_pairs))
    recall = _ratio(tp, len(true_pairs))
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0

    hn_rate: dict[str, float | None] = {}
    hn_counts: dict[str, dict[str, int]] = {}
    for kind, pairs in sorted(truth.get("hard_negative_pairs", {}).items()):
        listed = {_pair(a, b) for a, b in pairs if a in images and b in images and a != b}
        violations = len(listed & pred_pairs)
        hn_rate[kind] = _ratio(violations, len(listed))
        hn_counts[kind] = {"pairs": len(listed), "violations": violations}

    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_positive_pairs": tp,
        "predicted_pairs": len(pred_pairs),
        "true_pairs": len(true_pairs),
        "predicted_groups": len(predicted),
        "largest_predicted_group": max((len(g) for g in predicted), default=0),
        "largest_true_group": max(true_sizes),
        "kind_recall": {k: _ratio(len(v & pred_pairs), len(v)) for k, v in sorted(true_by_kind.items())},
        "kind_pairs": {k: len(v) for k, v in sorted(true_by_kind.items())},
        "hard_negative_violation_rate": hn_rate,
        "hard_negative_violations": hn_counts,
    }


# ---------------------------------------------------------------- anomalies


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """Rank-based AUROC (Mann-Whitney U, ties get the average rank); None without both classes."""
    if not positive or not negative:
        return None
    values = sorted([(float(v), 1) for v in positive] + [(float(v), 0) for v in negative])
    rank_sum = 0.0
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1][0] == values[i][0]:
            j += 1
        mean_rank = (i + j) / 2 + 1  # ranks are 1-based
        rank_sum += mean_rank * sum(label for _, label in values[i : j + 1])
        i = j + 1
    n_pos, n_neg = len(positive), len(negative)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def score_anomalies(
    truth: Mapping[str, Any], ranked_paths: Sequence[str], scores: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Planted oddballs among the top 8 and the top N (N = number of oddballs), and AUROC.

    ``ranked_paths``: most anomalous first. ``scores``: relpath -> anomaly score (higher is
    more anomalous); AUROC is given only when every image of the truth has a score.
    Also ``low_contrast_in_top_n``: low-contrast normals ranked in the top N (false alarms).
    """
    images = truth["images"]
    oddballs = {p for p in truth.get("oddballs", {}) if p in images}
    ranked = list(dict.fromkeys(p for p in ranked_paths if p in images))
    n = len(oddballs)
    low_contrast = {p for p in truth.get("low_contrast_normals", []) if p in images}
    out: dict[str, Any] = {
        "oddballs": n,
        "top8_hits": len(set(ranked[:8]) & oddballs),
        "topN_hits": len(set(ranked[:n]) & oddballs),
        "topN_recall": _ratio(len(set(ranked[:n]) & oddballs), n),
        "missed_kinds_topN": sorted({truth["oddballs"][p] for p in oddballs - set(ranked[:n])}),
    }
    if low_contrast:
        out["low_contrast_in_top_n"] = len(set(ranked[:n]) & low_contrast)
    result: float | None = None
    if scores is not None:
        missing = [p for p in images if p not in scores]
        if not missing:
            result = auroc(
                [scores[p] for p in images if p in oddballs], [scores[p] for p in images if p not in oddballs]
            )
        else:
            out["auroc_missing_scores"] = len(missing)
    out["auroc"] = result
    return out


# ---------------------------------------------------------------- copy queries


def score_copy_queries(truth: Mapping[str, Any], query_results: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Rank-1 hit rate of the copy queries; ``query_results``: query -> ranked result relpaths.

    A query without results counts as a miss (and in ``unanswered``). Also per query kind.
    """
    images = truth["images"]
    queries = truth.get("copy_queries", [])
    hits = 0
    unanswered = 0
    by_kind: dict[str, list[int]] = {}
    for q in queries:
        results = [p for p in query_results.get(q["query"], []) if p in images]
        if q["query"] not in query_results:
            unanswered += 1
        hit = int(bool(results) and results[0] == q["source"])
        hits += hit
        by_kind.setdefault(str(q.get("kind")), []).append(hit)
    return {
        "copy_queries": len(queries),
        "rank1_hits": hits,
        "rank1_rate": _ratio(hits, len(queries)),
        "unanswered": unanswered,
        "kind_rank1": {k: sum(v) / len(v) for k, v in sorted(by_kind.items())},
    }


# ---------------------------------------------------------------- output


def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level with ``outer.inner`` keys."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """Methods side by side: one column per method, one row per (flattened) metric.

    Metrics appear in the order first seen; a method without a metric shows ``n/a``.
    """
    flat = {method: flatten(m) for method, m in rows.items()}
    metrics = list(dict.fromkeys(k for m in flat.values() for k in m))
    methods = list(flat)
    lines = [
        "| metric | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(_cell(flat[m].get(metric)) for m in methods) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- truth files


def _common_prefix(names: Sequence[str]) -> str:
    prefix = ""  # character-wise on purpose: brick_0 and brick_5 share "brick"
    for chars in zip(*names, strict=False):
        if len(set(chars)) > 1:
            break
        prefix += chars[0]
    return re.sub(r"[^A-Za-z0-9]+$", "", prefix) or "mixed"


def truth_from_sample_assets(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Map the sample assets' ``ground_truth.json`` (``scripts/make_assets.py``) to the truth format.

    * ``family`` is the copy family (the old ``base``, e.g. ``brick_0``); ``source`` the file
      it was cut from. Roles: ``base`` -> ``original`` inside a duplicate group, else
      ``hard_negative`` when in a hard-negative group, else ``normal``; ``near_duplicate``
      and ``oddball`` keep their names. A near duplicate's ``kind`` is its transform
      (``jpeg35``, ``png16``, ``rot4+bright12``...), an oddball's its base (``tiny_8x8``).
    * Duplicate groups take the imaging ``domain`` of their original as ``kind`` (ct, mri,
      texture, ...), so per-kind recall reads per domain; the original comes first.
    * Hard-negative groups become all their pairs (minus pairs within one duplicate group);
      the kind is the families' common prefix (``brick``, ``hubble``, ``colin27_ax``...).
    * ``unreadable`` files are left out of ``images`` (kept under ``unreadable``): they are
      neither duplicates nor oddballs, and no method can score them.
    * ``copy_queries`` come from ``queries`` (paths relative to the queries folder) with
      ``query_transforms`` as kind. There are no low-contrast normals.
    """
    old = json.loads(Path(path).read_text())
    old_images: dict[str, dict[str, Any]] = old["images"]
    unreadable = set(old.get("unreadable", [])) | {p for p, v in old_images.items() if v.get("role") == "unreadable"}
    group_of: dict[str, int] = {}
    groups = []
    for gid, members in enumerate(old["duplicate_groups"]):
        members = [p for p in members if p not in unreadable]
        originals = [p for p in members if old_images[p].get("role") == "base"]
        ordered = originals[:1] + sorted(p for p in members if p not in originals[:1])
        groups.append({"id": gid, "kind": old_images[ordered[0]].get("domain", "unknown"), "paths": ordered})
        for p in ordered:
            group_of[p] = gid
    hard_negative = {p for g in old.get("hard_negative_groups", []) for p in g}

    images: dict[str, dict[str, Any]] = {}
    for rel, info in sorted(old_images.items()):
        if rel in unreadable:
            continue
        old_role = info.get("role")
        if old_role == "near_duplicate":
            role, kind = "near_duplicate", info.get("transform")
        elif old_role == "oddball":
            role, kind = "oddball", info.get("base")
        elif rel in group_of:
            role, kind = "original", None
        elif rel in hard_negative:
            role, kind = "hard_negative", None
        else:
            role, kind = "normal", None
        images[rel] = {
            "source": info.get("source", ""),
            "family": info.get("base", rel),
            "role": role,
            "kind": kind,
            "group": group_of.get(rel),
        }

    hn_pairs: dict[str, list[list[str]]] = {}
    for g in old.get("hard_negative_groups", []):
        members = sorted(p for p in g if p in images)
        kind = _common_prefix([images[p]["family"] for p in members])
        for a, b in itertools.combinations(members, 2):
            if group_of.get(a) is not None and group_of.get(a) == group_of.get(b):
                continue
            hn_pairs.setdefault(kind, []).append([a, b])

    transforms = old.get("query_transforms", {})
    return {
        "images": images,
        "duplicate_groups": groups,
        "hard_negative_pairs": dict(sorted(hn_pairs.items())),
        "oddballs": {p: images[p]["kind"] for p in old.get("oddballs", []) if p in images},
        "low_contrast_normals": [],
        "copy_queries": [
            {"query": q, "source": src, "kind": transforms.get(q, "unknown")}
            for q, src in sorted(old.get("queries", {}).items())
        ],
        "unreadable": sorted(unreadable),
    }


def load_truth(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A truth file in the format above, or the sample assets' older format (adapted)."""
    data = json.loads(Path(path).read_text())
    groups = data.get("duplicate_groups", [])
    if "hard_negative_groups" in data or (groups and isinstance(groups[0], list)):
        return truth_from_sample_assets(path)
    return data


# ---------------------------------------------------------------- command line

PEERS = ("phash", "imagededup", "fastdup")


def run_peers(
    images: str | os.PathLike[str],
    truth: Mapping[str, Any],
    peers: Sequence[str] = PEERS,
    work_dir: str | os.PathLike[str] | None = None,
    queries: str | os.PathLike[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run each peer on ``images`` and score it; one metrics dict per peer, for :func:`markdown_table`."""
    sys.path.insert(0, str(BENCH))
    import peers as peer_lib

    rows: dict[str, dict[str, Any]] = {}
    for name in peers:
        print(f"[dupscore] running {name} on {images}", file=sys.stderr)
        if name == "phash":
            res = peer_lib.phash_groups(images)
        elif name == "imagededup":
            res = peer_lib.imagededup_groups(images)
        elif name == "fastdup":
            with tempfile.TemporaryDirectory(prefix="fastdup-") as tmp:
                res = peer_lib.fastdup_groups(images, work_dir or tmp)
                outliers = peer_lib.fastdup_outliers(images, work_dir or tmp)
        else:
            raise ValueError(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
        row: dict[str, Any] = {"seconds": round(res.seconds, 2), "skipped_files": res.n_skipped}
        scored = score_groups(truth, res.groups)
        # one "violations/pairs" cell per kind instead of two rows
        scored["hard_negative_violations"] = {
            k: f"{c['violations']}/{c['pairs']}" for k, c in scored["hard_negative_violations"].items()
        }
        row.update(scored)
        if name == "fastdup":
            row.update(score_anomalies(truth, outliers.ranked or [], outliers.scores))
            row.pop("auroc_missing_scores", None)  # fastdup scores only the outliers it lists
        if name == "phash" and queries is not None:
            results, qres = peer_lib.phash_search(images, queries)
            row.update(score_copy_queries(truth, results))
            row["query_seconds"] = round(qres.seconds, 2)
        rows[name] = row
        print(f"[dupscore] {name}: {res.seconds:.2f} s, {res.n_skipped} skipped, notes: {res.notes}", file=sys.stderr)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", required=True, help="image folder (searched recursively)")
    ap.add_argument("--truth", required=True, help="truth JSON (this format or the sample assets' older one)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {','.join(PEERS)}")
    ap.add_argument("--work-dir", help="fastdup work folder (default: a temporary one)")
    ap.add_argument("--queries", help="query folder: also score copy queries with pHash search")
    ap.add_argument("--json", action="store_true", help="print the metrics as JSON instead of Markdown")
    args = ap.parse_args(argv)
    truth = load_truth(args.truth)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        ap.error(f"unknown peer(s): {', '.join(unknown)}")
    rows = run_peers(args.images, truth, peers, work_dir=args.work_dir, queries=args.queries)
    print(json.dumps(rows, indent=2) if args.json else markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
