"""Anomaly scores: how isolated an item is for its neighbourhood, plus rare quality flags.

Plain "mean distance to the k nearest" ranks ordinary items of a sparse region
(varied photos) above oddballs near a dense one (hundreds of similar scans), and a
handful of look-alike oddballs (three blanks) hide each other because they are
each other's nearest neighbours. So isolation here is LOF-like:

* ``outer`` distance: the mean cosine distance to the neighbours ranked
  ``OUTER_FROM`` .. k (skipping none measured best: the k = 10 neighbours of a
  handful of look-alikes already reach past their group);
* relative to the *median* outer distance of the item's neighbours (a median, so
  a few look-alikes, all far from the rest, do not set each other's reference);
* blended geometrically with the outer distance relative to the whole collection,
  so that a dense region's oddball and a sparse region's oddball both stand out.

Everything is vectorised over the (n, k) k-NN graph, so a million items take a few
(n, k) arrays. Quality flags come from the metrics stored at embed time and are
judged against the collection (odd sizes, aspects and greyscale are relative to what
most images are); a flag adds to the score only where it is rare in the collection.

Two more measures come from those metrics: how unlike any other image's an item's pixel
statistics are, and how unlike its nearest images' (by the vectors) they are (a chart
whose CNN features sit among photos). The score adds the three measures as robust
z-scores (log scale, the collection's median and MAD), so each counts in one unit, how
unusual for this collection, whatever its spread, plus the weight of the rarest flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OUTER_FROM = 0  # nearest neighbour ranks left out of the distance (0 measured best on the tune half)
GLOBAL_WEIGHT = 0.75  # geometric blend: 0 = only relative to the neighbours, 1 = to the whole collection
EPS = 1e-6  # cosine distance floor, so exact duplicates do not divide by zero

# Added to the isolation of an item with a rare flag (the largest of its flags): a broken
# file weighs more than a merely unusual look (dark, light, flat, soft or grey pictures exist).
BROKEN_WEIGHT = 2.0
LOOK_WEIGHT = 1.0
BROKEN = frozenset({"blank", "odd_size", "odd_aspect", "partially_decoded"})
RARE_FRACTION = 0.03  # a flag counts when at most this share of the collection has it ...
RARE_MIN_COUNT = 2  # ... or at most this many items (small collections)

# Fixed cut-offs where the quantity has an absolute meaning.
BLANK_CONTRAST = 0.008  # grey-level std / 255: about 2 grey levels (paper or fabric textures are 1-4 %)
BLANK_ENTROPY = 2.5  # bits; a texture with 1 % spread already has about 3.4
DARK_CEILING = 0.25  # mean + 2 std of grey / 255 below this: nearly every pixel is dark
LIGHT_FLOOR = 0.75  # mean - 2 std above this: nearly every pixel is light ...
TEXTURE_QUANTILE = 0.75  # ... unless its fine detail is in the collection's top quarter (light paper, fabric)
LOW_INFORMATION_BITS = 2.0  # grey-level entropy: a few tones (a chart, a scan of text, a chessboard)
BLUR_RATIO = 0.002  # Laplacian variance / grey variance: fine detail left relative to the contrast
TINY_SIDE = 32  # px
ODD_AREA_FACTOR = 100.0  # pixel count this far from the collection's median ...
ODD_ASPECT_FACTOR = 4.0  # aspect ratio this far from the collection's median ...
SIZE_ALIKE = 2.0  # ... and few images within this factor of its side (or aspect): a rare size, not a second mode
GREY_COLOURFULNESS = 0.012  # Hasler-Suesstrunk M / 255 below this is greyscale
COLOUR_MAJORITY = 0.9  # "among colour": at least this share of the collection is colour
BAND_FRACTION = 0.2  # partially decoded: this share of the rows at the bottom is one flat colour
GREY_MODES = frozenset(
    {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "MONOCHROME1", "MONOCHROME2"}
)

# Pixel statistics judged together against the collection: each is turned into a score of
# its rank in the collection (logistic quantile of the mid-rank), and an item's mean
# Euclidean distance to its k nearest in that space, relative to the collection's median,
# says how unlike any other image its pixels are made (a chart, colour bars, a rainbow
# gradient, noise: images whose CNN features sit among ordinary ones).
STATISTICS = (
    "brightness",
    "contrast",
    "entropy",
    "detail",  # log of fine detail relative to contrast (sharpness / grey variance)
    "colourfulness",
    "saturation",
    "correlation",
    "edges",
    "flat",
    "top_colours",
    "colours",  # log of the count
)
STATISTICS_WEIGHT = 0.25  # added to the score per robust z of the statistics isolation (tune half)
CROSS_WEIGHT = 0.25  # ... and per robust z of the cross isolation (tune half)
Z_FLOOR = 0.05  # log units: the MAD's floor, so a collection of alike items does not blow small differences up
STATISTICS_CUT = 3.0  # unusual_statistics: statistics isolation at least this (tune half)
STATISTICS_K = 10  # neighbours in statistics space
STATISTICS_BLOCK = 2048  # rows per block of the exact all-pairs search in statistics space
CROSS_BLOCK = 16384  # rows per block of the cross isolation (rows x k x 11 floats: 14 MB at k = 10)

FLAGS = (
    "blank",
    "dark",
    "light",
    "low_information",
    "blurry",
    "odd_size",
    "odd_aspect",
    "grayscale_among_colour",
    "partially_decoded",
    "unusual_statistics",
)


@dataclass(frozen=True)
class Anomalies:
    """Per-item anomaly evidence; arrays and lists are aligned with the graph's rows."""

    score: np.ndarray  # robust z of isolation + weighted z of statistics and cross isolation + flag_bonus
    isolation: np.ndarray  # density-aware isolation (about 1 for an ordinary item)
    percentile: np.ndarray  # of isolation in the collection, 0-100
    distance: np.ndarray  # plain mean cosine distance to the k nearest
    statistics: np.ndarray  # statistics isolation: how unlike the collection's its pixel statistics are
    cross: np.ndarray  # cross isolation: how unlike its nearest images' (by the vectors) its pixel statistics are
    flag_bonus: np.ndarray  # the largest weight of its counted flags (0 without one)
    flags: list[list[str]]  # every flag that holds
    counted: list[list[str]]  # the flags rare enough to add to the score
    reasons: list[list[str]]  # the same, for people, with the measured values


