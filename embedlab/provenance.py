"""Versions that can change a vector, recorded with every run.

Read from package metadata, so recording them imports nothing heavy.
"""

from __future__ import annotations

import platform
from importlib import metadata

from . import __version__

_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pillow", "pydicom", "sqlite-vec", "apsw")


def versions() -> dict[str, str]:
    found = {"embedlab": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found
