"""Same-picture benchmark: embedlab's verified duplicates against plain cosine and the peers, on both halves.

    python bench/dupset.py                       # build the collection once (bench/.cache/dupset)
    python bench/dupbench.py --fit               # fit the verifier's model on the tune half, print it
    python bench/dupbench.py --fit --channels geometry   # refit one channel, the others as shipped
    python bench/dupbench.py                     # report: tune and holdout halves, peers side by side
    python bench/dupbench.py --why               # where each kind's true pairs are lost (a diagnosis, per half)

The collection is split by source image; the model constants shipped in
embedlab/duplicates.py come from ``--fit`` on the tune half only, so the
holdout columns are the result. Markdown on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dupscore import collection_key  # noqa: E402

from embedlab import duplicates as dup  # noqa: E402
from embedlab.analysis import item_slices, load_for_analysis, neighbourhood, with_small_candidates  # noqa: E402
from embedlab.descriptor import DEFAULT_RECIPE  # noqa: E402
from embedlab.indexer import embed_folder  # noqa: E402
from embedlab.registry import semantic_columns  # noqa: E402
from embedlab.store import Store  # noqa: E402
from embedlab.verify import TINY_SIDE, Logistic, Model, PairEvidence  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
CHANNELS = ("pixel", "geometry", "inset")  # the verifier's logistic channels, as --fit --channels names them


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_half(half: str, dataset: Path, recipe: str) -> dict[str, Any]:
    """Embed one half (reusing its index when the folder is unchanged) and load what analysis needs."""
    images = dataset / half / "images"
    truth = json.loads((dataset / half / "truth.json").read_text())
    index = CACHE / "dupbench" / f"{collection_key(dataset)}-{half}-{recipe}"  # one folder per index: no second root
    t0 = time.perf_counter()
    embed_folder(str(images), str(index), recipe=recipe)
    log(f"{half}: embedded in {time.perf_counter() - t0:.1f} s")
    with Store(index) as store:
        shas, matrix = load_for_analysis(store, semantic_columns(store.meta()))  # as analyze reads them
        by_sha = store.ok_paths_by_sha()
        evidence = store.evidence_for(shas)
        placed = store.series_slices()
        tiny = store.small_contents(TINY_SIDE)
    prefix = len(str(images)) + 1
    paths = [sorted(p[prefix:] if p.startswith(str(images)) else p for p in by_sha[s]) for s in shas]
    return {
        "truth": truth,
        "matrix": matrix,
        "paths": paths,
        "evidence": [evidence.get(s) for s in shas],
        "images": images,
        # DICOM series places per item, as `analyze` reads them (two places of one series never group).
        "slices": item_slices([by_sha[s] for s in shas], placed),
        # Pictures smaller than the thumbnail, proposed by their thumbnails too (as `analyze` selects them).
        "small": [n for n, s in enumerate(shas) if s in tiny],
    }


def true_group_of(truth: dict[str, Any]) -> dict[str, int]:
    return {p: g["id"] for g in truth["duplicate_groups"] for p in g["paths"]}


def item_label(paths_a: list[str], paths_b: list[str], group_of: dict[str, int]) -> bool:
    ga = {group_of[p] for p in paths_a if p in group_of}
    return any(group_of.get(p) in ga for p in paths_b)


def candidates_for(data: dict[str, Any], k: int, floor: float) -> list[dup.Candidate]:
    """As `analyze` proposes them: the vectors' nearest, and the thumbnails' for pictures smaller than them."""
    hood = neighbourhood(data["matrix"], k, 2.0)
    cands = dup.candidate_pairs(hood.index, hood.sim, k=k, floor=floor)
    evidence = data["evidence"]
    return with_small_candidates(cands, data["matrix"], data["small"], lambda items: {i: evidence[i] for i in items})


def measured_pairs(data: dict[str, Any], cands: list[dup.Candidate]) -> list[PairEvidence | None]:
    verifier = dup.Verifier(data["evidence"])
    return verifier.measure_all(cands, threads=2)


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-2, iters: int = 50, offset: np.ndarray | None = None, bias: bool = True
) -> tuple[np.ndarray, float]:
    """Newton's method on the L2-penalised log-likelihood (bias unpenalised), on top of a fixed ``offset`` logit."""
    xb = np.hstack([x, np.ones((len(x), 1))]) if bias else x
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], l2)
    if bias:
        penalty[-1] = 0.0
    base = np.zeros(len(x)) if offset is None else offset
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(base + xb @ w)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return (w[:-1], float(w[-1])) if bias else (w, 0.0)


