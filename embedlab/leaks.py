"""`leaks`: near-duplicates that cross train/validation/test splits, and patients found in two splits.

A model scored on a test image whose copy it trained on is scored on memory.
Each indexed path belongs to the split whose folder holds it (the deepest one
when folders nest); every verified link at or above the threshold between two
splits is a leak, and so is one content (byte-identical files) in two splits.

Patients: with ``patient_key``, each DICOM file's Patient ID is read and only
HMAC-SHA256(salt, identifier) is kept, per content, with a salt made once per
index and stored in it. The same patient in two splits then shows up under the
same key, and neither the index nor any log holds who the patient is.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .images import fs_path, path_token
from .search import SCORE_DECIMALS

if TYPE_CHECKING:
    from .duplicates import Link
    from .store import ImageRow, Store

log = logging.getLogger("embedlab")

PATIENT_TAG = "PatientID"
KEY_SHOWN = 16  # hex characters of a patient key shown in results: a pseudonym, not the identifier


def parse_splits(items: Sequence[str] | dict[str, str]) -> dict[str, str]:
    """``NAME=DIR`` items (or a mapping) as name -> folder; at least two distinct names."""
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            name, sep, folder = item.partition("=")
            if not sep or not name.strip() or not folder.strip():
                raise UsageError(f"takes NAME=DIR, not {item!r}", subject="split")
            pairs.append((name.strip(), folder.strip()))
    splits: dict[str, str] = {}
    for name, folder in pairs:
        if name in splits:
            raise UsageError(f"names split {name!r} twice", subject="split")
        splits[name] = os.fspath(folder)
    if len(splits) < 2:
        raise UsageError("needs at least two splits, e.g. train=DIR and test=DIR", subject="split")
    return splits


def split_of(path: str, folders: dict[str, str]) -> str | None:
    """The split whose folder holds ``path`` (the deepest when folders nest), else None."""
    here = os.path.abspath(fs_path(path))
    best: tuple[int, str] | None = None
    for name, folder in folders.items():
        top = os.path.abspath(folder).rstrip(os.sep)
        if here.startswith(top + os.sep) and (best is None or len(top) > best[0]):
            best = (len(top), name)
    return None if best is None else best[1]


def patient_key(salt: str, identifier: str) -> str:
    return hmac.new(bytes.fromhex(salt), identifier.encode("utf-8"), hashlib.sha256).hexdigest()


def read_patient_id(path: str) -> str | None:
    """The Patient ID of a DICOM file, or None; never logged, never returned beyond the caller's hash."""
    try:
        import pydicom

        ds = pydicom.dcmread(fs_path(path), stop_before_pixels=True, specific_tags=[PATIENT_TAG])
        value = str(ds.get(PATIENT_TAG, "") or "").strip()
    except Exception:  # unreadable or not DICOM: no key
        return None
    return value or None


def update_patient_keys(store: Store, rows: dict[str, ImageRow]) -> dict[str, str | None]:
    """Salted keys of every DICOM content, reading the files whose content has none stored yet."""
    salt = store.patient_salt(create=True)
    assert salt is not None
    known = store.patient_keys()
    fresh: dict[str, str | None] = {}
    unread = 0
    for path, row in sorted(rows.items()):
        if row.status != "ok" or (row.format or "").upper() != "DICOM" or row.sha256 in known or row.sha256 in fresh:
            continue
        if not os.path.exists(fs_path(path)):
            unread += 1
            continue
        identifier = read_patient_id(path)
        fresh[row.sha256] = None if identifier is None else patient_key(salt, identifier)
        del identifier
    if fresh:
        with store.transaction():
            store.set_patient_keys(fresh)
    if unread:
        log.warning("%d DICOM files could not be read for a patient key (moved or gone)", unread)
    return {**known, **fresh}


