"""Folder identity: which folder an index's rows came from, whatever it was called this time.

A folder is its resolved real path (absolute, symlinks followed), stored per root in the
``folders`` table (schema v9). Its rows keep the prefix it was first named by (``root``), so
printed paths keep the user's spelling. This is what lets ``embed`` tell apart two folders
typed alike from two working folders, and see one folder reached through a symlink and
through its absolute path as one; ``forget`` drops a folder that was renamed, moved away
or added by mistake, which a re-run of ``embed`` cannot (it only syncs the folder it is given).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .errors import Hint
from .images import display_root, path_token
from .store import Store, StoreError

log = logging.getLogger("embedlab")

__all__ = ["ForgetReport", "choose_root", "forget_folders", "match_folders", "real_folder", "warn_about_folders"]


def real_folder(folder: str | os.PathLike[str]) -> str:
    """The identity of a folder: its absolute path with every symlink resolved."""
    return os.path.realpath(os.fspath(folder))


def _within(inner: str, outer: str) -> bool:
    return inner != outer and inner.startswith(outer.rstrip(os.sep) + os.sep)


def choose_root(folders: dict[str, str | None], typed: str, real: str) -> str:
    """The root (path prefix) under which the folder at ``real``, typed as ``typed``, is kept.

    The root the index already holds for that real path wins, however it is typed now (a root
    indexed before folders had an identity counts when its name leads here from here). A new
    folder takes the name it was typed with, unless that name is the root of another folder that
    still exists (``images`` from another working folder): then it is kept under its absolute
    path, so neither replaces the other. A root whose folder is gone, or one indexed before
    folders had an identity, is taken over by the folder now typed under its name.
    """
    for root, known in folders.items():
        if known is None and os.path.isdir(root) and real_folder(root) == real:
            known = real  # indexed before v9 under a name that, from here, is this folder
        if known == real:
            if root != typed:
                log.info("%s is a folder this index already holds: its paths keep their first name", path_token(typed))
            return root
    owner = folders.get(typed, "")
    if typed not in folders or owner is None or not os.path.isdir(owner):
        return typed
    absolute = display_root(os.path.abspath(typed))
    other = folders.get(absolute, "")
    if absolute in folders and other is not None and other != real and os.path.isdir(other):
        raise StoreError(f"this index already holds another folder named {absolute}", hint=Hint("folder_name_taken"))
    log.warning(
        "%s names another folder in this index (run from another working folder?): "
        "this one is kept under its absolute path",
        path_token(typed),
    )
    return absolute


def warn_about_folders(store: Store, root: str, real: str) -> None:
    """Warn, by path hash, about indexed folders that overlap ``real`` or no longer exist."""
    counts = store.folder_counts()
    overlapping, gone, gone_rows = 0, 0, 0
    for other, known in store.folders().items():
        if other == root:
            continue
        if known is None:  # indexed before v9: judge it by its name from here
            known = real_folder(other) if os.path.isdir(other) else None
            if known is None:
                continue
        if known == real or _within(known, real) or _within(real, known):
            overlapping += 1
            log.warning(
                "%s and %s overlap (one holds the other): files under both are indexed twice; "
                "`embedlab forget --index INDEX FOLDER` drops one",
                path_token(root),
                path_token(other),
            )
        elif not os.path.isdir(known):
            gone += 1
            gone_rows += counts.get(other, 0)
    if gone:
        log.warning(
            "%d indexed folder(s) no longer exist (renamed, moved or unmounted): their %d row(s) are kept; "
            "`embedlab info --index INDEX` lists folders, `embedlab forget --index INDEX FOLDER` drops one",
            gone,
            gone_rows,
        )


def match_folders(store: Store, names: list[str], missing: bool = False) -> list[str]:
    """Roots of the index that ``names`` designate (by root text, by real path, by absolute path),
    plus with ``missing`` every root whose folder no longer exists. An unknown name is an error."""
    folders = store.folders()
    chosen: list[str] = []
    for name in names:
        typed, real = display_root(name), real_folder(name)
        candidates = [typed, display_root(os.path.abspath(name))]
        hits = [r for r in candidates if r in folders] or [r for r, known in folders.items() if known == real]
        if not hits:
            hint = Hint("unknown_folder", {"index": display_root(store.dir)})
            raise StoreError(f"{typed} is not a folder of this index", hint=hint)
        chosen.append(hits[0])
    if missing:
        for root, known in folders.items():
            where = known if known is not None else root
            if not os.path.isdir(where):
                chosen.append(root)
    return sorted(set(chosen))


@dataclass
class ForgetReport:
    folders: list[str]
    images: int = 0
    vectors: int = 0
    run_id: int = 0


def forget_folders(index: str, names: list[str], missing: bool = False) -> ForgetReport:
    """Drop whole folders from an index: their rows, and vectors no other row uses. No model, no scan."""
    with Store(index) as store:
        if store.read_only:
            raise StoreError(f"index {display_root(index)} is read-only; forget needs write access to it")
        with store.writer_lock():
            roots = match_folders(store, names, missing)
            report = ForgetReport(folders=roots)
            run_id = store.start_run("forget", images_dir=", ".join(roots))
            with store.transaction():
                for root in roots:
                    report.images += store.forget_folder(root)
                report.vectors = store.delete_orphan_vectors()
            report.run_id = run_id
            counts = {"folders": len(roots), "removed": report.images, "vectors_removed": report.vectors}
            store.finish_run(run_id, "ok", counts=counts)
    return report
