"""Quality benchmark: plain cosine vs embedlab, side by side, at the default flags.

    python bench/quality.py                 # assets/ (ground truth) + labeled sets
    python bench/quality.py --images DIR --truth DIR/ground_truth.json --no-labeled

Duplicates are scored pairwise over the planted groups at --dup-threshold 0.92;
anomalies as planted oddballs among the top 8; search as rank-1 hits for the
queries and for every planted variant; retrieval as P@1/P@5 on Fashion-MNIST
classes and MRI/label-map planes (same-volume slices within 12 excluded).
Prints a Markdown table on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from datasets import DEFAULT_CACHE, fashion_mnist, medical_planes, same_volume_near  # noqa: E402
from peers import cosine_groups  # noqa: E402

from embedlab.analysis import analyze_vectors, evidence_loader, load_for_analysis  # noqa: E402
from embedlab.evaluation import retrieval_metrics  # noqa: E402
from embedlab.images import scan_images  # noqa: E402
from embedlab.indexer import embed_folder, embed_paths, resolve_backbone  # noqa: E402
from embedlab.registry import semantic_columns  # noqa: E402
from embedlab.search import Searcher  # noqa: E402
from embedlab.store import Store  # noqa: E402

METHODS = {"plain cosine": "plain", "embedlab": "hybrid"}
ENCODINGS = {"png16", "cmyk", "palette", "rgba", "exif_rot"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build(images: Path, recipe: str, out: Path) -> tuple[list[str], np.ndarray, list[list[str]], dict[str, Any]]:
    embed_folder(str(images), str(out), recipe=recipe)
    with Store(out) as store:
        shas, matrix = store.load_vectors(through_vec=False)
        by_sha = store.ok_paths_by_sha()
        quality = store.quality()
    return shas, matrix, [by_sha[s] for s in shas], quality


def pairs_of(groups: list[list[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for g in groups for p in itertools.combinations(g, 2)}  # type: ignore[misc]


def score_assets(
    images: Path, truth: dict[str, Any], recipe: str, work: Path, plain_scoring: bool, queries: Path
) -> dict[str, Any]:
    _shas, matrix, paths, quality = build(images, recipe, work / recipe)
    name = {p: Path(p).name for ps in paths for p in ps}
    with Store(work / recipe) as store:
        # What `analyze` reads: the backbone's own features, and the stored same-picture evidence.
        shas, semantic = load_for_analysis(store, semantic_columns(store.meta()))
        by_sha = store.ok_paths_by_sha()
        result = analyze_vectors(
            # The plain approach: mean distance to the 5 nearest; embedlab: its defaults (k=10 and quality flags).
            semantic,
            [by_sha[s] for s in shas],
            threshold=0.92,
            anomaly_top=8,
            k=5 if plain_scoring else 10,
            quality=None if plain_scoring else quality,
            evidence=None if plain_scoring else evidence_loader(store, shas),
        )
    if plain_scoring:  # the plain approach groups every pair at cosine >= 0.92
        flat = [p[0] for p in paths]
        extra = {p[0]: p for p in paths}
        groups = cosine_groups(flat, matrix, 0.92).groups
        result["duplicate_groups"] = [sorted(q for p in g for q in extra.get(p, [p])) for g in groups]
    predicted = pairs_of([[name[p] for p in g] for g in result["duplicate_groups"]])
    planted = pairs_of(truth["duplicate_groups"])
    tp = len(predicted & planted)
    group_of = {n: i for i, g in enumerate(result["duplicate_groups"]) for n in (name[p] for p in g)}
    encodings = [(n, rec["base"]) for n, rec in truth["images"].items() if rec.get("transform") in ENCODINGS]
    original = {rec["base"]: n for n, rec in truth["images"].items() if rec["role"] != "near_duplicate"}
    enc_ok = sum(1 for n, base in encodings if n in group_of and group_of[n] == group_of.get(original[base]))
    hard = pairs_of(truth["hard_negative_groups"])
    wrong_hard = len(predicted & hard)
    anomalies = [name[p] for p in result["anomalies"]]
    odd_hits = len(set(anomalies) & set(truth["oddballs"]))
    unreadable_as_anomaly = len(set(anomalies) & set(truth["unreadable"]))

    # Search: the 6 queries, and every planted variant against the rest of the index.
    with Store(work / recipe) as store:
        backbone = resolve_backbone(store, None, None)
        searcher = Searcher(store)
        query_files = scan_images(queries)
        qvecs = embed_paths(backbone, [q.abspath for q in query_files])
        q_ok = sum(
            1
            for q, v in zip(query_files, qvecs, strict=True)
            if not isinstance(v, str) and Path(searcher.top_k(v, 1)[0].path).name == truth["queries"][Path(q.path).name]
        )
    group_members = {n: set(g) for g in truth["duplicate_groups"] for n in g}
    index_of = {name[p]: i for i, ps in enumerate(paths) for p in ps}
    variant_ok = variant_n = 0
    for n, rec in truth["images"].items():
        if rec["role"] != "near_duplicate" or n not in index_of or rec.get("transform") == "byte_copy":
            continue  # a byte-identical copy shares its original's vector: both always come back at 1.0
        i = index_of[n]
        sims = matrix.astype(np.float64) @ matrix[i].astype(np.float64)
        sims[i] = -np.inf
        best = name[paths[int(np.argmax(sims))][0]]
        variant_n += 1
        variant_ok += best in group_members[n]
        if best not in group_members[n]:
            log(f"  {recipe}: variant {n} ({rec.get('transform')}) ranks {best} first")
    return {
        "dup_precision": tp / max(1, len(predicted)),
        "dup_recall": tp / max(1, len(planted)),
        "encodings_grouped": f"{enc_ok}/{len(encodings)}",
        "hard_negative_pairs_grouped": f"{wrong_hard}/{len(hard)}",
        "oddballs_in_top8": f"{odd_hits}/8",
        "unreadable_listed_as_anomaly": unreadable_as_anomaly,
        "queries_rank1": f"{q_ok}/{len(query_files)}",
        "variants_rank1_in_group": f"{variant_ok}/{variant_n}",
        "anomalies": anomalies,
    }


def score_labeled(
    folder: Path, recipe: str, work: Path, exclude: Callable[[str, str], bool] | None
) -> dict[str, float]:
    _, matrix, paths, _ = build(folder, recipe, work / f"{folder.name}-{recipe}")
    names = [p[0] for p in paths]
    labels = [Path(p).parent.name for p in names]
    skip = (lambda i, j: exclude(names[i], names[j])) if exclude else None
    return retrieval_metrics(matrix, labels, ks=(1, 5, 10), exclude=skip)


def with_viewpoint_pair(images: Path, truth: dict[str, Any], work: Path) -> tuple[Path, dict[str, Any]]:
    """The assets plus scikit-image's stereo pair (one scene, two viewpoints) as a hard negative.

    The pair has no licence statement, so it is added at benchmark time and never committed.
    """
    import skimage
    from PIL import Image

    folder = work / "bench-images"
    shutil.copytree(images, folder)
    truth = json.loads(json.dumps(truth))
    names = []
    for side in ("left", "right"):
        with Image.open(Path(skimage.__file__).parent / "data" / f"motorcycle_{side}.png") as img:
            img = img.convert("RGB")
            img.thumbnail((320, 320), Image.Resampling.LANCZOS)
            name = f"viewpoint_{side}.png"
            img.save(folder / name)
        names.append(name)
        truth["images"][name] = {"base": f"motorcycle_{side}", "role": "base", "domain": "photo"}
    truth["hard_negative_groups"].append(names)
    return folder, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=ROOT / "assets" / "images")
    parser.add_argument("--truth", type=Path, default=ROOT / "assets" / "ground_truth.json")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--no-labeled", action="store_true", help="skip the Fashion-MNIST and MRI sets")
    parser.add_argument("--json", action="store_true", help="JSON instead of a Markdown table")
    parser.add_argument(
        "--no-viewpoint-pair", action="store_true", help="do not add the stereo pair as an extra hard negative"
    )
    args = parser.parse_args()
    truth = json.loads(args.truth.read_text())
    started = time.perf_counter()
    table: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = args.images
        if not args.no_viewpoint_pair:
            images, truth = with_viewpoint_pair(args.images, truth, work)
        for label, recipe in METHODS.items():
            log(f"assets, {label}")
            table[label] = score_assets(
                images, truth, recipe, work, plain_scoring=recipe == "plain", queries=args.images.parent / "queries"
            )
        if not args.no_labeled:
            sets = {
                "fashion": (fashion_mnist(args.cache), None),
                "medical": (medical_planes(args.cache), same_volume_near),
            }
            for set_name, (folder, exclude) in sets.items():
                for label, recipe in METHODS.items():
                    log(f"{set_name}, {label}")
                    for key, value in score_labeled(folder, recipe, work, exclude).items():
                        table[label][f"{set_name} {key}"] = value
    if args.json:
        print(json.dumps(table, indent=2))
        return
    keys = [k for k in table["plain cosine"] if k != "anomalies"]
    print("| measure | plain cosine | embedlab |\n|---|---|---|")
    for key in keys:
        cells = [table[m][key] for m in METHODS]
        text = [
            f"{c:.3f}"
            if isinstance(c, float) and not key.endswith("queries")
            else str(int(c))
            if isinstance(c, float)
            else str(c)
            for c in cells
        ]
        print("| " + key + " | " + " | ".join(text) + " |")
    log(f"done in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