def mean_distance(sim: np.ndarray) -> np.ndarray:
    """The plain baseline: mean cosine distance to the k nearest other items."""
    if sim.shape[1] == 0:
        return np.zeros(sim.shape[0])
    return np.asarray(1.0 - sim.mean(axis=1), dtype=np.float64)


def isolation_scores(
    index: np.ndarray,
    sim: np.ndarray,
    *,
    outer_from: int | None = None,
    global_weight: float | None = None,
) -> np.ndarray:
    """Density-aware isolation of each item of a k-NN graph (about 1 = ordinary).

    ``index``/``sim``: (n, k) neighbour rows and cosines, nearest first. Returns
    (outer / median outer of the neighbours) ** (1 - w) * (outer / median outer) ** w.
    """
    n, k = sim.shape
    if k == 0 or n < 2:
        return np.ones(n)
    outer_from = OUTER_FROM if outer_from is None else outer_from
    global_weight = GLOBAL_WEIGHT if global_weight is None else global_weight
    start = min(max(0, outer_from), k - 1)
    outer = np.maximum(1.0 - sim[:, start:].astype(np.float64).mean(axis=1), EPS)
    local = np.median(outer[index], axis=1)
    overall = float(np.median(outer))
    relative = np.log(outer) - np.log(np.maximum(local, EPS))
    absolute = np.log(outer) - np.log(max(overall, EPS))
    return np.asarray(np.exp((1.0 - global_weight) * relative + global_weight * absolute))


