"""`report`: one self-contained HTML page to judge duplicates and anomalies by eye.

People decide what to delete by looking at pictures, not paths. The page holds
everything inline (thumbnails as data URIs, one style sheet, no script) and a
Content-Security-Policy that forbids any request or script, so it can be mailed
or archived and opened offline. Every name from the index is HTML-escaped:
file names are shown, never interpreted.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .images import ImageError, decode, fs_path
from .progress import Progress
from .search import SCORE_DECIMALS, cosine_scores
from .store import ImageRow, Store

if TYPE_CHECKING:
    from .dedupe import GroupPlan
    from .results import Analysis, SearchResults

log = logging.getLogger("embedlab")

THUMB_PX = 128
NEIGHBOURS_SHOWN = 5
MATRIX_MAX = 10  # larger groups list each member's strongest link instead of a full matrix
GROUP_MEMBERS_SHOWN = 48

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0 0 4px;font-size:20px} header p{margin:0;color:#c5cad6}
nav a{color:#9cc3ff;margin-right:16px}
main{padding:8px 24px 40px}
h2{margin:28px 0 10px;font-size:18px;border-bottom:2px solid #d5d9e2;padding-bottom:4px}
article{background:#fff;border:1px solid #d5d9e2;border-radius:6px;padding:10px 12px;margin:0 0 12px}
h3{margin:0 0 8px;font-size:15px}
.body{display:flex;gap:20px;flex-wrap:wrap;align-items:flex-start}
.thumbs{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;width:136px;font-size:11px;color:#4a5263}
figure.small{width:104px}
img.thumb{display:block;width:128px;height:128px;object-fit:contain;background:#e9ebf0;border:1px solid #c8cdd8;
 border-radius:3px;box-sizing:border-box}
img.pixelated{image-rendering:pixelated}
figure.small img.thumb{width:92px;height:92px}
.missing{width:128px;height:128px;display:flex;align-items:center;justify-content:center;background:#fbe9e9;
 color:#9b1c1c;border-radius:3px;text-align:center}
figcaption{word-break:break-all;margin-top:3px}
.score{font-weight:600;color:#1d2330}
.flag{display:inline-block;background:#fde2b8;color:#7a4100;border-radius:3px;padding:0 5px;margin:0 4px 2px 0}
table{border-collapse:collapse;font-size:12px}
td,th{border:1px solid #d5d9e2;padding:2px 6px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.below{color:#a05a00;background:#fff6e5}
.note{font-size:11px;color:#6b7385;margin:4px 0 0}
.anomaly{display:flex;gap:16px;align-items:flex-start}
.why p{margin:2px 0}
.query{display:flex;gap:16px;align-items:flex-start}
.arrow{align-self:center;font-size:22px;color:#8a92a3}
.empty{color:#6b7385;font-style:italic}
.fate{display:inline-block;border-radius:3px;padding:0 5px;font-weight:600}
.fate-keep{background:#d6f5dd;color:#145c26} .fate-remove{background:#fbe0e0;color:#8a1c1c}
.fate-protected{background:#dde7fb;color:#1c3d8a}
"""


@dataclass(frozen=True)
class ReportOptions:
    """The page's knobs; the analysis ones mean what they mean for `analyze`."""

    dup_threshold: float = 0.92
    anomaly_top: int = 8
    anomaly_k: int = 10
    max_groups: int = 200
    query_dir: str | None = None
    k: int = 5
    batch_size: int = 32
    workers: int = 2


