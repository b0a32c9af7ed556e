"""Run settings passed in by the caller, and the decoding environment they need, applied for a scope.

Decoders are configured process-wide (Pillow's bomb limit and warnings, pydicom's
logger), so importing embedlab must not touch them: a host application that
imports the library keeps its own warnings and logging. The CLI and the Python
API entry points apply `Settings` for exactly the duration of one call
(`applied`), and restore what was there before. Decode threads started inside
the scope see it (warnings filters and these module settings are process-wide).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageFile

from . import images

DEFAULT_MAX_PIXELS = images.DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Settings:
    """What the caller decides about decoding and logs.

    ``max_pixels``: larger decoded images are per-file errors, not a memory blow-up.
    ``log_paths``: name files by their path in logs instead of a short hash (paths
    may carry patient names, so the hash is the default).
    ``decode_memory_mb``: what all decode threads may hold at once (images.set_decode_budget).
    """

    max_pixels: int = DEFAULT_MAX_PIXELS
    log_paths: bool = False
    decode_memory_mb: int = images.DEFAULT_DECODE_BUDGET_MB


def _filter_warnings() -> None:
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    # Decoder chatter ("Corrupt EXIF data", ...) is noise on stderr, never a reason to stop.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
    # pydicom warns and logs with element values (a patient's name) in the text.
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def _apply(settings: Settings) -> None:
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # refuse truncated files instead of padding them with grey
    images.set_max_pixels(settings.max_pixels)  # also moves Pillow's bomb check to 64x the limit
    images.set_log_paths(settings.log_paths)
    images.set_decode_budget(settings.decode_memory_mb)


@contextmanager
def applied(settings: Settings | None = None) -> Iterator[Settings]:
    """Apply ``settings`` (default: `Settings()`) and the decoding environment until the block ends."""
    settings = settings or Settings()
    saved_pixels, saved_paths = images.decode_settings()
    saved_budget = images.decode_budget_mb()
    saved_bomb, saved_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    pydicom_log = logging.getLogger("pydicom")
    saved_propagate, quiet = pydicom_log.propagate, logging.NullHandler()
    with warnings.catch_warnings():
        _filter_warnings()
        _apply(settings)
        pydicom_log.addHandler(quiet)
        pydicom_log.propagate = False
        try:
            yield settings
        finally:
            pydicom_log.removeHandler(quiet)
            pydicom_log.propagate = saved_propagate
            images.set_max_pixels(saved_pixels)
            images.set_log_paths(saved_paths)
            images.set_decode_budget(saved_budget)
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved_bomb, saved_truncated


def install(settings: Settings) -> None:
    """Apply ``settings`` for the rest of the process: only for processes that exist to run embedlab
    (a cluster worker), which have no host to restore anything for."""
    _filter_warnings()
    _apply(settings)
    pydicom_log = logging.getLogger("pydicom")
    pydicom_log.addHandler(logging.NullHandler())
    pydicom_log.propagate = False
