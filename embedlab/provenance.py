"""Facts about this process recorded with every run: the versions that can change
a vector, and its peak memory.

Versions are read from package metadata, so recording them imports nothing heavy.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path

from . import __version__

_PACKAGES = ("torch", "torchvision", "timm", "openvino", "numpy", "pillow", "pydicom", "sqlite-vec", "apsw")


def versions() -> dict[str, str]:
    found = {"embedlab": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB (None where the platform cannot say).

    Linux: VmHWM, not ru_maxrss, which the kernel carries over fork and exec, so a
    process started by one holding gigabytes would report its parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
