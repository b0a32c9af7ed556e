"""Progress for long work: a bar for a person at a terminal, plain log lines otherwise.

Bars in a log file or a pipe are noise (carriage returns, hundreds of updates),
so without a terminal the same progress becomes an occasional one-line log
message on the embedlab logger, which --quiet silences like any other.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from tqdm import tqdm

log = logging.getLogger("embedlab")

LOG_EVERY_S = 10.0  # seconds between plain progress lines when stderr is not a terminal


class Progress:
    """``with Progress(total, "embedding") as p: p.update(n)``."""

    def __init__(self, total: int, desc: str, unit: str = "img"):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.enabled = log.isEnabledFor(logging.INFO) and total > 0
        self.bar: tqdm | None = None
        if self.enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr)
        self._last_line = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self._last_line >= LOG_EVERY_S and self.done < self.total:
            self._last_line = time.monotonic()
            log.info("%s: %d/%d %s (%d%%)", self.desc, self.done, self.total, self.unit, 100 * self.done // self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