def percentiles(values: np.ndarray) -> np.ndarray:
    """Share of the collection (in %) at or below each value."""
    if values.size == 0:
        return np.zeros(0)
    ordered = np.sort(values)
    return np.asarray(100.0 * np.searchsorted(ordered, values, side="right") / values.size)


def _column(metrics: Sequence[Mapping[str, Any] | None], key: str) -> np.ndarray:
    """One metric as a float array, NaN where it is not stored."""
    out = np.full(len(metrics), np.nan)
    for i, m in enumerate(metrics):
        value = m.get(key) if m else None
        if value is not None:
            out[i] = float(value)
    return out


def _median(values: np.ndarray) -> float:
    known = values[np.isfinite(values)]
    return float(np.median(known)) if known.size else float("nan")


def _alike(values: np.ndarray, tolerance: float) -> np.ndarray:
    """How many items (itself included) lie within ``tolerance`` of each value (NaN: none)."""
    known = np.sort(values[np.isfinite(values)])
    out = np.searchsorted(known, values + tolerance, side="right") - np.searchsorted(known, values - tolerance)
    return np.where(np.isfinite(values), out, 0)


def _grey_mode(mode: object) -> bool:
    return mode is not None and (str(mode) in GREY_MODES or "MONOCHROME" in str(mode))


def statistics_matrix(metrics: Sequence[Mapping[str, Any] | None]) -> np.ndarray:
    """(n, len(STATISTICS)) raw statistics, NaN where not stored (an older embedlab)."""
    columns = []
    for key in STATISTICS:
        if key == "detail":
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = _column(metrics, "sharpness") / np.square(_column(metrics, "contrast") * 255.0)
            columns.append(np.log(np.where(np.isfinite(ratio), ratio, 0.0) + 1e-6))
        elif key == "colours":
            columns.append(np.log(_column(metrics, "colours")))
        else:
            columns.append(_column(metrics, key))
    return np.stack(columns, axis=1) if columns else np.zeros((len(metrics), 0))


def rank_scores(values: np.ndarray) -> np.ndarray:
    """Each column as the logistic quantile of its mid-rank in the collection (ties share one)."""
    n = values.shape[0]
    out = np.zeros_like(values, dtype=np.float64)
    for j in range(values.shape[1]):
        column = values[:, j]
        ordered = np.sort(column)
        mid = 0.5 * (np.searchsorted(ordered, column, side="left") + np.searchsorted(ordered, column, side="right"))
        share = mid / n
        out[:, j] = np.log(share / (1.0 - share)) * np.sqrt(3.0) / np.pi  # unit variance, like a normal score
    return out


def statistics_isolation(metrics: Sequence[Mapping[str, Any] | None], k: int) -> tuple[np.ndarray, np.ndarray]:
    """How unlike the collection's each item's pixel statistics are (about 1 = ordinary).

    Returns the isolation (mean distance to the k nearest in rank-score space over
    the collection's median; 1 where a statistic is missing) and the rank scores
    (rows of NaN where missing), whose largest magnitudes explain it.
    """
    raw = statistics_matrix(metrics)
    n = raw.shape[0]
    known = np.isfinite(raw).all(axis=1) if n else np.zeros(0, dtype=bool)
    isolation = np.ones(n)
    scores = np.full(raw.shape, np.nan)
    rows = np.flatnonzero(known)
    kk = min(k, rows.size - 1)
    if kk < 1:
        return isolation, scores
    points = rank_scores(raw[rows])
    scores[rows] = points
    squares = (points * points).sum(axis=1)
    distance = np.empty(rows.size)
    for start in range(0, rows.size, STATISTICS_BLOCK):
        block = points[start : start + STATISTICS_BLOCK]
        d2 = squares[start : start + len(block), None] + squares[None, :] - 2.0 * block @ points.T
        d2[np.arange(len(block)), np.arange(start, start + len(block))] = np.inf  # not its own neighbour
        nearest = np.partition(d2, kk - 1, axis=1)[:, :kk]
        distance[start : start + len(block)] = np.sqrt(np.maximum(nearest, 0.0)).mean(axis=1)
    isolation[rows] = distance / max(float(np.median(distance)), EPS)
    return isolation, scores


