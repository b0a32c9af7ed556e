"""The sample assets' planted answers, at the grader's default flags (issue 3 targets)."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from embedlab.cli import main

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"


def _pairs(groups: list[list[str]]) -> set[tuple[str, str]]:
    return {(a, b) for g in groups for a, b in itertools.combinations(sorted(g), 2)}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    index = str(tmp_path_factory.mktemp("assets-index"))
    capture = {}
    for name, argv in {
        "embed": ["-q", "embed", "--images-dir", str(ASSETS / "images"), "--out", index],
        "search": ["-q", "search", "--index", index, "--query-dir", str(ASSETS / "queries"), "--k", "5", "--json"],
        "analyze": ["-q", "analyze", "--index", index, "--dup-threshold", "0.92", "--anomaly-top", "8", "--json"],
    }.items():
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(argv) == 0
        capture[name] = out.getvalue()
    return capture


@pytest.fixture(scope="module")
def truth() -> dict[str, Any]:
    return json.loads((ASSETS / "ground_truth.json").read_text())


def test_planted_duplicates_are_found_and_hard_negatives_kept_apart(
    outputs: dict[str, str], truth: dict[str, Any]
) -> None:
    report = json.loads(outputs["analyze"])
    found = _pairs([[Path(p).name for p in g] for g in report["duplicate_groups"]])
    planted = _pairs(truth["duplicate_groups"])
    precision = len(found & planted) / len(found)
    recall = len(found & planted) / len(planted)
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)
    assert not found & _pairs(truth["hard_negative_groups"])


def test_oddballs_lead_the_anomalies_and_broken_files_are_apart(outputs: dict[str, str], truth: dict[str, Any]) -> None:
    report = json.loads(outputs["analyze"])
    anomalies = [Path(p).name for p in report["anomalies"]]
    assert len(set(anomalies) & set(truth["oddballs"])) >= 7
    assert [Path(u["path"]).name for u in report["unreadable"]] == truth["unreadable"]
    assert not set(anomalies) & set(truth["unreadable"])


def test_every_query_finds_its_original_first(outputs: dict[str, str], truth: dict[str, Any]) -> None:
    lines = [json.loads(line) for line in outputs["search"].splitlines()]
    assert len(lines) == len(truth["queries"])
    for line in lines:
        assert Path(line["results"][0]["path"]).name == truth["queries"][Path(line["query"]).name]
