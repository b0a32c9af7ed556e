"""MMR re-ranking and the plain-log progress lines, on small real vectors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from embedlab import progress
from embedlab.ranking import mmr_order
from embedlab.search import cosine_scores

from ..conftest import unit_rows


def test_mmr_trades_a_second_copy_for_a_new_picture() -> None:
    # In the plane of two orthogonal directions: the query leans towards picture A.
    query = unit_rows(np.array([[1.0, 0.5]]))[0]
    # candidates, best first: A twice (byte-identical copies), a near copy of A, then picture B
    cands = unit_rows(np.array([[1.0, 0.0], [1.0, 0.0], [1.0, -0.05], [0.5, 1.0]]))
    sims = cosine_scores(cands, query)
    assert list(np.argsort(-sims, kind="stable")) == [0, 1, 2, 3]
    pairwise = cosine_scores(cands, cands.T)
    assert mmr_order(sims, pairwise, 3, 1.0) == [0, 1, 2]  # lambda 1: plain relevance
    picked = mmr_order(sims, pairwise, 3, 0.5)
    assert picked[:2] == [0, 3]  # the other picture comes second, ahead of the copies
    assert sorted(mmr_order(sims, pairwise, 10, 0.5)) == [0, 1, 2, 3]  # k beyond the pool: each once


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_progress_without_a_terminal_is_plain_log_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    logger = logging.getLogger("embedlab")
    lines = _Lines()
    monkeypatch.setattr(logger, "handlers", [lines])
    old_level = logger.level
    try:
        logger.setLevel(logging.INFO)  # setLevel also clears the logger's isEnabledFor cache
        with progress.Progress(4, "thumbnails") as bar:
            assert bar.bar is None  # pytest's stderr is not a terminal
            for _ in range(4):
                bar.update(1)
        assert lines.lines == ["thumbnails: 1/4 img (25%)", "thumbnails: 2/4 img (50%)", "thumbnails: 3/4 img (75%)"]
        lines.lines.clear()
        logger.setLevel(logging.WARNING)
        with progress.Progress(4, "quiet") as bar:
            bar.update(4)
        assert lines.lines == []  # --quiet silences progress too
    finally:
        logger.setLevel(old_level)
