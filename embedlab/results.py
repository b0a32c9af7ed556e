"""Typed results of the Python API; `to_dict()` is exactly the JSON each command prints.

The CLI prints `to_json()` (or a text rendering of the same object) and nothing
else, and `report` draws the same `Analysis` and `SearchResult` objects, so the
three can never disagree. Every result also carries ``metrics``: what the run
recorded in the index's runs table (and what ``--metrics-out`` writes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

    from .calibration import Calibration
    from .dedupe import GroupPlan
    from .duplicates import Link
    from .indexer import EmbedReport
    from .report import ReportStats

COMPACT = {"separators": (",", ":")}


class Result:
    """Base: ``to_dict()`` for data, ``to_json()`` for the exact text the CLI prints."""

    json_options: ClassVar[dict[str, Any]] = COMPACT
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), **self.json_options)


@dataclass
class EmbedResult(Result):
    """What `embed` did: counts, backbone, timings (``report``), and where the store is."""

    json_options: ClassVar[dict[str, Any]] = {"sort_keys": True}
    report: EmbedReport
    database: Path
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        summary = {k: v for k, v in vars(self.report).items() if k not in ("timings", "run_id", "runtime")}
        summary["timings"] = {k: round(v, 3) for k, v in self.report.timings.items()}
        summary["index"] = str(self.database)
        return summary


@dataclass(frozen=True)
class SearchHit:
    """One result: an indexed path and its cosine; ``copy`` when verified as the same picture;
    ``distance`` and ``exact_rank`` when explained."""

    path: str
    score: float
    copy: float | None = None
    distance: float | None = None
    exact_rank: int | None = None

    def to_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {"path": self.path, "score": self.score}
        if self.copy is not None:
            item["copy"] = self.copy
        if self.distance is not None:
            item.update(distance=self.distance, exact_rank=self.exact_rank)
        return item


@dataclass
class SearchResult(Result):
    """One query's results (a JSON Lines record of `search`); ``error`` when the query was unreadable."""

    query: str
    hits: list[SearchHit] = field(default_factory=list)
    error: str | None = None
    backbone: str | None = None  # with explain
    engine: str | None = None  # with explain
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"query": self.query, "results": [h.to_dict() for h in self.hits]}
        if self.error is not None:
            record["error"] = self.error
        if self.engine is not None:
            record.update(backbone=self.backbone, engine=self.engine)
        return record


@dataclass
class SearchResults:
    """Every query's SearchResult, in query order, and how they were answered."""

    results: list[SearchResult]
    engine: str = ""
    backbone: str = ""
    k: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def __iter__(self) -> Iterator[SearchResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> SearchResult:
        return self.results[i]

    @property
    def failed(self) -> int:
        return sum(r.error is not None for r in self.results)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.results]


@dataclass
class Analysis(Result):
    """`analyze`'s answer: duplicate groups, anomalies, unreadable files (``data`` is the JSON object).

    ``matrix`` and ``rows`` keep the vectors it was computed on (one row per
    content, ``rows[i]`` its paths) so `report` can draw pairwise scores
    without reading them again; ``shas`` and ``links`` serve dedupe and leaks.
    None of them is part of the JSON.
    """

    data: dict[str, Any]
    matrix: np.ndarray | None = None
    rows: list[list[str]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    shas: list[str] = field(default_factory=list)  # rows[i] holds content shas[i]
    links: list[Link] = field(default_factory=list)  # verified links (marked pairs left out), for leaks

    def to_dict(self) -> dict[str, Any]:
        return self.data

    @property
    def duplicate_groups(self) -> list[list[str]]:
        return list(self.data["duplicate_groups"])

    @property
    def duplicate_details(self) -> list[dict[str, Any]]:
        return list(self.data["duplicate_details"])

    @property
    def anomalies(self) -> list[str]:
        return list(self.data["anomalies"])

    @property
    def anomaly_details(self) -> list[dict[str, Any]]:
        return list(self.data["anomaly_details"])

    @property
    def unreadable(self) -> list[dict[str, str]]:
        return list(self.data.get("unreadable", []))


@dataclass
class Evaluation(Result):
    """Retrieval metrics of a labeled index: P@k, recall@k, mAP, images and classes."""

    data: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.data


@dataclass
class CalibrationReport(Result):
    """`calibrate`'s answer: per-edit recall at ``dup_threshold``, the PR table, a suggested threshold."""

    calibration: Calibration
    dup_threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.calibration.as_dict(self.dup_threshold)

    def save_plot(self, path: str | Path) -> bool:
        """The PR curve as a PNG (needs matplotlib); whether it was written."""
        from .calibration import save_plot

        return save_plot(self.calibration, Path(path))


@dataclass
class ReportResult(Result):
    """The HTML page written and what it holds."""

    json_options: ClassVar[dict[str, Any]] = {"sort_keys": True}
    out: Path
    stats: ReportStats
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), **{k: v for k, v in vars(self.stats).items() if k != "timings"}}


@dataclass
class IndexInfo(Result):
    """What an index holds: backbone, counts, failures, recent runs, size on disk."""

    json_options: ClassVar[dict[str, Any]] = {"sort_keys": True, "separators": (",", ":")}
    data: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.data


@dataclass
class DedupeResult(Result):
    """`dedupe`'s plan (and, after an action, what was done): one keeper per group, the fate of every file.

    ``to_dicts()`` is one JSON Lines record per group (what ``dedupe --json`` prints),
    ``summary`` the counts (and the journal that `undo` reverses)."""

    groups: list[GroupPlan]
    action: str = "list"
    rules: tuple[str, ...] = ()
    journal: Path | None = None
    counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dicts(self) -> list[dict[str, Any]]:
        return [g.to_dict(self.action) for g in self.groups]

    @property
    def summary(self) -> dict[str, Any]:
        removals = [f for g in self.groups for f in g.removals]
        out: dict[str, Any] = {
            "action": self.action,
            "rules": list(self.rules),
            "groups": len(self.groups),
            "planned": len(removals),
            "planned_bytes": sum(f.size for f in removals),
            "protected": sum(f.decision == "protected" for g in self.groups for f in g.files),
        }
        if self.journal is not None:
            out.update(self.counts, journal=str(self.journal))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"groups": self.to_dicts(), "summary": self.summary}


@dataclass
class UndoResult(Result):
    """What `undo` restored, step by step (the last step first)."""

    journal: Path
    steps: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        restored = sum(s["status"] == "restored" for s in self.steps)
        return {"journal": str(self.journal), "restored": restored, "skipped": len(self.steps) - restored,
                "steps": self.steps}  # fmt: skip


@dataclass
class ExportResult(Result):
    """An export: its rows (``text`` as written) and where it went (None: the caller prints ``text``)."""

    what: str
    format: str
    text: str
    rows: int
    out: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "what": self.what,
            "format": self.format,
            "rows": self.rows,
            "out": None if self.out is None else str(self.out),
        }


@dataclass
class MarksResult(Result):
    """The index's "not a duplicate" marks: content pairs and the paths that hold each side now."""

    marks: list[dict[str, Any]]
    changed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dicts(self) -> list[dict[str, Any]]:
        return list(self.marks)

    def to_dict(self) -> dict[str, Any]:
        return {"marks": self.marks, "changed": self.changed}


@dataclass
class LeaksResult(Result):
    """Near-duplicate pairs across splits, counts per split pair and (with a patient key) shared patients."""

    data: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.data
