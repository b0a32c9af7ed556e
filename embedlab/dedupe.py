"""`dedupe`: one keeper per duplicate group by ordered rules, the others moved, linked or trashed, and undone.

Planning is a pure function of the groups `analyze` reports and what the index
knows of each file (`plan_groups`), so its two promises can be tested on any
input: a group always keeps at least one file (its keeper, chosen among all
members), and nothing under a protected folder is ever chosen for removal.
Acting (`apply_plan`) re-checks every file's size, mtime and SHA-256 against
the index first (a file changed since embed is skipped, and a group whose
keeper changed is skipped whole: its picture would have no verified copy
left), writes each step to a journal before taking it, and brings the index
level, so the next `embed` finds nothing to do. `undo` reverses a journal:
same bytes, same paths, same modification times, the index rows put back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import UsageError
from .images import fs_path, path_token, sha256_file
from .store import ImageRow, Store

log = logging.getLogger("embedlab")

ACTIONS = ("list", "move", "hardlink", "symlink", "trash")
RULES = ("original", "highest-resolution", "largest-file", "format-priority", "oldest", "newest", "shortest-path")
DEFAULT_RULES = ("original", "highest-resolution", "largest-file", "format-priority", "oldest", "shortest-path")
DEFAULT_FORMATS = ("dicom", "png", "tiff", "webp", "bmp", "jpeg", "gif")
_FORMAT_ALIASES = {"jpg": "jpeg", "tif": "tiff", "dcm": "dicom", "mpo": "jpeg"}
JOURNAL_VERSION = 1


@dataclass(frozen=True)
class Member:
    """What planning needs of one file in a group, all of it from the index (and a DICOM header)."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    width: int | None = None
    height: int | None = None
    format: str | None = None
    original: bool | None = None  # DICOM ImageType: ORIGINAL True, DERIVED False, unknown None
    protected: bool = False


@dataclass(frozen=True)
class FilePlan:
    """One file's fate: ``keep`` (the keeper), ``protected`` (kept: under a protected folder) or ``remove``."""

    path: str
    decision: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "decision": self.decision, "sha256": self.sha256, "bytes": self.size}


@dataclass
class GroupPlan:
    """A group's keeper (chosen by ``rules``, the first rule that told members apart is ``reason``) and its files."""

    group: int
    keeper: str
    reason: str
    files: list[FilePlan]
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> what apply_plan did

    @property
    def removals(self) -> list[FilePlan]:
        return [f for f in self.files if f.decision == "remove"]

    def to_dict(self, action: str = "list") -> dict[str, Any]:
        files = []
        for f in self.files:
            item = f.to_dict()
            item["action"] = action if f.decision == "remove" and action != "list" else f.decision
            item.update(self.outcomes.get(f.path, {}))
            files.append(item)
        return {"group": self.group, "keeper": self.keeper, "reason": self.reason, "files": files}


def normal_format(name: str | None) -> str:
    text = (name or "").strip().lower()
    return _FORMAT_ALIASES.get(text, text)


def parse_rules(text: str | Sequence[str]) -> tuple[str, ...]:
    """Keep rules from "a,b,c" or a list; UsageError naming the unknown one."""
    items = [r.strip() for r in text.split(",")] if isinstance(text, str) else [str(r).strip() for r in text]
    rules = tuple(r for r in items if r)
    for rule in rules:
        if rule not in RULES:
            raise UsageError(f"names an unknown rule {rule!r}; choose from {', '.join(RULES)}", subject="keep")
    if not rules:
        raise UsageError("needs at least one rule", subject="keep")
    return rules


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    items = text.split(",") if isinstance(text, str) else list(text)
    formats = tuple(normal_format(f) for f in items if f.strip())
    if not formats:
        raise UsageError("needs at least one format, e.g. dicom,png,tiff,jpeg", subject="format_priority")
    return formats


