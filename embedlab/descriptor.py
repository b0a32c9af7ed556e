"""How a stored vector is composed from the backbone's features and the pixels.

Pooled CNN features alone are a poor near-duplicate signal: a half-size JPEG,
a blur or a grayscale copy of an image can score 0.5-0.9 against its original,
while two different crops of one texture or two stereo views score above 0.9.
The ``hybrid`` recipe concatenates three unit-length parts, each weighted:

* ``cnn``: the backbone's pooled features (semantics; robust to crop and rotation),
* ``layout``: an 8x8 grey thumbnail of the same centre crop, zero-mean (robust to
  resize, re-encoding, blur, brightness and colour changes; it tells texture
  crops and different slices apart),
* ``tone``: mean grey level as an angle (tells a blank white from a blank black),

plus one constant coordinate. The cosine of two such vectors is therefore
``(w_cnn*cos_cnn + w_layout*cos_layout + w_tone*cos_tone + offset) / (1 + offset)``
(for non-flat images): still a plain cosine that sqlite-vec can index, with
fixed, shipped weights, so old vectors never change meaning. The ``offset``
places the calibrated near-duplicate boundary at 0.92 (README: "Scores").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

LAYOUT_SIDE = 8
LAYOUT_DIM = LAYOUT_SIDE * LAYOUT_SIDE + 2  # thumbnail + tone angle (cos, sin)


@dataclass(frozen=True)
class Recipe:
    name: str
    cnn: float
    layout: float
    tone: float
    offset: float  # squared norm of the constant coordinate, relative to the rest

    @property
    def extra_dims(self) -> int:
        return 0 if self.name == "plain" else LAYOUT_DIM + 1


# Weights and offset chosen on a calibration set generated with a different seed
# than the benchmark (bench/quality.py --calibrate); see README "Scores".
RECIPES: dict[str, Recipe] = {
    "hybrid": Recipe("hybrid", cnn=0.5, layout=0.45, tone=0.05, offset=1.0),
    "plain": Recipe("plain", cnn=1.0, layout=0.0, tone=0.0, offset=0.0),
}
DEFAULT_RECIPE = "hybrid"


def layout_features(
    rgb: Image.Image, box: tuple[float, float, float, float], grey_image: Image.Image | None = None
) -> np.ndarray:
    """Zero-mean unit 8x8 grey thumbnail of ``box`` and the tone angle, float64.

    ``grey_image``: ``rgb.convert("L")`` where the caller already made it.
    """
    source = rgb.convert("L") if grey_image is None else grey_image
    thumb = source.resize((LAYOUT_SIDE, LAYOUT_SIDE), Image.Resampling.BOX, box=box)
    grey = np.asarray(thumb, dtype=np.float64).ravel() / 255.0
    centred = grey - grey.mean()
    norm = float(np.linalg.norm(centred))
    # A flat image has no layout: a zero part, so it neither helps nor hurts.
    layout = centred / norm if norm > 1e-3 else np.zeros_like(centred)
    angle = float(grey.mean()) * np.pi
    return np.concatenate([layout, [np.cos(angle), np.sin(angle)]])


def compose(cnn: np.ndarray, layout: np.ndarray, recipe: Recipe) -> np.ndarray:
    """Final unit float32 vectors from unit CNN rows and ``layout_features`` rows."""
    if recipe.name == "plain":
        return cnn.astype(np.float32)
    cnn64 = cnn.astype(np.float64)
    thumb, tone = layout[:, :-2], layout[:, -2:]
    const = np.full((len(cnn64), 1), np.sqrt(recipe.offset))
    parts = [np.sqrt(recipe.cnn) * cnn64, np.sqrt(recipe.layout) * thumb, np.sqrt(recipe.tone) * tone, const]
    out = np.hstack(parts)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)
