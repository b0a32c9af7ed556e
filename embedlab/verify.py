"""Is it the same picture? Pair verification on stored evidence (embedlab.evidence).

Candidates come from the vectors (each image's nearest neighbours); this module
decides, for each candidate pair, whether the two contents are one picture
edited, and says how:

* ``pixels``: the equalised thumbnails agree under one of the eight flips and
  quarter turns (re-encode, resize, noise, tone or colour edit, mirror, 90/180
  degree rotation);
* ``geometry``: ORB keypoints agree under one affine map found by RANSAC, and
  the thumbnails agree where the map lays one picture on the other (crop, pad,
  small rotation, stretch, a picture inside a larger canvas, overlays);
* ``inset``: one picture is found as a region of the other's thumbnail, pasted
  at its own pixel scale (a canvas, a window screenshot; turned by a few degrees
  for a small picture, or a smooth one whose keypoints fit no map) or cut to
  another shape (one wallpaper at 4:3 and 16:9): small or smooth pictures, where
  keypoints are too few to fit a map.

The measurements become one duplicate probability through a logistic model
whose coefficients were fitted on the tuning half of bench/dupbench.py (a split
by source image; the other half only reports). Those shipped constants give
``--dup-threshold`` one meaning: the estimated probability that a pair is one
picture.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .evidence import THUMB_SIDE, Evidence

# Aspect ratios further apart than this (log ratio) cannot be one picture resized.
ASPECT_TOLERANCE = 0.12
RATIO_TEST = 0.8  # Lowe's ratio for a descriptor match
MIN_MATCHES = 6  # fewer good matches: no geometric fit is tried
RANSAC_PIXELS = 6.0  # inlier distance in the 512 px frame both keypoint sets live in
FRAME = 512.0
MAX_ANISOTROPY = 1.8  # singular-value ratio of the affine map: a stretch of 1.3 passes, a projection does not
PIXEL_DECISIVE = 0.9995  # thumbnails this close need no keypoint fit
FIT_KEYPOINTS = 320  # the strongest keypoints of each picture that a fit matches (all that are stored)
GEOMETRY_RANK = 5  # keypoint fits for each item's 5 nearest candidates (on tune 124 of 128 such finds are at rank 0-1)
GEOMETRY_COSINE = 0.0  # no cosine gate: one at 0.55 lost rotated textures of the sample assets
COARSE_SIDE = 16  # thumbnails are compared at this size first
COARSE_FLOOR = 0.6  # and at full size only where they agree this well at 16 px
FLAT_STD = 2.0  # grey levels: a thumbnail this flat has no structure to compare
DETAIL_SIGMA = (1.0, 3.0)  # thumbnail pixels: the band of fine detail, compared apart from the broad layout
TINY_SIDE = 64  # pictures smaller than the thumbnail (icons, Fashion-MNIST items, small faces)
TINY_AGREEMENT = 0.9  # their thumbnails agree this well only as one picture (no look-alike did, bench/dupbench.py)
INSET_MAX_SHARE = 0.9  # inset: the smaller picture spans at most this share of the larger one's width and height ...
INSET_MIN_SIDE = 12  # ... and at least this many thumbnail pixels of it
INSET_PEAK = 0.85  # template-match correlation below which the inset is not measured further
INSET_TURNED_BELOW = 0.9  # a picture smaller than the thumbnail agreeing less than this is also looked for turned
INSET_ANGLES = tuple(float(a) for a in range(-16, 17, 2) if a)  # by these degrees (a rotation of 10-15 degrees)
# Zoomed inset: a picture smaller than the thumbnail, cropped by 10-25 % per side and shown at its
# own size again (a small item viewed at its usual size), is the middle 50-80 % of the other, enlarged.
ZOOM_SCALES = (0.5, 0.6, 0.7, 0.8)  # the crop's share of the whole, tried at ZOOM_COARSE_SIDE px ...
ZOOM_COARSE_SIDE = 32
ZOOM_PEAK = 0.9  # ... and refined at full size, ZOOM_STEP either way on each axis, where one matches this well
ZOOM_STEP = 0.05
# A picture smaller than the thumbnail pasted into one of up to this many px is also matched on
# their own pixel grid, where its paste offset is whole pixels (the thumbnail keeps half of them).
NATIVE_MAX_SIDE = 2 * THUMB_SIDE

CORE_MARGIN = 2  # thumbnail pixels around the box of the inliers where the core agreement is measured
NO_FIT = (0, 0.0, -1.0, 0.0, -1.0)  # geometric_agreement where no map fits

# The eight flips and quarter turns of a square thumbnail, and what they mean for the picture.
DIHEDRAL: tuple[tuple[str, int, bool], ...] = (
    ("same", 0, False),
    ("mirror", 0, True),
    ("rotation", 1, False),
    ("rotation", 2, False),
    ("rotation", 3, False),
    ("mirror", 1, True),
    ("mirror", 2, True),
    ("mirror", 3, True),
)


@dataclass(frozen=True)
class PairEvidence:
    """Measurements for one candidate pair, before they become a probability."""

    cosine: float  # the stored vectors' cosine
    pixel: float  # NCC of the thumbnails' grey levels under the best dihedral move (-1: none allowed)
    pixel_move: str  # "same", "mirror" or "rotation"
    inliers: int  # RANSAC inliers of the affine keypoint fit (0: no fit)
    inlier_frac: float  # inliers / keypoints of the sparser image
    warped: float  # NCC of the thumbnails where the fitted map overlays them (-1: no fit)
    overlap: float  # share of the smaller picture covered by the other under the map
    flat: bool  # both thumbnails have no structure (blank images)
    pixel_rank: float = -1.0  # NCC of their ranks under the same move (blind to tone curves)
    side: int = 0  # the smaller picture's shorter side, in pixels
    detail: float = -1.0  # NCC of their fine detail under the same move (blind to a shared broad layout)
    inset: float = -1.0  # agreement of one picture found as a region of the other (-1: not tried or not found)
    core: float = -1.0  # warped NCC within the box of the fit's inliers (the whole overlap's where it is too small)

    @property
    def fitted(self) -> bool:
        """Whether the keypoint fit ran (it is skipped where it cannot matter)."""
        return self.warped > -1.0 or self.inliers > 0

    def pixel_features(self) -> np.ndarray:
        """Inputs of the pixel channel: how well the thumbnails agree, and how small the pictures are.

        The agreement is the weaker of the whole picture's (grey levels or ranks,
        whichever is better) and its fine detail's: look-alikes (two shirts of one
        class, neighbouring scan slices) agree on their broad layout far better
        than on their detail, and one picture, edited, agrees on both. For a picture
        smaller than the thumbnail, agreement past TINY_AGREEMENT is a third input: on
        both halves of the benchmark no look-alike pair of such pictures reached it,
        while the noisy, JPEG and gamma copies of 25-28 px items sit at 0.95-0.99.
        Not the cosine: a noisy or heavily compressed copy of a small picture can sit
        at 0.6 cosine from its source while its pixels still agree (bench/dupbench.py).
        """
        small = math.log2(max(8, min(self.side, 1024)) / 1024.0)  # 0 for a large picture, -7 for an 8 px one
        agreement = _logit_ncc(min(max(self.pixel, self.pixel_rank), self.detail))
        # A picture smaller than the thumbnail has no detail of its own beyond what the upscale keeps, so
        # the size term alone asks it for 0.996; past TINY_AGREEMENT its agreement counts apart.
        tiny = max(0.0, agreement - _logit_ncc(TINY_AGREEMENT)) if self.side < TINY_SIDE else 0.0
        return np.array([agreement, small, tiny], dtype=np.float64)

    def inset_features(self) -> np.ndarray:
        """Input of the inset channel: how well the smaller picture agrees where it sits in the larger."""
        return np.array([_logit_ncc(self.inset)], dtype=np.float64)

    def geometry_features(self) -> np.ndarray:
        """Inputs of the geometry channel: the keypoint fit and what it overlays.

        The overlay's agreement is the core's, within the box of the inliers: a canvas
        or window copy disagrees with its source around the picture, and two screenshots
        of different pictures in one window agree on their frame only (bench/dupbench.py).
        """
        return np.array(
            [
                math.log1p(self.inliers),
                self.inlier_frac,
                _logit_ncc(self.core),
                self.overlap,
                self.cosine,
                _logit_ncc(max(self.pixel, self.pixel_rank)),
            ],
            dtype=np.float64,
        )


def _logit_ncc(value: float) -> float:
    """Spread correlations near 1, where same-picture and look-alike differ: -log(1 - ncc)."""
    return -math.log(max(1e-4, 1.0 - max(-1.0, value)))


def normalised_thumb(thumb: np.ndarray) -> tuple[np.ndarray, bool]:
    """The thumbnail as ranks, grey levels and fine detail (zero-mean, unit-norm float32), and whether it is flat.

    Ranks make the comparison blind to monotone tone changes (gamma, brightness,
    contrast); grey levels keep it steady where noise breaks the ties of a flat
    background, which scrambles ranks (small pictures on black, scans). Fine
    detail (a difference of Gaussians, DETAIL_SIGMA) leaves out the broad light
    and dark layout that look-alikes share: two shirts of one catalogue agree on
    their shape far better than on their folds and print. A flat thumbnail is
    left at zero so it matches nothing by structure. The first pass uses the first
    two at 16 px (``coarse_thumbs``).
    """
    import cv2

    grey = thumb.astype(np.float64)
    if grey.std() < FLAT_STD:
        return np.zeros((3, *grey.shape), dtype=np.float32), True
    ranks = _level_ranks(thumb) if thumb.dtype == np.uint8 else mean_ranks(grey.ravel()).reshape(grey.shape)
    fine, broad = (cv2.GaussianBlur(grey, (0, 0), s, borderType=cv2.BORDER_REFLECT) for s in DETAIL_SIGMA)
    out = np.stack([ranks - ranks.mean(), grey - grey.mean(), fine - broad])
    out[2] -= out[2].mean()
    norms = np.linalg.norm(out.reshape(3, -1), axis=1)
    out /= np.where(norms > 1e-9, norms, 1.0)[:, None, None]
    return out.astype(np.float32), False


def mean_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties sharing their mean rank, so a flat region carries no order of its own."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse].astype(np.float64)


def _level_ranks(levels: np.ndarray) -> np.ndarray:
    """``mean_ranks`` of 8-bit levels by counting them, not sorting (the same values)."""
    return _rank_table(np.bincount(levels.ravel(), minlength=256))[levels].astype(np.float64)


def _rank_table(counts: np.ndarray) -> np.ndarray:
    """Each 8-bit level's mean rank among the pixels, from the level counts (..., 256): ties share one."""
    return np.cumsum(counts, axis=-1) - counts + (counts - 1) / 2.0