def _rule_key(rule: str, m: Member, formats: Sequence[str]) -> Any:
    """Smaller is better."""
    if rule == "original":
        return {True: 0, None: 1, False: 2}[m.original]
    if rule == "highest-resolution":
        return -((m.width or 0) * (m.height or 0))
    if rule == "largest-file":
        return -m.size
    if rule == "format-priority":
        fmt = normal_format(m.format)
        return formats.index(fmt) if fmt in formats else len(formats)
    if rule == "oldest":
        return m.mtime_ns
    if rule == "newest":
        return -m.mtime_ns
    if rule == "shortest-path":
        return len(m.path)
    raise UsageError(f"unknown keep rule {rule!r}", subject="keep")


def choose_keeper(members: Sequence[Member], rules: Sequence[str], formats: Sequence[str]) -> tuple[Member, str]:
    """The best member by the ordered rules (ties: the path), and the first rule that decided."""
    ranked = sorted(members, key=lambda m: ([_rule_key(r, m, formats) for r in rules], m.path))
    best = ranked[0]
    if len(ranked) > 1:  # the first rule on which the keeper beat the runner-up
        for rule in rules:
            if _rule_key(rule, best, formats) != _rule_key(rule, ranked[1], formats):
                return best, rule
    return best, "path"


def plan_groups(
    groups: Sequence[Sequence[Member]], rules: Sequence[str] = DEFAULT_RULES, formats: Sequence[str] = DEFAULT_FORMATS
) -> list[GroupPlan]:
    """One plan per group: the keeper by ``rules``, protected members kept, every other member removed.

    Pure: the same groups give the same plan. Groups of fewer than two files plan nothing.
    """
    plans = []
    for number, members in enumerate(groups, 1):
        if len(members) < 2:
            continue
        keeper, reason = choose_keeper(members, rules, formats)
        files = [
            FilePlan(
                m.path,
                "keep" if m.path == keeper.path else "protected" if m.protected else "remove",
                m.sha256,
                m.size,
            )
            for m in sorted(members, key=lambda m: (m.path != keeper.path, m.path))
        ]
        plans.append(GroupPlan(number, keeper.path, reason, files))
    return plans


def is_protected(path: str, protect: Sequence[str]) -> bool:
    """Whether ``path`` lies under one of the ``protect`` folders (compared as absolute, normalised paths)."""
    here = os.path.abspath(fs_path(path))
    for folder in protect:
        top = os.path.abspath(folder)
        if here == top or here.startswith(top.rstrip(os.sep) + os.sep):
            return True
    return False


def dicom_original(path: str) -> bool | None:
    """ORIGINAL (True) or DERIVED (False) from a DICOM file's Image Type; None when unknown or unreadable."""
    try:
        import pydicom

        ds = pydicom.dcmread(fs_path(path), stop_before_pixels=True, specific_tags=["ImageType"])
        value = ds.get("ImageType")
    except Exception:  # not DICOM after all, unreadable, pydicom missing: the rule just cannot tell
        return None
    first = str(value[0] if isinstance(value, Sequence) and not isinstance(value, str) else value or "").upper()
    return True if first == "ORIGINAL" else False if first == "DERIVED" else None


def members_of(rows: dict[str, ImageRow], paths: Sequence[str], protect: Sequence[str]) -> list[Member]:
    """Planning facts of a group's paths from their index rows (DICOM files: their Image Type too)."""
    out = []
    for path in paths:
        row = rows.get(path)
        if row is None:
            continue
        original = dicom_original(path) if normal_format(row.format) == "dicom" else None
        out.append(
            Member(
                path,
                row.sha256,
                row.size,
                row.mtime_ns,
                row.width,
                row.height,
                row.format,
                original,
                is_protected(path, protect),
            )
        )
    return out


# -- acting on a plan -------------------------------------------------------------------


def unchanged(row: ImageRow) -> str | None:
    """None when the file still has the size, mtime and SHA-256 the index holds; else why not."""
    target = fs_path(row.path)
    try:
        st = os.stat(target)
    except OSError:
        return "missing"
    if st.st_size != row.size or st.st_mtime_ns != row.mtime_ns:
        return "changed since embed (size or mtime)"
    try:
        if sha256_file(target) != row.sha256:
            return "changed since embed (content)"
    except OSError as exc:
        return f"cannot read: {exc.strerror}"
    return None


