"""A backbone's input recipe: resize the short side, centre-crop, normalise.

Plain NumPy and Pillow, so the registry can describe preprocessing (and the
decoder can size its JPEG draft scale from it) without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, centre-crop, then normalise per channel."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: Image.Resampling

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The centre square, in source pixels, that the network sees."""
        side = min(width, height) * self.crop / self.resize
        left, top = (width - side) / 2.0, (height - side) / 2.0
        return (left, top, left + side, top + side)

    def __call__(self, rgb: Image.Image) -> np.ndarray:
        # Resampling only the crop box equals resize-then-crop without ever
        # materialising a huge intermediate for extreme aspect ratios.
        img = rgb.resize((self.crop, self.crop), self.resample, box=self.crop_box(*rgb.size))
        # Channels first, then the same three float32 steps in place (the same bits, fewer copies).
        out = np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1))
        out /= np.float32(255.0)
        out -= np.asarray(self.mean, np.float32)[:, None, None]
        out /= np.asarray(self.std, np.float32)[:, None, None]
        return out