@dataclass
class ReportStats:
    """What the page holds, for logs, the runs manifest and --metrics-out."""

    groups: int = 0
    groups_shown: int = 0
    anomalies: int = 0
    queries: int = 0
    unreadable: int = 0
    thumbnails: int = 0
    thumbnails_missing: int = 0
    bytes: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def thumbnail_uri(path: str | os.PathLike[str], px: int = THUMB_PX) -> str:
    """A JPEG data URI of the picture as a viewer shows it; ImageError if unreadable."""
    rgb = decode(path).rgb
    rgb.thumbnail((px, px), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=82, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Thumbnails:
    """Thumbnails by path, made once each (in worker threads), or the reason there is none."""

    def __init__(self, workers: int = 2):
        self.workers = max(1, workers)
        self.uris: dict[str, str] = {}
        self.errors: dict[str, str] = {}

    def make(self, paths: Iterable[str]) -> None:
        todo = sorted({p for p in paths if p not in self.uris and p not in self.errors})
        with ThreadPoolExecutor(self.workers) as pool, Progress(len(todo), "thumbnails") as bar:
            for path, uri, error in pool.map(_one_thumbnail, todo):
                if uri is not None:
                    self.uris[path] = uri
                else:
                    self.errors[path] = error
                bar.update(1)


def _one_thumbnail(path: str) -> tuple[str, str | None, str]:
    """``path`` as stored (path text), its thumbnail or why there is none."""
    if not os.path.exists(fs_path(path)):
        return path, None, "file not found"
    try:
        return path, thumbnail_uri(fs_path(path)), ""
    except ImageError as exc:
        return path, None, str(exc)


def _e(value: object) -> str:
    """Escape anything for text and attribute positions alike."""
    return html.escape(str(value), quote=True)


def _human_bytes(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


class _Page:
    """Accumulates HTML; every dynamic value goes through ``_e``."""

    def __init__(self, thumbs: Thumbnails, rows: dict[str, ImageRow]):
        self.parts: list[str] = []
        self.thumbs = thumbs
        self.rows = rows
        self.shown = 0
        self.missing = 0

    def add(self, *chunks: str) -> None:
        self.parts.extend(chunks)

    def figure(self, path: str, lines: Sequence[str] = (), small: bool = False) -> None:
        uri = self.thumbs.uris.get(path)
        cls = ' class="small"' if small else ""
        if uri is not None:
            self.shown += 1
            row = self.rows.get(path)
            tiny = row is not None and min(row.width or THUMB_PX, row.height or THUMB_PX) < THUMB_PX // 4
            css = "thumb pixelated" if tiny else "thumb"
            pic = f'<img class="{css}" src="{uri}" alt="{_e(path)}" title="{_e(path)}">'
        else:
            self.missing += 1
            pic = f'<div class="missing" title="{_e(path)}">{_e(self.thumbs.errors.get(path, "no thumbnail"))}</div>'
        caption = "<br>".join([f'<span class="path">{_e(path)}</span>', *lines])
        self.add(f"<figure{cls}>{pic}<figcaption>{caption}</figcaption></figure>")

    def describe(self, path: str) -> str:
        """Dimensions, file size and format of an indexed file, escaped."""
        row = self.rows.get(path)
        if row is None:
            return ""
        dims = f"{row.width}\u00d7{row.height}" if row.width and row.height else "?"
        return _e(f"{dims} \u00b7 {_human_bytes(row.size)} \u00b7 {row.format or '?'}")

    def html(self) -> str:
        return "".join(self.parts)


def _pair_table(page: _Page, members: list[str], sims: np.ndarray, threshold: float) -> None:
    """Pairwise scores: a full matrix for small groups, each member's best link otherwise."""
    names = [f"#{i + 1}" for i in range(len(members))]
    if len(members) <= MATRIX_MAX:
        page.add('<div><table class="pairs"><tr><th></th>', *(f"<th>{n}</th>" for n in names), "</tr>")
        for i, name in enumerate(names):
            cells = (
                "<td></td>"
                if i == j
                else f'<td class="num{" below" if sims[i, j] < threshold else ""}">{sims[i, j]:.4f}</td>'
                for j in range(len(names))
            )
            page.add(f"<tr><th>{name}</th>", *cells, "</tr>")
        page.add("</table>")
        if (sims < threshold).any():
            page.add('<p class="note">shaded: below the threshold, joined through other members</p>')
        page.add("</div>")
        return
    page.add('<table class="pairs"><tr><th>image</th><th>closest in group</th><th>score</th></tr>')
    masked = sims.copy()
    np.fill_diagonal(masked, -np.inf)
    for i, name in enumerate(names):
        j = int(np.argmax(masked[i]))
        page.add(f'<tr><td>{name}</td><td>{names[j]}</td><td class="num">{masked[i, j]:.4f}</td></tr>')
    page.add("</table>")


def _manifest(store: Store) -> list[tuple[str, str]]:
    meta = store.meta()
    summary = store.summary()
    embed_runs = [r for r in store.runs() if r["command"] == "embed" and r["status"] == "ok"]
    rows = [
        ("backbone", meta.get("backbone", "?")),
        ("recipe", meta.get("recipe", "?")),
        ("dimension", meta.get("dim", "?")),
        ("weights", f"{meta.get('weights_file', '?')} (sha256 {meta.get('weights_sha256', '?')[:12]})"),
        ("images", str(summary["images"])),
        ("unique vectors", str(summary["unique_vectors"])),
        ("unreadable files", str(summary["failed"])),
        ("database size", _human_bytes(summary["database_bytes"])),
        ("runs", ", ".join(f"{k} \u00d7{v}" for k, v in summary["runs"].items())),
    ]
    if embed_runs:
        last = embed_runs[0]
        timings = last.get("timings") or {}
        rows += [
            ("last embed", f"{last['started_at']} from {last.get('images_dir') or '?'}"),
            ("last embed counts", ", ".join(f"{k} {v}" for k, v in (last.get("counts") or {}).items())),
            ("last embed timings", ", ".join(f"{k} {v:.2f} s" for k, v in timings.items())),
        ]
        versions = last.get("versions") or {}
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    return rows


def build_report(
    store: Store,
    analysis: Analysis,
    searches: SearchResults,
    options: ReportOptions,
    *,
    title: str = "embedlab report",
    plans: Sequence[GroupPlan] = (),
    marks: Sequence[dict[str, Any]] | None = None,
    leaks: dict[str, Any] | None = None,
) -> tuple[str, ReportStats]:
    """The whole page as one string, and what it holds: a rendering of the Analysis that `analyze`
    returns and the results that `search` returns. Call inside the snapshot the analysis read.

    ``plans`` (dedupe's, one per group in the same order) show each group's keeper and what would
    happen to the others; ``marks`` and ``leaks`` get their own sections."""
    stats = ReportStats()
    result = analysis.data
    matrix = analysis.matrix if analysis.matrix is not None else np.zeros((0, 0), dtype=np.float32)
    paths = analysis.rows
    row_of = {p: i for i, item in enumerate(paths) for p in item}
    rows = store.image_rows()
    unreadable = store.errors()
    records = searches.to_dicts()

    groups = result["duplicate_groups"]
    shown_groups = groups[: options.max_groups]
    wanted: list[str] = [p for g in shown_groups for p in g[:GROUP_MEMBERS_SHOWN]]
    for item in result["anomaly_details"]:
        wanted += [item["path"], *(n["path"] for n in item["neighbours"][:NEIGHBOURS_SHOWN])]
    for rec in records:
        wanted += [rec["query"], *(r["path"] for r in rec["results"])]
    t0 = time.perf_counter()
    thumbs = Thumbnails(options.workers)
    thumbs.make(wanted)
    stats.timings["thumbnails"] = time.perf_counter() - t0

    page = _Page(thumbs, rows)
    page.add(
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1><p>{_e(store.dir)} \u00b7 duplicate threshold "
        f"{options.dup_threshold:g} \u00b7 anomalies top {options.anomaly_top} (k = {options.anomaly_k})</p>",
        f'<nav><a href="#duplicates">duplicate groups ({len(groups)})</a>'
        f'<a href="#anomalies">anomalies ({len(result["anomaly_details"])})</a>'
        f'<a href="#search">search ({len(records)})</a>'
        f'<a href="#unreadable">unreadable ({len(unreadable)})</a>',
        f'<a href="#marks">marks ({len(marks or [])})</a>',
        *([f'<a href="#leaks">leaks ({sum(c["pairs"] for c in leaks["counts"])})</a>'] if leaks is not None else []),
        '<a href="#manifest">manifest</a></nav></header><main>',
    )
    fates = {f.path: f.decision for p in plans for f in p.files}
    _duplicates_section(page, result, shown_groups, len(groups), matrix, row_of, options.dup_threshold, fates)
    _anomalies_section(page, result["anomaly_details"], rows)
    _search_section(page, records, options)
    _unreadable_section(page, unreadable)
    _marks_section(page, marks or [])
    if leaks is not None:
        _leaks_section(page, leaks)
    page.add('<section id="manifest"><h2>Run manifest</h2><article><table>')
    for key, value in _manifest(store):
        page.add(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>")
    page.add("</table></article></section></main></body></html>\n")

    text = page.html()
    stats.groups, stats.groups_shown = len(groups), len(shown_groups)
    stats.anomalies, stats.queries, stats.unreadable = len(result["anomaly_details"]), len(records), len(unreadable)
    stats.thumbnails, stats.thumbnails_missing = page.shown, page.missing
    stats.bytes = len(text.encode("utf-8"))
    return text, stats


def _duplicates_section(
    page: _Page,
    result: dict[str, Any],
    shown: list[list[str]],
    total: int,
    matrix: np.ndarray,
    row_of: dict[str, int],
    threshold: float,
    fates: dict[str, str] | None = None,
) -> None:
    fates = fates or {}
    page.add(f'<section id="duplicates"><h2>Duplicate groups ({total}) at score \u2265 {threshold:g}</h2>')
    if not shown:
        page.add('<p class="empty">No two images score at or above the threshold.</p>')
    for number, (members, detail) in enumerate(zip(shown, result["duplicate_details"], strict=False), 1):
        visible = members[:GROUP_MEMBERS_SHOWN]
        page.add(
            f'<article class="group" id="group-{number}" data-size="{len(members)}">'
            f"<h3>Group {number} \u00b7 {len(members)} images \u00b7 links {detail['min_link']:.4f}"
            f'\u2013{detail["max_link"]:.4f}</h3><div class="body"><div class="thumbs">'
        )
        keeper = next((p for p in members if fates.get(p) == "keep"), None)
        if keeper is not None:
            page.add(f'<p class="note">keeper: {_e(keeper)} \u00b7 planned: the others removed (dedupe)</p>')
        for i, path in enumerate(visible, 1):
            lines = [f"#{i} \u00b7 {page.describe(path)}"]
            if path in fates:
                lines.append(f'<span class="fate fate-{_e(fates[path])}">{_FATES[fates[path]]}</span>')
            page.figure(path, lines)
        page.add("</div>")
        vecs = matrix[[row_of[p] for p in visible]]
        sims = np.round(cosine_scores(vecs, vecs.T), SCORE_DECIMALS)
        _pair_table(page, visible, sims, threshold)
        page.add("</div>")
        if len(members) > len(visible):
            page.add(f'<p class="empty">and {len(members) - len(visible)} more not shown</p>')
        page.add("</article>")
    if total > len(shown):
        page.add(f'<p class="empty">{total - len(shown)} more groups not shown (raise --max-groups).</p>')
    page.add("</section>")


_FATES = {"keep": "keeper", "remove": "planned: remove", "protected": "kept: protected"}


def _marks_section(page: _Page, marks: Sequence[dict[str, Any]]) -> None:
    page.add(f'<section id="marks"><h2>Marked as not duplicates ({len(marks)})</h2>')
    if not marks:
        page.add('<p class="empty">No marks (embedlab mark --not-duplicate A B).</p>')
    else:
        page.add('<article><table class="marks"><tr><th>one</th><th>other</th><th>marked</th></tr>')
        for m in marks:
            a = "<br>".join(_e(p) for p in m["paths_a"]) or _e(f"(not indexed) {m['a'][:12]}")
            b = "<br>".join(_e(p) for p in m["paths_b"]) or _e(f"(not indexed) {m['b'][:12]}")
            page.add(f"<tr><td>{a}</td><td>{b}</td><td>{_e(m['created_at'])}</td></tr>")
        page.add("</table></article>")
    page.add("</section>")


def _leaks_section(page: _Page, leaks: dict[str, Any]) -> None:
    total = sum(c["pairs"] for c in leaks["counts"])
    page.add(f'<section id="leaks"><h2>Near-duplicates across splits ({total} pairs)</h2><article><table>')
    page.add("<tr><th>split</th><th>folder</th><th>images</th></tr>")
    for s in leaks["splits"]:
        page.add(f'<tr><td>{_e(s["name"])}</td><td>{_e(s["folder"])}</td><td class="num">{s["images"]}</td></tr>')
    page.add("</table>")
    if not leaks["counts"]:
        page.add('<p class="empty">No near-duplicate pair crosses a split.</p>')
    else:
        page.add('<table class="leak-counts"><tr><th>splits</th><th>pairs</th><th>images</th></tr>')
        for c in leaks["counts"]:
            names = " \u00d7 ".join(c["splits"])
            page.add(
                f'<tr><td>{_e(names)}</td><td class="num">{c["pairs"]}</td><td class="num">{c["images"]}</td></tr>'
            )
        page.add('</table><table class="leak-pairs"><tr><th>score</th><th>one</th><th>other</th><th>kind</th></tr>')
        for p in leaks["pairs"]:
            page.add(
                f'<tr><td class="num">{p["score"]:.4f}</td><td>{_e(p["a"])} ({_e(p["split_a"])})</td>'
                f"<td>{_e(p['b'])} ({_e(p['split_b'])})</td><td>{_e(p['kind'])}</td></tr>"
            )
        page.add("</table>")
    patients = leaks.get("patients")
    if patients is not None:
        page.add(f'<p>{len(patients["shared"])} of {patients["patients"]} keyed patients are in more than one split '
                 "(salted keys; no identifier is stored)</p>")  # fmt: skip
    page.add("</article></section>")


def _anomalies_section(page: _Page, details: list[dict[str, Any]], rows: dict[str, ImageRow]) -> None:
    page.add(f'<section id="anomalies"><h2>Anomalies ({len(details)}), most anomalous first</h2>')
    if not details:
        page.add('<p class="empty">No anomalies requested.</p>')
    for rank, item in enumerate(details, 1):
        path = item["path"]
        page.add(f'<article class="anomaly" data-rank="{rank}">')
        page.figure(path, [f'<span class="score">#{rank} \u00b7 score {item["score"]:.4f}</span>', page.describe(path)])
        page.add('<div class="why">')
        *reasons, isolation = item["reasons"]
        page.add(f"<p>{_e(isolation)}</p>")
        if reasons:
            page.add("<p>", *(f'<span class="flag">{_e(r)}</span>' for r in reasons), "</p>")
        else:
            page.add("<p>no quality flag: listed for isolation alone</p>")
        page.add('<p>nearest neighbours:</p><div class="thumbs neighbours">')
        for n in item["neighbours"][:NEIGHBOURS_SHOWN]:
            page.figure(n["path"], [f'<span class="score">{n["score"]:.4f}</span>'], small=True)
        page.add("</div></div></article>")
    page.add("</section>")


def _search_section(page: _Page, searches: list[dict[str, Any]], options: ReportOptions) -> None:
    page.add(f'<section id="search"><h2>Search results ({len(searches)} queries, top {options.k})</h2>')
    if not options.query_dir:
        page.add('<p class="empty">No --query-dir given.</p>')
    for rec in searches:
        page.add('<article class="query">')
        page.figure(rec["query"], ['<span class="score">query</span>'])
        page.add('<span class="arrow">\u2192</span><div class="thumbs results">')
        if "error" in rec:
            page.add(f'<p class="empty">query unreadable: {_e(rec["error"])}</p>')
        for rank, hit in enumerate(rec["results"], 1):
            page.figure(hit["path"], [f'<span class="score">#{rank} \u00b7 {hit["score"]:.4f}</span>'])
        page.add("</div></article>")
    page.add("</section>")


def _unreadable_section(page: _Page, unreadable: list[tuple[str, str]]) -> None:
    page.add(f'<section id="unreadable"><h2>Unreadable files ({len(unreadable)})</h2>')
    if not unreadable:
        page.add('<p class="empty">Every file decoded.</p>')
    else:
        page.add('<article><table class="unreadable"><tr><th>file</th><th>reason</th></tr>')
        for path, error in unreadable:
            page.add(f"<tr><td>{_e(path)}</td><td>{_e(error)}</td></tr>")
        page.add("</table></article>")
    page.add("</section>")


def write_report(text: str, out: str | os.PathLike[str]) -> Path:
    """Write atomically: a reader never sees half a page."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target
