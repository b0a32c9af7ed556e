"""`export`: groups, anomalies, images or search results as CSV or JSON Lines, for spreadsheets and pipelines.

One row per file (per query result for search), with the columns in ``COLUMNS``
in that order; both formats carry the same rows. In CSV an empty cell is a
missing value and a list (flags, reasons) is joined with "; ".
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Hint, UsageError

if TYPE_CHECKING:
    from .dedupe import GroupPlan
    from .results import Analysis, SearchResults
    from .store import ImageRow

WHATS = ("groups", "anomalies", "images", "search")
FORMATS = ("csv", "jsonl")

# What each column holds is documented in docs/GUIDE.md ("Export"); keep the two in step.
COLUMNS: dict[str, tuple[str, ...]] = {
    "groups": (
        "group",
        "path",
        "sha256",
        "representative",
        "keeper",
        "decision",
        "score",
        "kind",
        "edit",
        "min_link",
        "max_link",
        "width",
        "height",
        "bytes",
        "format",
    ),
    "anomalies": (
        "rank",
        "path",
        "score",
        "isolation",
        "isolation_percentile",
        "mean_distance",
        "flags",
        "reasons",
        "nearest",
        "nearest_score",
    ),
    "images": (
        "path",
        "root",
        "sha256",
        "status",
        "bytes",
        "mtime_ns",
        "width",
        "height",
        "format",
        "mode",
        "frames",
        "modality",
        "body_part",
        "entropy",
        "contrast",
        "sharpness",
        "brightness",
        "error",
    ),
    "search": ("query", "rank", "path", "score", "copy", "error"),
}


def group_rows(analysis: Analysis, rows: dict[str, ImageRow], plans: Sequence[GroupPlan]) -> list[dict[str, Any]]:
    """One row per file of every duplicate group, with its link to the representative and its planned fate."""
    fate = {f.path: (p.keeper, f.decision) for p in plans for f in p.files}
    out = []
    for number, detail in enumerate(analysis.duplicate_details, 1):
        link_of = {link["b"]: link for link in detail["links"]}
        for path in detail["paths"]:
            row = rows.get(path)
            link = link_of.get(path, {})
            keeper, decision = fate.get(path, (None, None))
            out.append(
                {
                    "group": number,
                    "path": path,
                    "sha256": row.sha256 if row else None,
                    "representative": path == detail["representative"],
                    "keeper": keeper == path if keeper else None,
                    "decision": decision,
                    "score": link.get("score"),
                    "kind": link.get("kind"),
                    "edit": link.get("edit"),
                    "min_link": detail["min_link"],
                    "max_link": detail["max_link"],
                    "width": row.width if row else None,
                    "height": row.height if row else None,
                    "bytes": row.size if row else None,
                    "format": row.format if row else None,
                }
            )
    return out


def anomaly_rows(analysis: Analysis) -> list[dict[str, Any]]:
    out = []
    for rank, item in enumerate(analysis.anomaly_details, 1):
        nearest = item["neighbours"][0] if item["neighbours"] else {}
        out.append(
            {
                "rank": rank,
                **{k: item[k] for k in ("path", "score", "isolation", "isolation_percentile", "mean_distance")},
                "flags": list(item["flags"]),
                "reasons": list(item["reasons"]),
                "nearest": nearest.get("path"),
                "nearest_score": nearest.get("score"),
            }
        )
    return out


def image_rows(rows: dict[str, ImageRow]) -> list[dict[str, Any]]:
    names = {"bytes": "size"}
    return [{c: getattr(row, names.get(c, c)) for c in COLUMNS["images"]} for _, row in sorted(rows.items())]


def search_rows(results: SearchResults) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for result in results:
        if result.error is not None:
            out.append({"query": result.query, "rank": None, "path": None, "score": None, "copy": None,
                        "error": result.error})  # fmt: skip
        for rank, hit in enumerate(result.hits, 1):
            out.append(
                {
                    "query": result.query,
                    "rank": rank,
                    "path": hit.path,
                    "score": hit.score,
                    "copy": hit.copy,
                    "error": None,
                }
            )
    return out


def render(what: str, records: Iterable[dict[str, Any]], fmt: str) -> str:
    """The rows as CSV (a header first) or JSON Lines, columns in ``COLUMNS[what]`` order."""
    columns = COLUMNS[what]
    if fmt == "jsonl":
        return "".join(json.dumps({c: r.get(c) for c in columns}, separators=(",", ":")) + "\n" for r in records)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        writer.writerow([_cell(r.get(c)) for c in columns])
    return buf.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def write(text: str, out: str | os.PathLike[str]) -> Path:
    """Atomically, so a pipeline reading the file never sees half of it."""
    target = Path(out)
    if target.is_dir():
        raise UsageError(f"{os.fspath(out)} is a folder: name the file", subject="export_out")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"cannot write {os.fspath(out)}: {exc.strerror}", hint=Hint("report_unwritable")) from None
    return target