def groups_as_paths(data: dict[str, Any], groups: list[dup.Group]) -> list[list[str]]:
    return sorted(sorted(p for m in g.members for p in data["paths"][m]) for g in groups)


def embedlab_groups(data: dict[str, Any], threshold: float, k: int, floor: float) -> list[list[str]]:
    """Groups as `analyze` makes them: verified candidates, slices of one DICOM series at two places kept apart."""
    from embedlab.analysis import other_slices
    from embedlab.marks import without_marked

    cands = candidates_for(data, k, floor)
    links = dup.Verifier(data["evidence"]).links(cands, threads=2)
    multi = [len(p) > 1 for p in data["paths"]]
    apart = other_slices(cands, data["slices"]) if data["slices"] is not None else set()
    links = without_marked(len(data["paths"]), links, threshold, multi, apart) if apart else links
    return groups_as_paths(data, dup.build_groups(len(data["paths"]), links, threshold, multi))


def cmd_fit(data: dict[str, Any], k: int, floor: float, channels: tuple[str, ...] = CHANNELS) -> Model:
    """The verifier's model fitted on ``data``; channels not in ``channels`` stay as shipped."""
    group_of = true_group_of(data["truth"])
    cands = candidates_for(data, k, floor)
    measured = measured_pairs(data, cands)
    keep = [
        (m, item_label(data["paths"][i], data["paths"][j], group_of))
        for (i, j, _, _), m in zip(cands, measured, strict=True)
    ]
    keep = [(m, y) for m, y in keep if m is not None]
    report_candidates(data, cands)
    y = np.array([float(v) for _, v in keep])
    # Two steps: agreement and size on every pair, then the tiny pictures' extra agreement on top of
    # that fit (fitted jointly, the tiny term would also make every large picture stricter).
    x_pix = np.stack([m.pixel_features() for m, _ in keep])
    w_main, b_pix = fit_logistic(x_pix[:, :2], y)
    w_tiny, _ = fit_logistic(x_pix[:, 2:], y, offset=x_pix[:, :2] @ w_main + b_pix, bias=False)
    w_pix = np.concatenate([w_main, w_tiny])
    fitted = [(m, v) for m, v in keep if m.fitted]
    y_geo = np.array([float(v) for _, v in fitted])
    w_geo, b_geo = fit_logistic(np.stack([m.geometry_features() for m, _ in fitted]), y_geo)
    log(f"pixel channel: {len(y)} candidate pairs ({int(y.sum())} true)")
    w_cos, b_cos = fit_logistic(np.array([[m.cosine] for m, _ in keep]), y)
    log(f"cosine only (indexes without evidence): Logistic(weights=({w_cos[0]:.4f},), bias={b_cos:.4f})")
    log(f"geometry channel: {len(y_geo)} pairs with a keypoint fit ({int(y_geo.sum())} true)")
    # The inset channel is fitted on the pairs it can decide: found inside the larger picture, and left
    # below even odds by the other two channels (fitted on every found pair, the copies that the other
    # channels already prove, and whose inset is a crop at another scale, would blur its cut-off).
    others = Model(Logistic(tuple(w_pix), b_pix), Logistic(tuple(w_geo), b_geo))
    found = [(m, v) for m, v in keep if m.inset > -1.0 and others.probability([m])[0] < 0.5]
    y_ins = np.array([float(v) for _, v in found])
    w_ins, b_ins = fit_logistic(np.stack([m.inset_features() for m, _ in found]), y_ins)
    log(f"inset channel: {len(y_ins)} undecided pairs, smaller picture found in the larger ({int(y_ins.sum())} true)")

    def rounded(w: np.ndarray, b: float) -> Logistic:
        return Logistic(tuple(round(float(v), 4) for v in w), round(b, 4))

    shipped = dup.MODEL
    return Model(
        rounded(w_pix, b_pix) if "pixel" in channels else shipped.pixel,
        rounded(w_geo, b_geo) if "geometry" in channels else shipped.geometry,
        rounded(w_ins, b_ins) if "inset" in channels else shipped.inset,
    )