def layout_path(dest: str | os.PathLike[str], path: str) -> Path:
    """Where ``path`` goes under ``dest``: its path as the index names it, anchor and '..' made safe."""
    parts = [("_parent_" if p == ".." else p) for p in Path(fs_path(path)).parts if p not in ("/", ".", "")]
    if Path(fs_path(path)).anchor:
        parts = parts[1:] if parts and parts[0] == Path(fs_path(path)).anchor else parts
    return Path(dest, *parts)


def trash_folder(path: str) -> Path:
    """The freedesktop.org trash for a file: the home trash on its device, else $topdir/.Trash-$uid."""
    home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "Trash"
    here = os.stat(os.path.dirname(os.path.abspath(path)) or ".").st_dev
    probe = home
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if os.stat(probe).st_dev == here:
        return home
    top = Path(os.path.abspath(path)).parent
    while top != top.parent and os.stat(top.parent).st_dev == here:
        top = top.parent
    return top / f".Trash-{os.getuid()}"


def _trash(src: Path) -> tuple[Path, Path]:
    """Move ``src`` into its trash with a .trashinfo record (the spec's name-collision rule); (file, info)."""
    folder = trash_folder(os.fspath(src))
    (folder / "files").mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / "info").mkdir(parents=True, exist_ok=True, mode=0o700)
    stem, n = src.name, 1
    while True:
        name = stem if n == 1 else f"{Path(stem).stem}.{n}{Path(stem).suffix}"
        info = folder / "info" / f"{name}.trashinfo"
        try:
            fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            n += 1
            continue
        stamp = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
        text = f"[Trash Info]\nPath={quote(os.fsencode(src.resolve()))}\nDeletionDate={stamp}\n"
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        target = folder / "files" / name
        try:
            shutil.move(os.fspath(src), target)
        except BaseException:
            info.unlink(missing_ok=True)
            raise
        return target, info


