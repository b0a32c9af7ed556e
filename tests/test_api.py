"""docs/PYTHON_API.md runs as written: its python blocks are executed in order (real model, real store)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "PYTHON_API.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_python_api_doc_examples_run(work: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The doc's paths, with a part of the sample assets (the whole set takes a minute to embed here).
    images = work / "assets" / "images"
    images.mkdir(parents=True)
    for path in sorted((ROOT / "assets" / "images").iterdir())[:24]:
        shutil.copyfile(path, images / path.name)
    shutil.copytree(ROOT / "assets" / "queries", work / "assets" / "queries")
    namespace: dict[str, object] = {}
    blocks = _blocks()
    assert len(blocks) >= 5
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # the doc is ours, run as written
    assert (work / "index" / "report.html").is_file()