def cross_isolation(index: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """How unlike its nearest images' (by the vectors) an item's pixel statistics are (about 1 = ordinary).

    ``index``: the (n, k) k-NN graph; ``ranks``: ``statistics_isolation``'s rank scores
    (rows of NaN where not stored). The mean distance in rank-score space to the
    neighbours, over the collection's median: an ordinary image's neighbours are made
    like it, while an oddball whose CNN features sit among ordinary ones (a chart, colour
    bars or a document among photos) has neighbours whose pixels are made differently.
    """
    n, k = index.shape
    out = np.ones(n)
    known = np.isfinite(ranks).all(axis=1) if ranks.size else np.zeros(n, dtype=bool)
    if k == 0 or known.sum() < 2:
        return out
    filled = np.where(known[:, None], ranks, 0.0)
    distance = np.full(n, np.nan)
    for start in range(0, n, CROSS_BLOCK):
        rows = slice(start, min(n, start + CROSS_BLOCK))
        neighbours = index[rows]
        gap = np.sqrt(((filled[rows, None, :] - filled[neighbours]) ** 2).sum(axis=2))
        valid = known[rows, None] & known[neighbours]
        count = valid.sum(axis=1)
        total = np.where(valid, gap, 0.0).sum(axis=1)
        distance[rows] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    measured = np.isfinite(distance)
    if not measured.any():
        return out
    out[measured] = distance[measured] / max(float(np.median(distance[measured])), EPS)
    return out


def robust_z(values: np.ndarray) -> np.ndarray:
    """Log values as z-scores against the collection's median and MAD (a few outliers do not set the scale)."""
    if values.size == 0:
        return np.zeros(0)
    logs = np.log(np.maximum(values, EPS))
    middle = float(np.median(logs))
    spread = 1.4826 * float(np.median(np.abs(logs - middle)))
    return np.asarray((logs - middle) / max(spread, Z_FLOOR))


def flag_table(
    metrics: Sequence[Mapping[str, Any] | None],
    statistics: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Boolean (n,) array per flag from stored per-image metrics, judged against the collection.

    Also a description per flag of its cut-off in this collection (for the reasons).
    Missing metrics (images embedded by an older embedlab) never raise a flag.
    ``statistics``: ``statistics_isolation`` of the items (default: computed here).
    """
    n = len(metrics)
    if statistics is None:
        statistics = statistics_isolation(metrics, STATISTICS_K)[0]
    width, height = _column(metrics, "width"), _column(metrics, "height")
    contrast, entropy = _column(metrics, "contrast"), _column(metrics, "entropy")
    brightness, sharpness = _column(metrics, "brightness"), _column(metrics, "sharpness")
    colourfulness, band = _column(metrics, "colourfulness"), _column(metrics, "band")
    with np.errstate(invalid="ignore", divide="ignore"):
        blank = (contrast < BLANK_CONTRAST) & (entropy < BLANK_ENTROPY)
        side = np.fmin(width, height)
        log_area = np.log(width * height)
        log_aspect = np.log(width / height)
        area_cut, aspect_cut = np.log(ODD_AREA_FACTOR), np.log(ODD_ASPECT_FACTOR)
        few = max(RARE_MIN_COUNT, RARE_FRACTION * n)
        lonely_size = _alike(0.5 * log_area, np.log(SIZE_ALIKE)) <= few
        lonely_aspect = _alike(log_aspect, np.log(SIZE_ALIKE)) <= few
        odd_size = lonely_size & ((side < TINY_SIDE) | (np.abs(log_area - _median(log_area)) > area_cut))
        odd_aspect = lonely_aspect & (np.abs(log_aspect - _median(log_aspect)) > aspect_cut)
        detail = sharpness / np.square(contrast * 255.0)
        known_detail = detail[np.isfinite(detail)]
        texture_cut = float(np.quantile(known_detail, TEXTURE_QUANTILE)) if known_detail.size else np.inf
        textured = np.isfinite(detail) & (detail > texture_cut)
        modes = [m.get("mode") if m else None for m in metrics]
        grey_mode = np.array([_grey_mode(mode) for mode in modes], dtype=bool)
        grey = np.where(np.isfinite(colourfulness), colourfulness < GREY_COLOURFULNESS, grey_mode)
        known = np.isfinite(colourfulness) | np.array([mode is not None for mode in modes], dtype=bool)
        colour_share = float((~grey & known).sum() / max(1, known.sum()))
        table = {
            "blank": blank,
            "dark": ~blank & (brightness + 2 * contrast < DARK_CEILING),
            "light": ~blank & (brightness - 2 * contrast > LIGHT_FLOOR) & ~textured,
            "low_information": ~blank & (entropy < LOW_INFORMATION_BITS),
            "blurry": ~blank & (detail < BLUR_RATIO),
            "odd_size": odd_size,
            "odd_aspect": odd_aspect,
            "grayscale_among_colour": grey & known & (colour_share >= COLOUR_MAJORITY),
            "partially_decoded": ~blank & (band >= BAND_FRACTION),
            "unusual_statistics": ~blank & (statistics >= STATISTICS_CUT),
        }
    median_area = np.exp(_median(log_area)) if n else float("nan")
    median_aspect = np.exp(_median(log_aspect)) if n else float("nan")
    cuts = {
        "blank": f"grey-level spread < {BLANK_CONTRAST:.1%} and entropy < {BLANK_ENTROPY:g} bits",
        "dark": f"mean + 2 std of brightness < {DARK_CEILING:.0%}",
        "light": f"mean - 2 std of brightness > {LIGHT_FLOOR:.0%}, and fine detail not in the top "
        f"{1 - TEXTURE_QUANTILE:.0%} here (> {texture_cut:.3g}: a light texture)",
        "low_information": f"grey-level entropy < {LOW_INFORMATION_BITS:g} bits",
        "blurry": f"fine detail (Laplacian / grey variance) < {BLUR_RATIO:g}",
        "odd_size": f"shorter side < {TINY_SIDE} px or pixel count {ODD_AREA_FACTOR:g}x off the median "
        f"({median_area:,.0f} px), and few images within {SIZE_ALIKE:g}x of its side",
        "odd_aspect": f"aspect ratio {ODD_ASPECT_FACTOR:g}x off the median ({median_aspect:.2f}), "
        f"and few images within {SIZE_ALIKE:g}x of it",
        "grayscale_among_colour": f"colourfulness < {GREY_COLOURFULNESS:g} where {colour_share:.0%} are colour",
        "partially_decoded": f"bottom {BAND_FRACTION:.0%} or more of the rows one flat colour",
        "unusual_statistics": f"pixel statistics {STATISTICS_CUT:g}x or more as far from their nearest images' "
        "as is usual here",
    }
    return {name: np.asarray(table[name], dtype=bool) for name in FLAGS}, cuts


def flag_weight(name: str) -> float:
    """What a counted flag adds to the score."""
    return BROKEN_WEIGHT if name in BROKEN else LOOK_WEIGHT


def rare(table: Mapping[str, np.ndarray]) -> dict[str, bool]:
    """Whether each flag is rare enough in the collection to count."""
    out = {}
    for name, held in table.items():
        count, n = int(held.sum()), held.size
        out[name] = 0 < count <= max(RARE_MIN_COUNT, RARE_FRACTION * n)
    return out


def score(
    index: np.ndarray,
    sim: np.ndarray,
    metrics: Sequence[Mapping[str, Any] | None] | None = None,
) -> Anomalies:
    """Isolation, flags and the combined anomaly score of every item of a k-NN graph.

    ``metrics``: the stored quality metrics per row (None: isolation alone).
    """
    n = sim.shape[0]
    isolation = isolation_scores(index, sim)
    percentile = percentiles(isolation)
    distance = mean_distance(sim)
    statistics, ranks = np.ones(n), np.full((n, len(STATISTICS)), np.nan)
    cross = np.ones(n)
    if metrics is None:
        table: dict[str, np.ndarray] = {name: np.zeros(n, dtype=bool) for name in FLAGS}
        cuts: dict[str, str] = {}
    else:
        statistics, ranks = statistics_isolation(metrics, STATISTICS_K)
        cross = cross_isolation(index, ranks)
        table, cuts = flag_table(metrics, statistics)
    counts = rare(table)
    bonus = np.zeros(n)
    for name, held in table.items():
        if counts[name]:
            bonus = np.where(held, np.maximum(bonus, flag_weight(name)), bonus)
    total = robust_z(isolation) + STATISTICS_WEIGHT * robust_z(statistics) + CROSS_WEIGHT * robust_z(cross) + bonus
    flags: list[list[str]] = [[] for _ in range(n)]
    for name in FLAGS:
        for i in np.flatnonzero(table[name]):
            flags[int(i)].append(name)
    counted = [[f for f in fs if counts[f]] for fs in flags]
    share = {name: int(held.sum()) for name, held in table.items()}
    reasons = [
        [
            f"{f}: {_measured(f, metrics[i] if metrics else None, statistics[i], ranks[i])} ({cuts.get(f, f)}); "
            f"{share[f]} of {n} images" + ("" if counts[f] else ", too common here to add to the score")
            for f in fs
        ]
        for i, fs in enumerate(flags)
    ]
    return Anomalies(total, isolation, percentile, distance, statistics, cross, bonus, flags, counted, reasons)


def _measured(flag: str, m: Mapping[str, Any] | None, statistics: float = 1.0, ranks: Any = None) -> str:
    """The stored value behind a flag, for people."""
    if not m:
        return "?"
    if flag == "unusual_statistics":
        return f"statistics isolation {statistics:.2f} (1 = ordinary); furthest out: {_furthest(ranks)}"
    width, height = m.get("width") or 0, m.get("height") or 0
    if flag == "blank":
        return f"grey-level spread {m['contrast']:.2%}, entropy {m['entropy']:.2f} bits"
    if flag in ("dark", "light"):
        return f"brightness {m['brightness']:.0%} +- {m['contrast']:.0%}"
    if flag == "low_information":
        return f"entropy {m['entropy']:.2f} bits"
    if flag == "blurry":
        return f"fine detail {m['sharpness'] / max(EPS, (m['contrast'] * 255.0) ** 2):.4f}"
    if flag == "odd_size":
        return f"{width}x{height} px"
    if flag == "odd_aspect":
        return f"{width}x{height} px, aspect {width / max(1, height):.2f}"
    if flag == "grayscale_among_colour":
        value = m.get("colourfulness")
        return f"colourfulness {value:.3f}" if value is not None else f"file mode {m.get('mode')}"
    return f"bottom {m.get('band') or 0.0:.0%} of the rows one flat colour"


def _furthest(ranks: Any, count: int = 3) -> str:
    """The statistics whose rank in the collection is most extreme, for people."""
    if ranks is None or not np.isfinite(ranks).all():
        return "?"
    order = np.argsort(-np.abs(ranks), kind="stable")[:count]
    return ", ".join(f"{STATISTICS[j]} {'high' if ranks[j] > 0 else 'low'}" for j in order)


def isolation_reason(anomalies: Anomalies, i: int) -> str:
    """One line on how isolated item ``i`` is, for the details of an anomaly."""
    return (
        f"isolation {anomalies.isolation[i]:.2f} (1 = ordinary for its neighbourhood), "
        f"{anomalies.percentile[i]:.1f}th percentile; mean distance to its neighbours {anomalies.distance[i]:.3f}; "
        f"pixel statistics isolation {anomalies.statistics[i]:.2f}, "
        f"against its neighbours' {anomalies.cross[i]:.2f}"
    )