class Journal:
    """JSON Lines: a header, then each step written (and flushed to disk) before it is taken, then 'done'."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = path.open("x", encoding="utf-8")
        except FileExistsError:
            raise UsageError(f"journal {path_token(os.fspath(path))} exists already; name a new one") from None
        except OSError as exc:
            raise UsageError(f"cannot write journal {path_token(os.fspath(path))}: {exc.strerror}") from None
        self.write({"journal": JOURNAL_VERSION, **header})

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, sort_keys=True) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _row_dict(row: ImageRow) -> dict[str, Any]:
    return asdict(row)


def apply_plan(
    store: Store,
    plans: Sequence[GroupPlan],
    action: str,
    *,
    dest: str | os.PathLike[str] | None,
    journal_path: Path,
    run_id: int | None = None,
) -> dict[str, int]:
    """Carry out ``action`` on every planned removal; counts of done and skipped files.

    Each group's keeper is re-checked first; each removal is re-checked, then
    journalled, then acted on. ``hardlink`` and ``symlink`` replace a file with a
    link to the keeper; a file whose bytes differ from the keeper's is first put
    under ``dest`` (INDEX/held/JOURNAL when not given) so that undo can restore it.
    """
    if action not in ACTIONS or action == "list":
        raise UsageError(f"cannot act with {action!r}", subject="action")
    paths = [f.path for p in plans for f in p.files]
    rows = store.ok_rows_by_path(paths)
    held = Path(dest) if dest is not None else store.dir / "held" / journal_path.stem
    journal = Journal(
        journal_path,
        {
            "action": action,
            "index": os.path.abspath(store.dir),
            "cwd": os.getcwd(),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    counts = {"done": 0, "skipped": 0, "bytes": 0}
    remove_rows: list[str] = []
    put_rows: list[ImageRow] = []
    step = 0
    try:
        for plan in plans:
            keeper = rows.get(plan.keeper)
            why_not = "keeper not in the index" if keeper is None else unchanged(keeper)
            kept_files = {os.path.realpath(fs_path(f.path)) for f in plan.files if f.decision != "remove"}
            for item in plan.removals:
                row = rows.get(item.path)
                reason = f"keeper {why_not}" if why_not else None
                if reason is None:
                    reason = "not in the index" if row is None else unchanged(row)
                if reason is None and os.path.realpath(fs_path(item.path)) in kept_files:
                    reason = "the same file as a kept one (a link)"
                linked = keeper is not None and os.path.samefile(fs_path(item.path), fs_path(keeper.path))
                if reason is None and action == "hardlink" and linked:
                    reason = "already a hard link to the keeper"
                if reason is not None:
                    plan.outcomes[item.path] = {"status": "skipped", "why": reason}
                    counts["skipped"] += 1
                    log.warning("%s: skipped, %s", path_token(item.path), reason)
                    continue
                assert row is not None and keeper is not None
                step += 1
                record = _act(journal, step, action, row, keeper, dest, held)
                plan.outcomes[item.path] = {"status": "done", **({"to": record["to"]} if "to" in record else {})}
                counts["done"] += 1
                counts["bytes"] += row.size
                if action in ("move", "trash"):
                    remove_rows.append(row.path)
                else:
                    st = os.stat(fs_path(row.path))
                    put_rows.append(
                        replace(
                            keeper,
                            path=row.path,
                            root=row.root,
                            size=st.st_size,
                            mtime_ns=st.st_mtime_ns,
                            ctime_ns=st.st_ctime_ns,
                        )
                    )
    finally:
        journal.close()
        store.replace_image_rows(remove_rows, put_rows, run_id)
    return counts


def _act(
    journal: Journal,
    step: int,
    action: str,
    row: ImageRow,
    keeper: ImageRow,
    dest: str | os.PathLike[str] | None,
    held: Path,
) -> dict[str, Any]:
    """Journal one step, take it, journal that it was taken; the record (its ``to`` for people)."""
    src = Path(os.path.abspath(fs_path(row.path)))
    st = os.lstat(src)
    record: dict[str, Any] = {
        "step": step,
        "op": action,
        "path": row.path,
        "src": os.fspath(src),
        "row": _row_dict(row),
        "mode": st.st_mode & 0o7777,
        "mtime_ns": st.st_mtime_ns,
        "atime_ns": st.st_atime_ns,
    }
    if action == "move" or (action == "trash" and dest is not None):
        # trash with --dest: a folder of the user's choosing, so a move with the layout kept
        if dest is None:
            raise UsageError("needs a destination folder", subject="dest")
        target = _free_target(dest, row.path)
        record.update(to=os.fspath(target))
        journal.write(record)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(src), target)
    elif action == "trash":
        journal.write({**record, "trash": os.fspath(trash_folder(os.fspath(src)))})
        target, info = _trash(src)
        record.update(to=os.fspath(target), info=os.fspath(info))
    else:  # hardlink, symlink: the file becomes a link to the keeper
        keeper_abs = os.path.abspath(fs_path(keeper.path))
        same_bytes = row.sha256 == keeper.sha256
        record.update(keeper=keeper_abs, same_bytes=same_bytes)
        if not same_bytes:
            record.update(held=os.fspath(_free_target(held, row.path)))
        journal.write(record)
        tmp = src.with_name(f".{src.name}.embedlab-link")
        tmp.unlink(missing_ok=True)
        if action == "hardlink":
            os.link(keeper_abs, tmp)
        else:
            os.symlink(keeper_abs, tmp)
        if not same_bytes:
            target = Path(record["held"])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(os.fspath(src), target)
        os.replace(tmp, src)
    journal.write({"done": step, **({"to": record["to"], "info": record["info"]} if "info" in record else {})})
    return record


def _free_target(folder: str | os.PathLike[str], path: str) -> Path:
    """Where ``path`` goes under ``folder`` with its layout kept; refused if something is already there."""
    target = layout_path(os.path.abspath(folder), path)
    if target.exists() or target.is_symlink():
        raise UsageError(f"{path_token(os.fspath(target))} already exists; choose an empty destination")
    return target


# -- undo -------------------------------------------------------------------------------


def read_journal(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]], set[int], bool]:
    """(header, steps, steps done, already undone) of a journal; UsageError when it is not one."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a dedupe journal"
        raise UsageError(f"cannot read journal {path_token(os.fspath(path))}: {why}") from None
    if not records or records[0].get("journal") != JOURNAL_VERSION:
        raise UsageError(f"{path_token(os.fspath(path))} is not a dedupe journal")
    steps = [r for r in records[1:] if "op" in r]
    done: set[int] = set()
    for r in records[1:]:
        if "done" in r:
            done.add(int(r["done"]))
            for s in steps:  # the trash location is only known once the step was taken
                if s["step"] == r["done"] and "info" in r:
                    s.update(to=r["to"], info=r["info"])
    return records[0], steps, done, any("undone_at" in r for r in records)