def true_pairs(data: dict[str, Any]) -> list[tuple[str, int, int]]:
    """Every true pair of items (a < b) with its group's kind, group by group."""
    index_of = {p: i for i, ps in enumerate(data["paths"]) for p in ps}
    out = []
    for group in data["truth"]["duplicate_groups"]:
        items = sorted({index_of[p] for p in group["paths"] if p in index_of})
        out.extend((group["kind"], a, b) for n, a in enumerate(items) for b in items[n + 1 :])
    return out


def report_candidates(data: dict[str, Any], cands: list[dup.Candidate]) -> None:
    """How many true pairs the vectors propose at all, per kind (the verifier cannot find the rest)."""
    proposed = {(c[0], c[1]) for c in cands}
    by_kind: dict[str, list[int]] = {}
    for kind, a, b in true_pairs(data):
        agg = by_kind.setdefault(kind, [0, 0])
        agg[0] += (a, b) in proposed
        agg[1] += 1
    log("candidate recall per kind: " + ", ".join(f"{k} {f}/{t}" for k, (f, t) in sorted(by_kind.items())))
    log(f"{len(cands)} candidate pairs for {len(data['paths'])} items")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=CACHE / "dupset")
    parser.add_argument("--fit", action="store_true", help="fit the verifier's model on the tune half and print it")
    parser.add_argument(
        "--channels",
        default=",".join(CHANNELS),
        help="with --fit: the channels to refit (the others are printed as shipped)",
    )
    parser.add_argument("--threshold", type=float, default=0.92)
    parser.add_argument("--k", type=int, default=dup.CANDIDATE_K)
    parser.add_argument("--floor", type=float, default=dup.CANDIDATE_COSINE)
    parser.add_argument("--halves", default="tune,holdout")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="vector recipe of the indexes (default: embedlab's)")
    parser.add_argument("--peers", default="phash,imagededup,fastdup,cosine")
    parser.add_argument("--why", action="store_true", help="per kind, the stage where each true pair is lost")
    args = parser.parse_args(argv)
    os.environ.setdefault("SENTRY_OPT_OUT", "1")

    if args.fit:
        channels = tuple(c for c in args.channels.split(",") if c)
        if unknown := set(channels) - set(CHANNELS):
            parser.error(f"unknown channel {sorted(unknown)[0]}; choose from {', '.join(CHANNELS)}")
        model = cmd_fit(load_half("tune", args.dataset, args.recipe), args.k, args.floor, channels)
        print(model)
        return 0

    if args.why:
        for half in args.halves.split(","):
            print(f"\n### {half} half: where true pairs are lost\n")
            print(why_table(load_half(half, args.dataset, args.recipe), args.threshold, args.k, args.floor))
        return 0

    from dupscore import markdown_table, score_groups

    for half in args.halves.split(","):
        data = load_half(half, args.dataset, args.recipe)
        rows: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        rows["embedlab"] = score_groups(data["truth"], embedlab_groups(data, args.threshold, args.k, args.floor))
        rows["embedlab"]["seconds"] = round(time.perf_counter() - t0, 1)
        rows |= peer_rows(data, args.peers.split(","), half)
        for method, extra in copy_queries(half, args.dataset, args.recipe).items():
            rows.setdefault(method, {}).update(extra)
        print(f"\n### {half} half ({len(data['truth']['images'])} images)\n")
        print(markdown_table(rows))
    return 0


STAGES = ("verified", "not_proposed", "no_keypoint_fit", "fit_failed", "fit_too_weak", "pixels_too_weak")


def loss_stage(m: PairEvidence, rank: int, probability: float, threshold: float) -> str:
    """Where a proposed true pair was lost: the stage to improve for it (pixel agreement >= 0.9 counts as pixels)."""
    if probability >= threshold:
        return "verified"
    if max(m.pixel, m.pixel_rank) >= 0.9:
        return "pixels_too_weak"  # aligned thumbnails agree, but not enough for the pixel channel
    if m.inliers > 0:
        return "fit_too_weak"  # a keypoint fit was found, and scored below the threshold
    return "no_keypoint_fit" if rank >= dup.GEOMETRY_RANK else "fit_failed"