def dihedral_move(thumb: np.ndarray, quarter_turns: int, mirrored: bool) -> np.ndarray:
    """A flip and quarter turns of the last two axes."""
    moved = thumb[..., ::-1] if mirrored else thumb
    return np.rot90(moved, quarter_turns, axes=(-2, -1))


COARSE_BATCH = 256  # thumbnails brought to their coarse form at once
_POOL = np.kron(np.eye(COARSE_SIDE, dtype=np.float32), np.ones((1, THUMB_SIDE // COARSE_SIDE), dtype=np.float32))


def coarse_thumbs(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails (B, S, S) of 8-bit grey levels as their first-pass form: ranks and grey levels at COARSE_SIDE.

    What ``normalised_thumb`` gives brought down to COARSE_SIDE and normalised
    again (equal to float32 rounding), computed from whole numbers: twice each
    level's mean rank and the levels are summed over each block exactly in float32,
    and only the 16 px result is normalised, in a batch: about 60 us an item against
    350 us for normalising each full thumbnail, which was a fifth of `analyze` at 100k
    items. Returns (B, 2, COARSE_SIDE, COARSE_SIDE) float32 and which are flat.
    """
    if len(thumbs) > COARSE_BATCH:  # bounded temporaries (8 bytes an index per pixel)
        parts = [_coarse_thumbs(thumbs[s : s + COARSE_BATCH]) for s in range(0, len(thumbs), COARSE_BATCH)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return _coarse_thumbs(thumbs)


def _coarse_thumbs(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count, side = thumbs.shape[0], thumbs.shape[1] * thumbs.shape[2]
    index = thumbs.astype(np.intp) + (np.arange(count, dtype=np.intp) * 256)[:, None, None]
    counts = np.bincount(index.ravel(), minlength=256 * count).reshape(count, 256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    total, squares = counts @ levels, counts @ (levels * levels)
    flat = side * squares - total * total < (FLAT_STD * side) ** 2  # the grey levels' std, in whole numbers
    twice_ranks = (2.0 * _rank_table(counts)).astype(np.float32).ravel()  # whole numbers, exact in float32
    layers = (np.take(twice_ranks, index), thumbs.astype(np.float32))
    small = np.stack([_POOL @ layer @ _POOL.T for layer in layers], axis=1).reshape(count, 2, -1)
    small = small.astype(np.float64)
    small -= small.mean(axis=2, keepdims=True)
    norm = np.linalg.norm(small, axis=2, keepdims=True)
    small = np.where(norm > 1e-9, small / np.maximum(norm, 1e-300), 0.0)
    small[flat] = 0.0
    return small.reshape(count, 2, COARSE_SIDE, COARSE_SIDE).astype(np.float32), flat


def pixel_agreement_batch(
    na: Sequence[np.ndarray],
    nb: Sequence[np.ndarray],
    aspect_a: np.ndarray,
    aspect_b: np.ndarray,
    coarse_a: np.ndarray,
    coarse_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grey-level, rank and fine-detail NCC of pairs of normalised thumbnails ((3, S, S) each) under their best move.

    Compared first at COARSE_SIDE px: a pair that does not reach COARSE_FLOOR there
    keeps those coarse values (far below anything the pixel channel counts, and a
    sixteenth of the work); the others are compared at full size, and only their
    full thumbnails are gathered (most candidate pairs never are).
    """
    grey, ranks, move, _ = _agreement(coarse_a, coarse_b, aspect_a, aspect_b)
    detail = np.full(len(grey), -1.0)  # not compared where the coarse pass already rules a copy out
    close = np.nonzero(np.maximum(grey, ranks) >= COARSE_FLOOR)[0]
    if len(close):
        full_a = np.stack([na[k] for k in close.tolist()])
        full_b = np.stack([nb[k] for k in close.tolist()])
        fine = _agreement(full_a, full_b, aspect_a[close], aspect_b[close])
        grey[close], ranks[close], move[close], detail[close] = fine
    return grey, ranks, move, detail


def _agreement(
    na: np.ndarray, nb: np.ndarray, aspect_a: np.ndarray, aspect_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For pairs of normalised thumbnails (B, C, S, S): grey-level and rank NCC under each pair's best move.

    The best move is the one with the highest of the two correlations among the
    moves that keep the aspect ratio (first one on ties); (-1, -1, move 0) where none does.
    With a third channel (fine detail), its NCC under that move too (else -1).
    """
    count, channels = na.shape[:2]
    best = np.full(count, -np.inf)
    grey, ranks, detail = np.full(count, -1.0), np.full(count, -1.0), np.full(count, -1.0)
    move = np.zeros(count, dtype=np.int64)
    flat_a = np.ascontiguousarray(na).reshape(count, channels, -1)
    for m, (_name, turns, mirrored) in enumerate(DIHEDRAL):
        b_aspect = aspect_b if turns % 2 == 0 else 1.0 / aspect_b
        allowed = np.abs(np.log(aspect_a / b_aspect)) <= ASPECT_TOLERANCE
        if not allowed.any():
            continue
        # One contiguous copy per move: einsum over rot90's strided views is several times slower.
        moved = np.ascontiguousarray(dihedral_move(nb, turns, mirrored)).reshape(count, channels, -1)
        ncc = np.einsum("bcx,bcx->bc", flat_a, moved).astype(np.float64)
        r, g = ncc[:, 0], ncc[:, 1]
        key = np.where(allowed, np.maximum(g, r), -np.inf)
        better = key > best + 1e-9
        best = np.where(better, key, best)
        grey, ranks, move = np.where(better, g, grey), np.where(better, r, ranks), np.where(better, m, move)
        if channels > 2:
            detail = np.where(better, ncc[:, 2], detail)
    return grey, ranks, move, detail


def _frame_scale(e: Evidence) -> np.ndarray:
    """Normalised [0, 1] coordinates to the common 512 px frame (long side 512)."""
    s = FRAME / max(e.width, e.height)
    return np.array([e.width * s, e.height * s], dtype=np.float64)


def geometric_agreement(
    a: Evidence, b: Evidence, keypoints: int = FIT_KEYPOINTS
) -> tuple[int, float, float, float, float]:
    """RANSAC affine fit of b's keypoints onto a's; (inliers, inlier share, warped NCC, overlap, core NCC)."""
    import cv2

    # The strongest ``keypoints`` of each (stored strongest first): matching is quadratic in them.
    a_points, a_desc = a.points[:keypoints], a.descriptors[:keypoints]
    b_points, b_desc = b.points[:keypoints], b.descriptors[:keypoints]
    if len(a_desc) < MIN_MATCHES or len(b_desc) < MIN_MATCHES:
        return NO_FIT
    b_index, a_index = ratio_matches(b_desc, a_desc)
    if len(b_index) < MIN_MATCHES:
        return NO_FIT
    b_good, a_good = b_points[b_index], a_points[a_index]
    src, dst = b_good * _frame_scale(b), a_good * _frame_scale(a)
    matrix, mask = cv2.estimateAffine2D(
        src.astype(np.float32),
        dst.astype(np.float32),
        method=cv2.RANSAC,
        ransacReprojThreshold=RANSAC_PIXELS,
        maxIters=2000,
        confidence=0.995,
        refineIters=10,
    )
    if matrix is None or mask is None:
        return NO_FIT
    inliers = int(mask.sum())
    singular = np.linalg.svd(matrix[:, :2], compute_uv=False)
    if inliers < MIN_MATCHES or singular[1] <= 1e-6 or singular[0] / singular[1] > MAX_ANISOTROPY:
        return NO_FIT
    frac = inliers / min(len(a_desc), len(b_desc))
    kept = mask.ravel().astype(bool)
    warped, overlap, core = _warped_ncc(a, b, matrix, a_good[kept], b_good[kept])
    return inliers, float(frac), warped, overlap, core


def ratio_matches(query: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio-test matches of binary descriptors: (query indices ascending, their nearest train index).

    The two nearest by Hamming distance come as arrays: from faiss's k-NN where it is
    installed (a fifth of OpenCV's CPU, the fits' largest cost at scale), else from
    OpenCV's batchDistance, what BFMatcher.knnMatch calls. Either way the same two
    nearest (a tie at the first rank never passes the ratio test), and no Python
    object per match as knnMatch makes.
    """
    if (faiss := faiss_or_none()) is not None:
        distance, nearest = faiss.knn_hamming(query, train, 2)
    else:
        import cv2

        distance, nearest = cv2.batchDistance(query, train, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=2)
    good = np.flatnonzero(distance[:, 0] < RATIO_TEST * distance[:, 1])
    return good, nearest[good, 0]


@functools.cache
def faiss_or_none() -> Any:
    """faiss, where installed: its Hamming k-NN finds the same two nearest at a fifth of OpenCV's CPU."""
    try:
        import faiss
    except ImportError:  # OpenCV's matcher then: the same matches
        return None
    return faiss


def _warped_ncc(
    a: Evidence, b: Evidence, matrix: np.ndarray, a_inliers: np.ndarray, b_inliers: np.ndarray
) -> tuple[float, float, float]:
    """Lay one thumbnail onto the other with the fitted map and correlate where they overlap.

    The picture that holds the shared content larger is the one moved (shrinking
    loses no detail, enlarging a 20-pixel patch does). Also returns the share of
    the smaller side's content the map covers, and the correlation within the box
    of the inliers (``*_inliers``: their [0, 1] positions in each picture): there a
    copy agrees even when its canvas or window does not, while two screenshots of
    different pictures, fitted on their common title and status bars, disagree on
    what lies between those bars (bench/dupbench.py).
    """
    import cv2

    side = float(THUMB_SIDE)
    to_thumb_a = np.diag([side / _frame_scale(a)[0], side / _frame_scale(a)[1], 1.0])
    from_thumb_b = np.diag([_frame_scale(b)[0] / side, _frame_scale(b)[1] / side, 1.0])
    b_to_a = to_thumb_a @ np.vstack([matrix, [0.0, 0.0, 1.0]]) @ from_thumb_b
    fixed, source, anchors = a.thumb, b.thumb, a_inliers
    shrink = abs(float(np.linalg.det(b_to_a[:2, :2])))
    if shrink > 1.0:  # b's content is the smaller: move a onto b
        b_to_a, fixed, source, shrink, anchors = np.linalg.inv(b_to_a), b.thumb, a.thumb, 1.0 / shrink, b_inliers
    moving: np.ndarray = source.astype(np.float32)
    if shrink < 0.8:  # blur before shrinking, or the warp aliases fine texture
        moving = np.asarray(cv2.GaussianBlur(moving, (0, 0), 0.5 / math.sqrt(shrink)), dtype=np.float32)
    size = (THUMB_SIDE, THUMB_SIDE)
    moved = cv2.warpAffine(moving, b_to_a[:2], size, flags=cv2.INTER_LINEAR, borderValue=np.nan)
    valid = np.isfinite(moved)
    covered = float(valid.mean())
    # The share of the moved picture that lands inside the fixed one, on an 8x8 grid of its cells.
    grid = (np.stack(np.meshgrid(np.arange(8) + 0.5, np.arange(8) + 0.5), -1).reshape(-1, 2) * side / 8).T
    mapped = b_to_a[:2, :2] @ grid + b_to_a[:2, 2:3]
    inside = float(np.mean((mapped >= 0).all(0) & (mapped < side).all(0)))
    if valid.sum() < 64:
        return -1.0, max(covered, inside), -1.0
    warped = rank_correlation(fixed[valid], moved[valid])
    low = np.floor(anchors.min(axis=0) * side).astype(int) - CORE_MARGIN
    high = np.ceil(anchors.max(axis=0) * side).astype(int) + CORE_MARGIN
    box = np.zeros_like(valid)
    box[max(0, low[1]) : high[1], max(0, low[0]) : high[0]] = True
    core = valid & box
    if core.sum() < 64:  # the inliers sit in too small a patch to correlate: the whole overlap speaks
        return warped, max(covered, inside), warped
    return warped, max(covered, inside), rank_correlation(fixed[core], moved[core])


def rank_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's correlation: blind to any monotone tone change between the two pictures."""
    rx, ry = mean_ranks(x), mean_ranks(np.round(y, 3))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = float(np.linalg.norm(rx) * np.linalg.norm(ry))
    return float(rx @ ry / denom) if denom > 1e-12 else -1.0


def inset_agreement(a: Evidence, b: Evidence, turned: bool = False, zoomed: bool = False) -> float:
    """Find one picture as a region of the other's thumbnail; -1 where it cannot be.

    Two footprints are tried, the two ways copies of one picture hold each other
    (for pictures smaller than the thumbnail, also on their own pixel grid, ``_native_inset``,
    and with ``zoomed``, as a crop enlarged back, ``_zoomed_inset``):

    * the same pixels: a picture pasted into a canvas or shown in a window keeps
      its pixels, so its footprint in the larger picture's thumbnail is its size
      over the larger's (``_pasted_inset``);
    * the same height (or width): a picture shipped at another aspect ratio (a
      wallpaper at 4:3 and at 16:9) is the other cut to its shape and resized, so
      it spans the other's full height and the share of its width that their
      aspect ratios give (``_cut_inset``).

    One template match at that one scale finds it (with ``turned``, also the larger
    thumbnail turned back by a few degrees, as for a picture smaller than the thumbnail). The agreement is then measured
    as the pixel channel measures it (the weaker of grey levels or ranks and fine
    detail), on the footprint and the template both brought to the thumbnail's
    size, so neither keeps detail the other lacks.
    """
    if (a.width, a.height) == (b.width, b.height):  # neither footprint is smaller than the whole: only a zoom
        return _zoomed_inset(a, b) if zoomed else -1.0
    found = max(_pasted_inset(a, b, turned), _native_inset(a, b))
    if found < INSET_TURNED_BELOW:
        found = max(found, _cut_inset(a, b))
    if zoomed and found < INSET_TURNED_BELOW:
        found = max(found, _zoomed_inset(a, b))
    return found


def _zoomable(a: Evidence, b: Evidence) -> bool:
    """Whether two pictures can be a crop of one another enlarged back (``_zoomed_inset``): both small, one shape."""
    small = max(a.width, a.height, b.width, b.height) < TINY_SIDE
    return small and abs(math.log(a.aspect / b.aspect)) <= ASPECT_TOLERANCE


def _zoomed_inset(a: Evidence, b: Evidence) -> float:
    """One small picture as a crop of the other, enlarged back to the other's size; -1 where it is not.

    Keypoints are too few on a 28 px item to fit that map, and its footprint in the
    other's thumbnail depends on how much was cut, so each of ZOOM_SCALES is tried
    both ways at ZOOM_COARSE_SIDE px, and the best refined at full size. Only for two
    pictures smaller than the thumbnail (their thumbnails hold every pixel they have)
    of one shape; a larger crop keeps corners enough for the keypoint fit.
    """
    import cv2

    if not _zoomable(a, b):
        return -1.0
    side, small = float(THUMB_SIDE), float(ZOOM_COARSE_SIDE)
    best: tuple[float, float, Evidence, Evidence] | None = None
    for cut, whole in ((a, b), (b, a)):
        larger = cv2.resize(whole.thumb.astype(np.float32), (ZOOM_COARSE_SIDE,) * 2, interpolation=cv2.INTER_AREA)
        for scale in ZOOM_SCALES:
            if (template := _template(cut, (round(small * scale),) * 2)) is None:
                continue
            peak = _match(larger, template)[0]
            if best is None or peak > best[0]:
                best = (peak, scale, cut, whole)
    if best is None or best[0] < ZOOM_PEAK:
        return -1.0
    _, scale, cut, whole = best
    larger = whole.thumb.astype(np.float32)
    steps = (scale - ZOOM_STEP, scale, scale + ZOOM_STEP)
    sizes = [(round(side * sx), round(side * sy)) for sx in steps for sy in steps]
    refined = [t for t in (_template(cut, size) for size in sizes) if t is not None]
    if not refined:
        return -1.0
    template = max(refined, key=lambda t: _match(larger, t)[0])
    return _inset_at(larger, template)


def _smaller_first(a: Evidence, b: Evidence) -> tuple[Evidence, Evidence] | None:
    """The pair ordered smaller picture first, or None where it does not fit inside the larger one."""
    if a.width * a.height > b.width * b.height:
        a, b = b, a
    return None if a.width > b.width or a.height > b.height else (a, b)


def _pasted_inset(a: Evidence, b: Evidence, turned: bool = False) -> float:
    """The smaller picture at its own pixel scale inside the larger one (and turned: a small picture, or ``turned``)."""
    if (ordered := _smaller_first(a, b)) is None:
        return -1.0
    a, b = ordered
    side = float(THUMB_SIDE)
    width, height = a.width / b.width * side, a.height / b.height * side
    if max(width, height) > INSET_MAX_SHARE * side or min(width, height) < INSET_MIN_SIDE:
        return -1.0
    template = _template(a, (round(width), round(height)))
    if template is None:
        return -1.0
    larger = b.thumb.astype(np.float32)
    found = _inset_at(larger, template)
    if (turned or min(a.width, a.height) < TINY_SIDE) and found < INSET_TURNED_BELOW:
        # A small picture turned by a few degrees (and its canvas enlarged to hold it): keypoints are
        # too few to fit that map, so the larger thumbnail is turned back, in the pictures' own
        # geometry (thumbnails squash the aspect ratio), and searched again.
        # Only the turn whose match is strongest is measured further (a sixteenth of the work).
        turns = [_turned(larger, b.width, b.height, angle) for angle in INSET_ANGLES]
        best = max(range(len(turns)), key=lambda n: (_match(turns[n], template)[0], -n))
        found = max(found, _inset_at(turns[best], template))
    return found


def _native_inset(a: Evidence, b: Evidence) -> float:
    """A small picture pasted into a picture of up to NATIVE_MAX_SIDE px, matched on their own pixel grid.

    Its footprint in the larger thumbnail is a fraction of a pixel off the thumbnail's grid
    (a 25 px face pasted into a 49 px canvas spans 32.65 thumbnail pixels), and at that size
    the template match is that phase-sensitive; brought back to their own sizes, both
    pictures share one grid and the paste offset is whole pixels.
    """
    import cv2

    if (ordered := _smaller_first(a, b)) is None:
        return -1.0
    a, b = ordered
    if max(a.width, a.height) >= TINY_SIDE or max(b.width, b.height) > NATIVE_MAX_SIDE:
        return -1.0
    if max(a.width / b.width, a.height / b.height) > INSET_MAX_SHARE:
        return -1.0
    if (small := _template(a, (a.width, a.height))) is None:
        return -1.0
    larger = np.asarray(cv2.resize(b.thumb.astype(np.float32), (b.width, b.height), interpolation=cv2.INTER_AREA))
    return _inset_at(larger, small)


def _template(e: Evidence, size: tuple[int, int]) -> np.ndarray | None:
    """A picture's thumbnail brought to its footprint's ``size`` (None: too flat to be found anywhere)."""
    import cv2

    template = np.asarray(cv2.resize(e.thumb.astype(np.float32), size, interpolation=cv2.INTER_AREA))
    spread = float(cv2.meanStdDev(template)[1][0, 0])  # NumPy's std costs 7 times as much on such a patch
    return None if spread < FLAT_STD else template


def _match(larger: np.ndarray, template: np.ndarray) -> tuple[float, tuple[int, int]]:
    """The strongest normalised correlation of the template inside ``larger``, and where (x, y)."""
    import cv2

    _, peak, _, where = cv2.minMaxLoc(cv2.matchTemplate(larger, template, cv2.TM_CCOEFF_NORMED))
    return float(peak), (int(where[0]), int(where[1]))


def _cut_inset(a: Evidence, b: Evidence) -> float:
    """The picture of the narrower (or taller) aspect ratio as the other cut to its shape and resized."""
    if abs(math.log(a.aspect / b.aspect)) <= ASPECT_TOLERANCE:
        return -1.0  # one shape: the pixel channel's case
    if a.aspect > b.aspect:
        a, b = b, a  # a is the narrower: it spans b's full height
    side = float(THUMB_SIDE)
    size = (round(side * a.aspect / b.aspect), THUMB_SIDE)
    if size[0] < INSET_MIN_SIDE:
        return -1.0
    template = _template(a, size)
    return -1.0 if template is None else _inset_at(b.thumb.astype(np.float32), template)


def _inset_at(larger: np.ndarray, template: np.ndarray) -> float:
    """The template's agreement where it best matches inside ``larger`` (-1: no match as strong as INSET_PEAK)."""
    peak, (x, y) = _match(larger, template)
    if peak < INSET_PEAK:
        return -1.0
    height, width = template.shape
    region = larger[y : y + height, x : x + width]
    # Both at the footprint's resolution, brought up to the thumbnail's size the same way.
    (na, flat_a), (nb, flat_b) = (normalised_thumb(_to_thumb(t)) for t in (template, region))
    if flat_a or flat_b:
        return -1.0
    ranks, grey, detail = (float(v) for v in np.einsum("cxy,cxy->c", na, nb))
    return min(max(grey, ranks), detail)


def _turned(thumb: np.ndarray, width: int, height: int, angle: float) -> np.ndarray:
    """A thumbnail of a width x height picture, turned by ``angle`` degrees about its centre as the picture would be."""
    import cv2

    side = float(THUMB_SIDE)
    to_picture = np.diag([width / side, height / side, 1.0])
    centre = ((side - 1) / 2 * width / side, (side - 1) / 2 * height / side)
    turn = np.vstack([cv2.getRotationMatrix2D(centre, angle, 1.0), [0.0, 0.0, 1.0]])
    matrix = (np.linalg.inv(to_picture) @ turn @ to_picture)[:2]
    return np.asarray(
        cv2.warpAffine(thumb, matrix, (THUMB_SIDE, THUMB_SIDE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    )


def _to_thumb(pixels: np.ndarray) -> np.ndarray:
    """A patch resampled to the thumbnail's size, as grey levels."""
    import cv2

    moved = cv2.resize(pixels, (THUMB_SIDE, THUMB_SIDE), interpolation=cv2.INTER_LINEAR)
    return np.clip(np.round(moved), 0, 255).astype(np.uint8)


def needs_geometry(pixel: float, ranks: float, cosine: float, geometry: bool = True) -> bool:
    """Whether the keypoint fit can still matter.

    It costs twenty times the pixel comparison, so it is skipped where its answer
    cannot change the verdict: the pixels already agree (PIXEL_DECISIVE), the vectors
    are too far apart for any edit it finds (GEOMETRY_COSINE), or the caller says so
    (analyze fits only each item's nearest few, duplicates.FitBudget).
    """
    return geometry and max(pixel, ranks) < PIXEL_DECISIVE and cosine >= GEOMETRY_COSINE


def finish(
    a: Evidence,
    b: Evidence,
    cosine: float,
    flat: bool,
    pixel: float,
    ranks: float,
    how: str,
    geometry: bool = True,
    detail: float = -1.0,
    keypoints: int = FIT_KEYPOINTS,
    turn_unfitted: bool = True,
    zoom_small: bool = True,
) -> PairEvidence:
    """The pair's measurements, given its pixel agreement: the keypoint fit where it can matter.

    Where the fit was tried and found nothing, and ``turn_unfitted``, the inset is also looked
    for turned by a few degrees: a smooth picture (a painted wallpaper) turned by 10-15 degrees
    has too few corners to fit that map, the case of a picture smaller than the thumbnail.
    With ``zoom_small``, two pictures smaller than the thumbnail are also tried as a crop of
    one another enlarged back to size (``_zoomed_inset``).
    """
    side = min(a.width, a.height, b.width, b.height)
    tried = needs_geometry(pixel, ranks, cosine, geometry)
    inliers, frac, warped, overlap, core = geometric_agreement(a, b, keypoints) if tried else NO_FIT
    turned = turn_unfitted and tried and inliers == 0
    # Agreeing pixels need no inset.
    inset = inset_agreement(a, b, turned, zoom_small) if max(pixel, ranks) < PIXEL_DECISIVE else -1.0
    return PairEvidence(cosine, pixel, how, inliers, frac, warped, overlap, flat, ranks, side, detail, inset, core)


@dataclass(frozen=True)
class Logistic:
    weights: tuple[float, ...]
    bias: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (1.0 + np.exp(-(x @ np.asarray(self.weights) + self.bias))))


@dataclass(frozen=True)
class Model:
    """P(same picture): the largest of the logistic channels, pixels, geometry and (where found) inset.

    Either kind of evidence alone can prove a copy (a gamma edit has perfect
    pixels and needs no keypoints; a crop has keypoints and no aligned pixels),
    so the channels are fitted apart and the strongest one speaks.
    """

    pixel: Logistic
    geometry: Logistic
    inset: Logistic | None = None

    def probability(self, pairs: Sequence[PairEvidence]) -> np.ndarray:
        if not pairs:
            return np.zeros(0)
        p = self.pixel(np.stack([q.pixel_features() for q in pairs]))
        fitted = [n for n, q in enumerate(pairs) if q.fitted]
        if fitted:
            g = self.geometry(np.stack([pairs[n].geometry_features() for n in fitted]))
            p[fitted] = np.maximum(p[fitted], g)
        found = [n for n, q in enumerate(pairs) if q.inset > -1.0]
        if found and self.inset is not None:
            p[found] = np.maximum(p[found], self.inset(np.stack([pairs[n].inset_features() for n in found])))
        return p