def find_leaks(
    rows: list[list[str]],
    shas: list[str],
    links: Sequence[Link],
    folders: dict[str, str],
    threshold: float,
    keys: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """The `leaks` answer for an analysis (``rows[i]`` the paths of content ``shas[i]``, verified ``links``)."""
    split = {p: split_of(p, folders) for paths in rows for p in paths}
    pairs: list[dict[str, Any]] = []

    def add(a: str, b: str, score: float, kind: str) -> None:
        sa, sb = split[a], split[b]
        if sa is None or sb is None or sa == sb:
            return
        (a, sa), (b, sb) = sorted([(a, sa), (b, sb)], key=lambda x: (x[1], x[0]))
        pairs.append({"a": a, "split_a": sa, "b": b, "split_b": sb, "score": score, "kind": kind})

    for paths in rows:
        for a, b in combinations(paths, 2):
            add(a, b, 1.0, "same_bytes")
    for link in links:
        if link.score >= threshold:
            for a in rows[link.a]:
                for b in rows[link.b]:
                    add(a, b, round(link.score, SCORE_DECIMALS), link.kind)
    pairs.sort(key=lambda p: (p["split_a"], p["split_b"], -p["score"], p["a"], p["b"]))
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for p in pairs:
        entry = counts.setdefault((p["split_a"], p["split_b"]), {"pairs": 0, "images": set()})
        entry["pairs"] += 1
        entry["images"].update((p["a"], p["b"]))
    sizes = {name: 0 for name in folders}
    for name in split.values():
        if name is not None:
            sizes[name] += 1
    data: dict[str, Any] = {
        "splits": [{"name": n, "folder": f, "images": sizes[n]} for n, f in folders.items()],
        "unassigned": sum(name is None for name in split.values()),
        "dup_threshold": threshold,
        "counts": [
            {"splits": [a, b], "pairs": c["pairs"], "images": len(c["images"])} for (a, b), c in sorted(counts.items())
        ],
        "pairs": pairs,
    }
    if keys is not None:
        data["patients"] = _patients(rows, shas, split, keys)
    return data


def _patients(
    rows: list[list[str]], shas: list[str], split: dict[str, str | None], keys: dict[str, str | None]
) -> dict[str, Any]:
    """Patient keys seen in more than one split (shortened), with counts per split pair."""
    where: dict[str, dict[str, int]] = {}
    keyed = 0
    for sha, paths in zip(shas, rows, strict=True):
        key = keys.get(sha)
        if key is None:
            continue
        for path in paths:
            if split[path] is not None:
                keyed += 1
                where.setdefault(key, {}).setdefault(str(split[path]), 0)
                where[key][str(split[path])] += 1
    shared: list[dict[str, Any]] = [
        {"patient": key[:KEY_SHOWN], "splits": dict(sorted(seen.items())), "images": sum(seen.values())}
        for key, seen in sorted(where.items(), key=lambda kv: kv[0])
        if len(seen) > 1
    ]
    counts: dict[tuple[str, str], int] = {}
    for item in shared:
        for a, b in combinations(sorted(item["splits"]), 2):
            counts[(a, b)] = counts.get((a, b), 0) + 1
    return {
        "images_with_key": keyed,
        "patients": len(where),
        "shared": shared,
        "counts": [{"splits": [a, b], "patients": n} for (a, b), n in sorted(counts.items())],
    }


def table(data: dict[str, Any]) -> list[str]:
    """The leaks answer as text lines for people."""
    lines = ["split        images  folder"]
    lines += [f"{s['name']:<12} {s['images']:>6}  {s['folder']}" for s in data["splits"]]
    if data["unassigned"]:
        lines.append(f"(in no split: {data['unassigned']} images)")
    lines.append(f"near-duplicate pairs across splits (score >= {data['dup_threshold']:g}):")
    if not data["counts"]:
        lines.append("  none")
    for c in data["counts"]:
        lines.append(f"  {c['splits'][0]} x {c['splits'][1]}: {c['pairs']} pairs, {c['images']} images")
    for p in data["pairs"]:
        lines.append(f"  {p['score']:.4f}  {p['a']} ({p['split_a']})  {p['b']} ({p['split_b']})  {p['kind']}")
    if "patients" in data:
        pt = data["patients"]
        lines.append(f"patients in more than one split: {len(pt['shared'])} of {pt['patients']} keyed")
        for c in pt["counts"]:
            lines.append(f"  {c['splits'][0]} x {c['splits'][1]}: {c['patients']} patients")
        for item in pt["shared"]:
            where = ", ".join(f"{k} {v}" for k, v in item["splits"].items())
            lines.append(f"  patient {item['patient']}: {where}")
    return lines


def warn_outside(folders: dict[str, str]) -> None:
    for name, folder in folders.items():
        if not os.path.isdir(folder):
            log.warning("split %s: %s is not a folder here; paths are matched by name only", name, path_token(folder))
