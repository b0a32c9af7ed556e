"""The fast tier: NumPy, SQLite and CLI-parsing tests that never import torch (under a minute).

Run it alone with `python -m pytest tests/fast`; the full suite includes it. A test
that imported torch here would make the tier slow without anyone noticing, so the
tier fails if torch was imported by the time its last test ends (package scope: the
rest of the full suite, which does import torch, runs after that check).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="package", autouse=True)
def _no_torch_in_the_fast_tier(request: pytest.FixtureRequest) -> Iterator[None]:
    already = "torch" in sys.modules  # the full suite may import torch in other folders first
    yield
    if not already and "torch" in sys.modules:
        pytest.fail("a fast-tier test imported torch; move it to the full suite (tests/)")