def why_table(data: dict[str, Any], threshold: float, k: int, floor: float) -> str:
    """Per planted kind, how many true pairs end at each stage (proposal, keypoint fit, scoring)."""
    cands = candidates_for(data, k, floor)
    measured = measured_pairs(data, cands)
    have = [n for n, m in enumerate(measured) if m is not None]
    probability = dict(zip(have, dup.MODEL.probability([measured[n] for n in have]), strict=True))  # type: ignore[misc]
    by_pair = {(c[0], c[1]): n for n, c in enumerate(cands)}
    counts: dict[str, dict[str, int]] = {}
    for kind, a, b in true_pairs(data):
        row = counts.setdefault(kind, dict.fromkeys(STAGES, 0))
        c = by_pair.get((a, b))
        m = None if c is None else measured[c]
        if c is None or m is None:
            row["not_proposed"] += 1
        else:
            row[loss_stage(m, cands[c][3], float(probability[c]), threshold)] += 1
    total = {s: sum(r[s] for r in counts.values()) for s in STAGES}
    lines = ["| kind | " + " | ".join(STAGES) + " |", "|---|" + "---:|" * len(STAGES)]
    for kind, row in [*sorted(counts.items()), ("all", total)]:
        lines.append(f"| {kind} | " + " | ".join(str(row[s]) for s in STAGES) + " |")
    return "\n".join(lines)


def copy_queries(half: str, dataset: Path, recipe: str) -> dict[str, dict[str, Any]]:
    """Rank-1 rate of each edited copy's source: embedlab search (verified copies first) vs plain cosine order."""
    from embedlab.indexer import query_vectors, resolve_spec
    from embedlab.ranking import Ranker
    from embedlab.search import Searcher

    truth = json.loads((dataset / half / "truth.json").read_text())
    images = dataset / half / "images"
    index = CACHE / "dupbench" / f"{collection_key(dataset)}-{half}-{recipe}"
    queries = [dataset / half / "queries" / q["query"] for q in truth["copy_queries"]]
    group_of = true_group_of(truth)
    members = {g["id"]: {str(images / p) for p in g["paths"]} for g in truth["duplicate_groups"]}
    ours = plain = 0
    with Store(index) as store:
        spec = resolve_spec(store, None, None)
        evidence: dict[int, Any] = {}
        turned: dict[int, Any] = {}
        vectors, _ = query_vectors(store, spec, queries, evidence=evidence, turned=turned)
        ranker = Ranker(store, Searcher(store, exact=True))
        for n, (q, vec) in enumerate(zip(truth["copy_queries"], vectors, strict=True)):
            # The source, or a planted copy of it: both are the query's picture.
            want = members.get(group_of.get(q["source"], -1), set()) | {str(images / q["source"])}
            ours += ranker.top_k(vec, 5, evidence=evidence.get(n), turned=turned.get(n, ()))[0].path in want
            plain += ranker.top_k(vec, 5)[0].path in want
    total = len(truth["copy_queries"])
    return {"embedlab": {"copy_rank1": ours / total}, "stored-vector order": {"copy_rank1": plain / total}}


def peer_rows(data: dict[str, Any], peers: list[str], half: str) -> dict[str, dict[str, Any]]:
    import peers as peer_lib
    from dupscore import score_groups

    rows: dict[str, dict[str, Any]] = {}
    for name in peers:
        t0 = time.perf_counter()
        if name == "cosine":
            flat = [p[0] for p in data["paths"]]
            groups = peer_lib.cosine_groups(flat, data["matrix"], 0.92).groups
            # Byte-identical copies share one row: put their other paths back.
            extra = {p[0]: p for p in data["paths"]}
            groups = [sorted(q for p in g for q in extra.get(p, [p])) for g in groups]
            label = "plain cosine 0.92"
        elif name == "phash":
            groups, label = peer_lib.phash_groups(data["images"]).groups, "PHash <= 2 bits"
        elif name == "imagededup":
            groups, label = peer_lib.imagededup_groups(data["images"]).groups, "imagededup PHash defaults"
        elif name == "fastdup":
            work = CACHE / "dupbench" / f"fastdup-{half}"
            groups, label = peer_lib.fastdup_groups(data["images"], work).groups, "fastdup defaults"
        else:
            raise SystemExit(f"unknown peer {name}")
        rows[label] = score_groups(data["truth"], groups)
        rows[label]["seconds"] = round(time.perf_counter() - t0, 1)
        log(f"{half}: {label} done")
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
