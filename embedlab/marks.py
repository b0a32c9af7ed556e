"""Marks ("not a duplicate"): what a person decided about a pair, applied before grouping.

A mark names two contents (sha256), never two paths, so it follows the pictures
through renames, moves and re-embedding. The scoring and verification of pairs
is untouched: marks only remove links before `duplicates.build_groups` sees
them. Groups form around a representative, so two marked items can still land
in one group through it (A~R, B~R); then the weaker of their links to R goes
too, and the grouping runs again until no group holds a marked pair.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .duplicates import Group, Link, build_groups
from .errors import UsageError
from .images import fs_path, path_token, sha256_file

Pair = tuple[int, int]  # item indices, a < b


def blocked_pairs(shas: Sequence[str], marks: Iterable[tuple[str, str]]) -> set[Pair]:
    """Marked content pairs as item indices of an analysis (contents not analysed are left out)."""
    row = {sha: i for i, sha in enumerate(shas)}
    out: set[Pair] = set()
    for a, b in marks:
        if a in row and b in row:
            i, j = row[a], row[b]
            out.add((min(i, j), max(i, j)))
    return out


def without_marked(
    n_items: int, links: Sequence[Link], threshold: float, multi_path: Sequence[bool], blocked: set[Pair]
) -> list[Link]:
    """``links`` less every marked pair and, where a group would still hold one, the weaker link
    that brought it in: after this, `build_groups` never puts a marked pair in one group."""
    kept = [link for link in links if (link.a, link.b) not in blocked]
    if not blocked:
        return kept
    while True:
        drop = _weaker_links(build_groups(n_items, kept, threshold, multi_path), blocked)
        if not drop:
            return kept
        kept = [link for link in kept if (link.a, link.b) not in drop]


def _weaker_links(groups: Sequence[Group], blocked: set[Pair]) -> set[Pair]:
    drop: set[Pair] = set()
    for group in groups:
        members = set(group.members)
        to_rep = {(lk.b if lk.a == group.representative else lk.a): lk for lk in group.links}
        for a, b in sorted(blocked):
            if a in members and b in members and a in to_rep and b in to_rep:
                weaker = min(to_rep[a], to_rep[b], key=lambda lk: (lk.score, -max(lk.a, lk.b)))
                drop.add((weaker.a, weaker.b))
    return drop


def read_pairs(source: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Pairs of paths from a file: one pair a line, tab- or comma-separated (CSV quoting works);
    blank lines and lines starting with # are skipped."""
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"cannot read pairs from {path_token(os.fspath(source))}: {why}") from None
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = next(csv.reader(io.StringIO(line), delimiter="\t" if "\t" in line else ","))
        fields = [f.strip() for f in fields if f.strip()]
        if len(fields) != 2:
            raise UsageError(f"line {number} of the pairs file holds {len(fields)} paths, not 2")
        pairs.append((fields[0], fields[1]))
    if not pairs:
        raise UsageError("the pairs file holds no pairs")
    return pairs


def content_of(path: str, by_path: dict[str, str]) -> str:
    """The sha256 a mark stores for ``path``: the indexed file's, else the file's on disk."""
    if path in by_path:
        return by_path[path]
    normal = os.path.normpath(path).replace(os.sep, "/")
    if normal in by_path:
        return by_path[normal]
    try:
        return sha256_file(fs_path(path))
    except OSError:
        raise UsageError(f"neither an indexed path nor a readable file: {path_token(path)}") from None