def undo_journal(
    path: str | os.PathLike[str], open_store: Callable[[str], Store]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Reverse every step of a journal, last first; (header, one outcome per step). The index rows
    of restored files are put back (when their vector is still stored; else the next embed adds them)."""
    header, steps, done, undone = read_journal(path)
    if undone:
        raise UsageError(f"{path_token(os.fspath(path))} was undone already")
    outcomes: list[dict[str, Any]] = []
    restored: list[ImageRow] = []
    for step in sorted(steps, key=lambda s: -int(s["step"])):
        src = Path(step["src"])
        try:
            why = _reverse(step, step["step"] in done)
        except OSError as exc:
            why = f"cannot restore: {exc.strerror}"
        outcomes.append(
            {"path": step["path"], "status": "skipped" if why else "restored", **({"why": why} if why else {})}
        )
        if why:
            log.warning("%s: not restored, %s", path_token(step["path"]), why)
            continue
        os.utime(src, ns=(int(step["atime_ns"]), int(step["mtime_ns"])), follow_symlinks=False)
        restored.append(ImageRow(**step["row"]))
    with open_store(header["index"]) as store:
        have = store.embedded_shas()
        store.replace_image_rows([], [r for r in restored if r.sha256 in have], None)
    with Path(path).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"undone_at": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n")
    outcomes.reverse()
    return header, outcomes


def _reverse(step: dict[str, Any], was_done: bool) -> str | None:
    """Put one step back; None when restored, else why not (the state is not what the step left)."""
    src = Path(step["src"])
    op = step["op"]
    if op in ("move", "trash"):
        target = Path(step.get("to", ""))
        if not step.get("to") or not (target.exists() or target.is_symlink()):
            return None if src.exists() and not was_done else "the moved file is gone from where it was put"
        if src.exists() or src.is_symlink():
            return "another file now sits at its path"
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(os.fspath(target), src)
        if step.get("info"):
            Path(step["info"]).unlink(missing_ok=True)
        return None
    # hardlink, symlink
    held = Path(step["held"]) if step.get("held") else None
    if not was_done and not src.is_symlink() and (held is None or not held.exists()):
        return None if _sha(src) == step["row"]["sha256"] else "changed since the step"
    if held is not None:
        if not held.exists():
            return "its original is gone from where it was held"
        tmp = src.with_name(f".{src.name}.embedlab-undo")
        shutil.move(os.fspath(held), tmp)
        os.replace(tmp, src)
    else:  # the same bytes as the keeper: an independent copy of them again
        tmp = src.with_name(f".{src.name}.embedlab-undo")
        shutil.copyfile(step["keeper"], tmp)
        if _sha(tmp) != step["row"]["sha256"]:
            tmp.unlink()
            return "the keeper's bytes changed since; nothing restored"
        os.replace(tmp, src)
    os.chmod(src, int(step["mode"]))
    return None


def _sha(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def journal_name() -> str:
    """A new journal's file name: the time, then random hex so two runs in one second never collide."""
    return f"dedupe-{time.strftime('%Y%m%dT%H%M%S')}-{os.urandom(4).hex()}.jsonl"
