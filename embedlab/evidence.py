"""Same-picture evidence, computed once at embed time and stored beside the vector.

A pooled CNN vector says what an image shows, not whether two files hold the
same picture: two different shirts, two slices of one scan or two faces score
as high as a re-encoded copy. Deciding "same picture" needs the pixels, and
`analyze` must never re-read image files (an index outlives its folder, and a
million files are hours of decoding). So embed keeps, per content:

* a 64x64 grey thumbnail of the whole picture (aspect squashed; the real size is
  stored with it): enough for an aligned pixel comparison under every
  flip and quarter turn, which settles re-encodes, resizes, colour and tone
  edits, mirrors and rotations by 90/180 degrees;
* up to ORB_FEATURES ORB keypoints (position and 32-byte binary descriptor)
  found on a contrast-equalised grey copy whose long side is 256-512 px: the
  input of a geometric verification (RANSAC affine fit) that finds crops, pads,
  small rotations, stretches and a picture pasted inside a larger canvas.

About 4 KB + 36 bytes per keypoint (at most 15.6 KB) per distinct content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

# Bumped whenever what is computed here changes; rows of another version are recomputed.
EVIDENCE_VERSION = 1
THUMB_SIDE = 64
ORB_FEATURES = 320
# A search query's evidence is computed fresh and verified against at most a few dozen stored
# contents, so it can afford more corners: in a screenshot or a canvas the frame's text and
# buttons are the strongest corners, and 320 of them can leave none on the picture it shows
# (bench/dupbench.py, copy queries). Stored evidence keeps ORB_FEATURES.
QUERY_FEATURES = 2000
ORB_MAX_SIDE = 512
ORB_MIN_SIDE = 256  # smaller pictures are enlarged to this long side first (corners need room)
ORB_FAST_THRESHOLD = 12  # OpenCV's default of 20 finds few corners on low-contrast scans


@dataclass(frozen=True)
class Evidence:
    """What the verifier knows about one content."""

    width: int
    height: int
    thumb: np.ndarray  # (THUMB_SIDE, THUMB_SIDE) uint8 grey
    points: np.ndarray  # (n, 2) float32, keypoint x / width and y / height, in [0, 1]
    descriptors: np.ndarray  # (n, 32) uint8 ORB descriptors

    @property
    def aspect(self) -> float:
        return self.width / max(1, self.height)

    def to_blobs(self) -> tuple[bytes, bytes, bytes]:
        """Thumbnail, points (float16 pairs) and descriptors as little-endian blobs."""
        return (
            np.ascontiguousarray(self.thumb, dtype=np.uint8).tobytes(),
            np.ascontiguousarray(self.points, dtype="<f2").tobytes(),
            np.ascontiguousarray(self.descriptors, dtype=np.uint8).tobytes(),
        )

    @classmethod
    def from_blobs(cls, width: int, height: int, thumb: bytes, points: bytes, descriptors: bytes) -> Evidence:
        pts = np.frombuffer(points, dtype="<f2").astype(np.float32).reshape(-1, 2)
        desc = np.frombuffer(descriptors, dtype=np.uint8).reshape(-1, 32)
        return cls(
            width=int(width),
            height=int(height),
            thumb=np.frombuffer(thumb, dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE),
            points=pts,
            descriptors=desc,
        )


def grey_thumbnail(grey: Image.Image) -> np.ndarray:
    """The whole picture squashed to THUMB_SIDE square (area average when shrinking)."""
    shrinking = grey.width >= THUMB_SIDE and grey.height >= THUMB_SIDE
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(grey.resize((THUMB_SIDE, THUMB_SIDE), method), dtype=np.uint8).copy()


def keypoints(grey: Image.Image, features: int = ORB_FEATURES) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``features`` ORB keypoints on a contrast-equalised copy: positions in [0, 1] and descriptors.

    Equalising the histogram first makes the corners (nearly) independent of any
    monotone tone change: gamma, brightness and contrast edits keep their keypoints.
    """
    import cv2  # OpenCV only where evidence is computed or verified

    long_side = max(grey.width, grey.height)
    target = min(ORB_MAX_SIDE, max(ORB_MIN_SIDE, long_side))
    scale = target / long_side
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    method = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    pixels = cv2.equalizeHist(np.asarray(grey.resize(size, method), dtype=np.uint8))
    orb = cv2.ORB.create(nfeatures=features, fastThreshold=ORB_FAST_THRESHOLD)
    found, desc = orb.detectAndCompute(pixels, None)
    if desc is None or not found:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    # Strongest first, ties by position: the order (and so the stored bytes) never depends on chance.
    where = np.asarray(cv2.KeyPoint.convert(found), dtype=np.float32).reshape(-1, 2)
    response = np.array([k.response for k in found], dtype=np.float32)
    order = np.lexsort((where[:, 1], where[:, 0], -response))[:features]
    pts = where[order].astype(np.float64) / np.array(size, dtype=np.float64)
    return np.clip(pts, 0.0, 1.0).astype(np.float32), np.ascontiguousarray(desc[order], dtype=np.uint8)


def compute(rgb: Image.Image, grey: Image.Image | None = None, features: int = ORB_FEATURES) -> Evidence:
    """Evidence for one decoded picture (RGB, as embedded); ``grey``: its ``convert("L")``, if made already."""
    grey = rgb.convert("L") if grey is None else grey
    points, descriptors = keypoints(grey, features)
    return Evidence(rgb.width, rgb.height, grey_thumbnail(grey), points, descriptors)
