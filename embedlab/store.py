"""The index: one SQLite file that owns every row and vector. All SQL lives here.

Vectors are kept twice on purpose: ``embeddings`` (plain BLOBs, the source of
truth, readable from any sqlite3 shell and by the exact NumPy path) and the
sqlite-vec ``vec_index`` virtual table used for KNN. The second is rebuilt from
the first whenever they disagree, so a machine without the extension can still
embed and search, and no vector is ever lost.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import EmbedlabError, Hint
from .evidence import EVIDENCE_VERSION, Evidence

log = logging.getLogger("embedlab")

DB_NAME = "embedlab.db"
LOCK_NAME = "embedlab.lock"  # advisory lock held by the one `embed` writing an index
_OUR_TABLES = frozenset({"meta", "images", "embeddings", "runs"})
_IN_CHUNK = 500  # keys per IN (...) list, far below SQLite's bound-parameter limit


def _migrations_dir() -> Path:
    """``migrations/`` at the repository root, or its copy inside an installed package."""
    here = Path(__file__).resolve().parent
    installed = here / "migrations"
    return installed if installed.is_dir() else here.parent / "migrations"


MIGRATIONS_DIR = _migrations_dir()
VEC_TABLE = "vec_index"
KNN_MAX = 4096  # sqlite-vec's ceiling for k


class StoreError(EmbedlabError):
    """A problem with the index file; the message is one line."""


class IndexMismatch(StoreError):
    """The index was built with another backbone, recipe or weights."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ImageRow:
    path: str
    root: str
    sha256: str
    size: int
    mtime_ns: int
    status: str
    width: int | None = None
    height: int | None = None
    format: str | None = None
    mode: str | None = None
    entropy: float | None = None
    contrast: float | None = None
    sharpness: float | None = None
    brightness: float | None = None
    error: str | None = None
    frames: int | None = None
    modality: str | None = None
    body_part: str | None = None
    colourfulness: float | None = None
    band: float | None = None
    ctime_ns: int | None = None  # the file's status-change time at the scan (schema v5); None before
    # Pixel statistics for judging an image against the collection (schema v8); None before.
    saturation: float | None = None
    correlation: float | None = None
    edges: float | None = None
    flat: float | None = None
    top_colours: float | None = None
    colours: float | None = None
    # Where a DICOM image lies in its series (schema v11); None for other files and before.
    series_key: str | None = None
    slice_key: str | None = None


_IMAGE_COLUMNS = tuple(ImageRow.__dataclass_fields__)
STATISTICS = ("saturation", "correlation", "edges", "flat", "top_colours", "colours")  # schema v8


def _connect(path: Path, want_vec: bool, read_only: bool = False) -> tuple[Any, bool, str]:  # apsw or sqlite3
    """Open the file with a binding that can load sqlite-vec when possible.

    The stdlib ``sqlite3`` on many Pythons cannot load extensions, so apsw is
    tried first. ``read_only`` opens without ever writing (an index on read-only
    media or in a folder the user cannot write). Returns (connection, vec_loaded, why_not).
    """
    uri = _read_only_uri(path) if read_only else None
    if want_vec and os.environ.get("EMBEDLAB_NO_SQLITE_VEC"):
        want_vec, reason = False, "disabled by EMBEDLAB_NO_SQLITE_VEC"
    elif not want_vec:
        reason = "exact search requested"
    if want_vec:
        try:
            import apsw
            import sqlite_vec

            if uri is None:
                vconn = apsw.Connection(str(path))
            else:
                vconn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
            vconn.enable_load_extension(True)
            vconn.load_extension(sqlite_vec.loadable_path())
            vconn.enable_load_extension(False)
            vconn.set_busy_timeout(30_000)
            return vconn, True, ""
        except Exception as exc:  # ImportError, apsw.ExtensionLoadingError, ...
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    if uri is None:
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30)
    else:
        conn = sqlite3.connect(uri, isolation_level=None, timeout=30, uri=True)
    return conn, False, reason


def _writable(index_dir: Path, db: Path) -> bool:
    """Whether this process may write the index: the file and its folder (journal, WAL and lock files live there)."""
    return os.access(db, os.W_OK) and os.access(index_dir, os.W_OK)


def _read_only_uri(db: Path) -> str:
    """A read-only URI for ``db``. A file left in WAL mode (by an older embedlab, or a run that could not
    switch back) needs a writable ``-shm`` beside it, which read-only media cannot give: such a file is
    opened ``immutable``, which reads the main file alone (what was committed before the last checkpoint)."""
    with open(db, "rb") as fh:
        header = fh.read(20)
    wal = len(header) == 20 and header[18] == 2
    shm = db.with_name(db.name + "-shm")
    flag = "immutable=1" if wal and not shm.exists() else "mode=ro"
    if wal and db.with_name(db.name + "-wal").is_file() and db.with_name(db.name + "-wal").stat().st_size:
        log.warning(
            "the read-only index has a write-ahead log that was never checkpointed: recent batches may be missing"
        )
    return f"{Path(os.path.abspath(db)).as_uri()}?{flag}"


class Store:
    """Owns the SQLite connection and every statement run against the index."""

    def __init__(self, index_dir: str | os.PathLike[str], *, create: bool = False, use_vec: bool = True):
        self.dir = Path(index_dir)
        self.path = self.dir / DB_NAME
        if create:
            if self.dir.exists() and not self.dir.is_dir():
                raise StoreError(f"{self.dir} is a file, not a folder", subject="out")
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create index folder {self.dir}: {exc.strerror}") from None
        elif not self.path.is_file():
            hint = Hint("no_index", {"index": str(self.dir)}, sep=": ")
            raise StoreError(f"no index at {self.dir}", hint=hint)
        # Read commands work on an index nobody may write (read-only media, a shared folder):
        # opened read-only, they never migrate and never record their run.
        self.read_only = not create and not _writable(self.dir, self.path)
        if create and self.path.is_file() and not _writable(self.dir, self.path):
            raise StoreError(
                f"index {self.dir} is read-only; embed needs write access to the index folder (read commands do not)"
            )
        try:
            self.conn, self.vec_loaded, self.vec_reason = _connect(self.path, use_vec, self.read_only)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open index {self.path}: {exc}") from None
        except Exception as exc:  # apsw's errors share no base class with sqlite3's
            raise StoreError(f"cannot open index {self.path}: {type(exc).__name__}: {exc}") from None
        try:
            # Nothing is written before we know the file is ours and not from a newer embedlab.
            self._check_is_ours(create)
            self.execute("PRAGMA foreign_keys=ON")
            if self.read_only:
                self._check_current()
            else:
                self._migrate()
        except BaseException:
            self.conn.close()
            raise

    # -- plumbing -----------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self.conn.execute(sql, tuple(params)))
        except Exception as exc:
            raise self._db_error(exc) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self.conn.executemany(sql, [tuple(r) for r in rows])
        except Exception as exc:
            raise self._db_error(exc) from None

    def _db_error(self, exc: Exception) -> Exception:
        """SQLite failures (sqlite3 or apsw, which share no base class) as one-line StoreErrors."""
        if not isinstance(exc, sqlite3.Error) and type(exc).__module__ != "apsw":
            return exc
        text = " ".join(str(exc).split()) or type(exc).__name__
        if "malformed" in text or "not a database" in text or type(exc).__name__ in ("CorruptError", "NotADBError"):
            return StoreError(f"index {self.path} is damaged ({text})", hint=Hint("damaged"))
        if "disk is full" in text or "vector chunk" in text or type(exc).__name__ == "FullError":
            # SQLITE_FULL, or sqlite-vec failing to add a chunk for the same reason: the batch rolls back.
            return StoreError(
                f"the disk holding {self.dir} is full ({text}); free some space and run embed again "
                "(committed batches are kept)"
            )
        if "readonly" in text.replace("-", "").replace(" ", "").lower() or type(exc).__name__ == "ReadOnlyError":
            return StoreError(f"index {self.path} is read-only ({text})")
        if "locked" in text or "busy" in text.lower():
            return StoreError(f"index {self.path} stayed busy (another process is writing): {text}")
        return StoreError(f"index {self.path}: {type(exc).__name__}: {text}")

    def _select_in(self, sql: str, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, whose ``IN ({marks})`` list takes ``keys``, a chunk of keys at a time
        (SQLite bounds the number of parameters in one statement)."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), _IN_CHUNK):
            part = list(keys[start : start + _IN_CHUNK])
            rows += self.execute(sql.format(marks=", ".join("?" * len(part))), part)
        return rows

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing: a crash inside leaves the index as it was before."""
        self.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with suppress(StoreError):  # SQLite may have rolled back already (disk full, damaged file)
                self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside see one committed state, even while an embed commits batches (WAL)."""
        self.execute("BEGIN")
        try:
            yield
        finally:
            self.execute("COMMIT")

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """One `embed` per index at a time: an advisory lock on INDEX/embedlab.lock.

        The OS drops the lock when its process dies (even by kill -9), so a
        crashed run never blocks the next one. A second embed is refused with a
        clear message instead of interleaving its batches with the first.
        """
        self.probe()
        if sys.platform == "win32":  # no fcntl; SQLite's own locking still keeps the file valid
            yield
            return
        import fcntl

        try:
            fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only lock file, folder or medium
            raise StoreError(
                f"cannot lock {self.dir / LOCK_NAME} for writing ({exc.strerror}); "
                "embed needs write access to the index folder (read commands do not)"
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                raise StoreError(
                    f"another embed (pid {holder}) is writing to {self.dir}; wait for it to finish"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
            # WAL while writing: readers go on reading while batches commit.
            self.execute("PRAGMA journal_mode=WAL")
            # Any embed still marked running died without finishing (we hold the lock now).
            self.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ? "
                "WHERE command = 'embed' AND status = 'running'",
                (now(),),
            )
            yield
        finally:
            self.leave_wal()
            os.close(fd)  # closing the descriptor releases the lock

    def leave_wal(self) -> None:
        """Checkpoint and switch the file back to a rollback journal, so that it opens from read-only
        media and from the stock sqlite3 shell without a writable ``-shm``, and a copy of the one
        file is the whole index. Skipped (the file stays valid in WAL mode) while another process
        has it open: switching needs the file to itself, and nobody should wait for that."""
        try:
            self.execute("PRAGMA busy_timeout = 0")
            self.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.execute("PRAGMA journal_mode=DELETE")
        except StoreError as exc:
            log.debug("index left in WAL mode: %s", exc)
        finally:
            with suppress(StoreError):
                self.execute("PRAGMA busy_timeout = 30000")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probe(self) -> None:
        """Walk every table's b-tree once (not the vector bytes): a damaged file fails here, before any write."""
        tables = self.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%'")
        for (name,) in tables:
            self.execute(f'SELECT count(*) FROM "{name}" NOT INDEXED')

    def _check_is_ours(self, create: bool) -> None:
        """Refuse, without writing a byte, a database that is not an embedlab index we can use."""
        current = self._user_version()
        latest = int(_migration_files()[-1].name[:3])
        if current > latest:
            raise StoreError(f"index schema v{current} is newer than this embedlab (v{latest}); upgrade embedlab")
        tables = {r[0] for r in self.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if current == 0 and not tables:
            if not create:
                raise StoreError(f"index {self.dir} holds no embeddings yet; run embed first")
            return
        if current == 0 or not tables >= _OUR_TABLES:
            raise StoreError(f"{self.path} is an SQLite database but not an embedlab index; use another folder")

    def _check_current(self) -> None:
        """A read-only index cannot be upgraded: it must already have this embedlab's schema."""
        current, latest = self._user_version(), int(_migration_files()[-1].name[:3])
        if current < latest:
            raise StoreError(
                f"index {self.dir} is read-only and has schema v{current}, but this embedlab needs v{latest}; "
                "run embed on a writable copy once to upgrade it"
            )

    def _user_version(self) -> int:
        return int(self.execute("PRAGMA user_version")[0][0])

    def _migrate(self) -> None:
        for file in _migration_files():
            version = int(file.name[:3])
            if version <= self._user_version():
                continue
            with self.transaction():
                if version <= self._user_version():  # another process migrated while we waited
                    continue
                for statement in _split_sql(file.read_text(encoding="utf-8")):
                    self.execute(statement)
                self.execute(f"PRAGMA user_version = {version}")

    # -- meta ---------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self.execute("SELECT key, value FROM meta"))

    def set_meta(self, **values: str) -> None:
        self.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", values.items())

    # -- runs ---------------------------------------------------------------------

    def start_run(self, command: str, **fields: Any) -> int:
        cols = ["command", "started_at", "status", *fields]
        values = [command, now(), "running", *(_jsonable(v) for v in fields.values())]
        self.execute(f"INSERT INTO runs({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})", values)
        return int(self.execute("SELECT last_insert_rowid()")[0][0])

    def finish_run(self, run_id: int, status: str, **fields: Any) -> None:
        sets = ["finished_at = ?", "status = ?", *(f"{k} = ?" for k in fields)]
        values = [now(), status, *(_jsonable(v) for v in fields.values()), run_id]
        self.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", values)

    def set_run_metrics(self, run_id: int, metrics: dict[str, Any]) -> None:
        self.execute("UPDATE runs SET metrics = ? WHERE id = ?", (_jsonable(metrics), run_id))

    # -- images -------------------------------------------------------------------

    def images_under(self, root: str) -> dict[str, ImageRow]:
        cols = ", ".join(_IMAGE_COLUMNS)
        rows = self.execute(f"SELECT {cols} FROM images WHERE root = ?", (root,))
        return {r[0]: ImageRow(*r) for r in rows}

    def image_row_for_sha(self, sha256: str) -> ImageRow | None:
        cols = ", ".join(_IMAGE_COLUMNS)
        rows = self.execute(
            f"SELECT {cols} FROM images WHERE sha256 = ? AND status = 'ok' ORDER BY path LIMIT 1", (sha256,)
        )
        return ImageRow(*rows[0]) if rows else None

    def upsert_images(self, rows: Iterable[ImageRow], run_id: int) -> None:
        cols = [*_IMAGE_COLUMNS, "run_id", "updated_at"]
        stamp = now()
        self.executemany(
            f"INSERT OR REPLACE INTO images({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            ([getattr(r, c) for c in _IMAGE_COLUMNS] + [run_id, stamp] for r in rows),
        )

    def delete_images(self, paths: Iterable[str]) -> None:
        self.executemany("DELETE FROM images WHERE path = ?", ([p] for p in paths))

    def ok_paths_by_sha(self) -> dict[str, list[str]]:
        """Every embedded content hash with the sorted paths that hold it."""
        return _group(self.execute("SELECT sha256, path FROM images WHERE status = 'ok' ORDER BY sha256, path"))

    def ok_paths_for(self, shas: Sequence[str]) -> dict[str, list[str]]:
        """``ok_paths_by_sha`` restricted to ``shas``: a few indexed reads instead of every row."""
        sql = "SELECT sha256, path FROM images WHERE status = 'ok' AND sha256 IN ({marks}) ORDER BY sha256, path"
        return _group(self._select_in(sql, shas))  # a hash's paths all fall in its own chunk, sorted

    def folders(self) -> dict[str, str | None]:
        """Indexed folders: root (their rows' path prefix) -> resolved real path (None: from before schema v9)."""
        return dict(self.execute("SELECT root, real_path FROM folders ORDER BY root"))

    def folder_counts(self) -> dict[str, int]:
        """Rows (readable or not) per indexed root."""
        return dict(self.execute("SELECT root, count(*) FROM images GROUP BY root"))

    def set_folder(self, root: str, real_path: str) -> None:
        """Record ``root`` as the folder at ``real_path`` (taking that path from any stale entry)."""
        self.execute("UPDATE folders SET real_path = NULL WHERE real_path = ? AND root != ?", (real_path, root))
        self.execute(
            "INSERT INTO folders(root, real_path, embedded_at) VALUES (?, ?, ?) "
            "ON CONFLICT(root) DO UPDATE SET real_path = excluded.real_path, embedded_at = excluded.embedded_at",
            (root, real_path, now()),
        )

    def forget_folder(self, root: str) -> int:
        """Drop a folder and every row under it (vectors are dropped by delete_orphan_vectors); returns the rows."""
        (count,) = self.execute("SELECT count(*) FROM images WHERE root = ?", (root,))[0]
        self.execute("DELETE FROM images WHERE root = ?", (root,))
        self.execute("DELETE FROM folders WHERE root = ?", (root,))
        return int(count)

    def roots(self) -> dict[str, str]:
        """path -> the --images-dir it was indexed from."""
        return dict(self.execute("SELECT path, root FROM images WHERE status = 'ok'"))

    def errors(self) -> list[tuple[str, str]]:
        return [(p, e) for p, e in self.execute("SELECT path, error FROM images WHERE status = 'error' ORDER BY path")]

    def series_slices(self) -> dict[str, tuple[str, str]]:
        """Per-path (series key, slice key) of DICOM images that have both (embedlab.dicom)."""
        rows = self.execute(
            "SELECT path, series_key, slice_key FROM images "
            "WHERE status = 'ok' AND series_key IS NOT NULL AND slice_key IS NOT NULL"
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    def quality(self) -> dict[str, dict[str, Any]]:
        """Per-path stored metrics and file mode, for judging and explaining anomalies."""
        keys: tuple[str, ...] = ("width", "height", "entropy", "contrast", "sharpness", "brightness", "mode")
        keys += ("colourfulness", "band", *STATISTICS)
        rows = self.execute(f"SELECT path, {', '.join(keys)} FROM images WHERE status = 'ok'")
        return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in rows}

    # -- vectors ------------------------------------------------------------------

    def embedded_shas(self) -> set[str]:
        return {r[0] for r in self.execute("SELECT sha256 FROM embeddings")}

    def checked_shas(self) -> set[str]:
        """Hashes whose vector was computed from bytes hashed as they were decoded (schema v5 on)."""
        return {r[0] for r in self.execute("SELECT sha256 FROM embeddings WHERE bytes_checked = 1")}

    def insert_vectors(self, shas: Sequence[str], vectors: np.ndarray, run_id: int) -> None:
        dim = int(vectors.shape[1])
        stamp = now()
        blobs = [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in vectors]
        self.executemany(
            "INSERT OR REPLACE INTO embeddings(sha256, dim, vector, run_id, created_at, bytes_checked) "
            "VALUES (?, ?, ?, ?, ?, 1)",
            ((s, dim, b, run_id, stamp) for s, b in zip(shas, blobs, strict=True)),
        )
        if self.vec_loaded and self._vec_table_exists():
            # vec0 rejects INSERT OR REPLACE: delete first.
            self.executemany(f"DELETE FROM {VEC_TABLE} WHERE sha256 = ?", ([s] for s in shas))
            self.executemany(f"INSERT INTO {VEC_TABLE}(sha256, embedding) VALUES (?, ?)", zip(shas, blobs, strict=True))
        else:
            self.set_meta(vec_index_stale="1")

    def delete_orphan_vectors(self) -> int:
        """Drop vectors no image points at any more; returns how many."""
        orphans = [
            r[0]
            for r in self.execute(
                "SELECT sha256 FROM embeddings WHERE sha256 NOT IN (SELECT sha256 FROM images WHERE status = 'ok')"
            )
        ]
        self.executemany("DELETE FROM embeddings WHERE sha256 = ?", ([s] for s in orphans))
        self.execute("DELETE FROM evidence WHERE sha256 NOT IN (SELECT sha256 FROM embeddings)")
        if self.vec_loaded and self._vec_table_exists():
            self.executemany(f"DELETE FROM {VEC_TABLE} WHERE sha256 = ?", ([s] for s in orphans))
        elif orphans:
            self.set_meta(vec_index_stale="1")
        return len(orphans)

    # -- same-picture evidence ------------------------------------------------------

    def shas_with_statistics(self) -> set[str]:
        """Contents whose readable rows all carry the pixel statistics of schema v8."""
        missing = " OR ".join(f"{key} IS NULL" for key in STATISTICS)
        rows = self.execute(f"SELECT sha256, MAX({missing}) FROM images WHERE status = 'ok' GROUP BY sha256")
        return {r[0] for r in rows if not r[1]}

    def shas_without_series(self) -> set[str]:
        """DICOM contents whose series was never read (rows older than schema v11; migration 012)."""
        rows = self.execute("SELECT DISTINCT sha256 FROM images WHERE status = 'ok' AND slice_key = '?'")
        return {r[0] for r in rows}

    def shas_with_evidence(self) -> set[str]:
        """Contents whose evidence the current evidence version computed."""
        return {r[0] for r in self.execute("SELECT sha256 FROM evidence WHERE version = ?", (EVIDENCE_VERSION,))}

    def insert_evidence(self, shas: Sequence[str], items: Sequence[Evidence]) -> None:
        rows = []
        for sha, ev in zip(shas, items, strict=True):
            thumb, points, descriptors = ev.to_blobs()
            rows.append((sha, EVIDENCE_VERSION, ev.width, ev.height, thumb, len(ev.points), points, descriptors))
        self.executemany(
            "INSERT OR REPLACE INTO evidence(sha256, version, width, height, thumb, keypoints, points, descriptors)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def evidence_for(self, shas: Sequence[str]) -> dict[str, Evidence]:
        """Stored evidence of these contents (of the current version); absent ones are left out."""
        rows = self._select_in(
            "SELECT sha256, width, height, thumb, points, descriptors FROM evidence"
            f" WHERE version = {EVIDENCE_VERSION} AND sha256 IN ({{marks}})",
            shas,
        )
        return {r[0]: Evidence.from_blobs(*r[1:]) for r in rows}

    def small_contents(self, side: int) -> set[str]:
        """Contents whose stored evidence describes a picture with a side shorter than ``side`` pixels."""
        rows = self.execute(
            f"SELECT sha256 FROM evidence WHERE version = {EVIDENCE_VERSION} AND min(width, height) < ?", (side,)
        )
        return {r[0] for r in rows}

    def _vec_table_exists(self) -> bool:
        return bool(self.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (VEC_TABLE,)))

    def ensure_vec_index(self, dim: int) -> None:
        """Create the vec0 table and bring it level with ``embeddings``."""
        if not self.vec_loaded:
            return
        with self.transaction():
            if not self._vec_table_exists():
                self.execute(
                    f"CREATE VIRTUAL TABLE {VEC_TABLE} USING vec0("
                    f"sha256 TEXT PRIMARY KEY, embedding float[{dim}] distance_metric=cosine)"
                )
                self.set_meta(vec_index_stale="1")
            if self.meta().get("vec_index_stale") == "1" or self._vec_count() != self._embedding_count():
                self._rebuild_vec_index()

    def vec_index_current(self) -> bool:
        """Whether the vec0 table exists and holds exactly the stored vectors (what a read-only index can use)."""
        return (
            self._vec_table_exists()
            and self.meta().get("vec_index_stale") != "1"
            and self._vec_count() == self._embedding_count()
        )

    def _vec_count(self) -> int:
        return int(self.execute(f"SELECT count(*) FROM {VEC_TABLE}")[0][0])

    def _embedding_count(self) -> int:
        return int(self.execute("SELECT count(*) FROM embeddings")[0][0])

    def _rebuild_vec_index(self) -> None:
        if self._embedding_count():
            log.info("rebuilding the sqlite-vec index from stored vectors")
        self.execute(f"DELETE FROM {VEC_TABLE}")
        self.executemany(
            f"INSERT INTO {VEC_TABLE}(sha256, embedding) VALUES (?, ?)",
            self.execute("SELECT sha256, vector FROM embeddings ORDER BY sha256"),
        )
        self.set_meta(vec_index_stale="0")

    def load_vectors(self, *, through_vec: bool) -> tuple[list[str], np.ndarray]:
        """All referenced vectors ordered by sha256, read via vec0 or the plain table."""
        source = VEC_TABLE if through_vec else "embeddings"
        column = "embedding" if through_vec else "vector"
        rows = self.execute(
            f"SELECT v.sha256, v.{column} FROM {source} AS v "
            "WHERE v.sha256 IN (SELECT sha256 FROM images WHERE status = 'ok') ORDER BY v.sha256"
        )
        dim = int(self.meta().get("dim", "0"))
        if not rows:
            return [], np.zeros((0, dim), np.float32)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        return [r[0] for r in rows], matrix.astype(np.float32)

    def knn(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """sqlite-vec KNN: (sha256, cosine distance) for the k nearest vectors."""
        blob = np.ascontiguousarray(query, dtype="<f4").tobytes()
        rows = self.execute(
            f"SELECT sha256, distance FROM {VEC_TABLE} WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (blob, min(k, KNN_MAX)),
        )
        return [(str(s), float(d)) for s, d in rows]

    def vectors_for(self, shas: Sequence[str]) -> np.ndarray:
        """Stored vectors for the given hashes, in that order."""
        found = dict(self._select_in("SELECT sha256, vector FROM embeddings WHERE sha256 IN ({marks})", shas))
        return np.stack([np.frombuffer(found[s], dtype="<f4") for s in shas]).astype(np.float32)

    def vectors_by_sha(self, shas: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored vectors of those hashes that have one (queries the index has already seen)."""
        rows = self._select_in("SELECT sha256, vector FROM embeddings WHERE sha256 IN ({marks})", shas)
        return {s: np.frombuffer(v, dtype="<f4").astype(np.float32) for s, v in rows}

    # -- report and info ---------------------------------------------------------

    def image_rows(self) -> dict[str, ImageRow]:
        """Every file row, readable or not, by path: sizes and dimensions for reports."""
        cols = ", ".join(_IMAGE_COLUMNS)
        return {r[0]: ImageRow(*r) for r in self.execute(f"SELECT {cols} FROM images ORDER BY path")}

    def runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The runs manifest, newest first, JSON columns decoded."""
        cols = [r[1] for r in self.execute("PRAGMA table_info(runs)")]
        sql = f"SELECT {', '.join(cols)} FROM runs ORDER BY id DESC"
        rows = self.execute(sql + " LIMIT ?", (limit,)) if limit is not None else self.execute(sql)
        out = []
        for row in rows:
            run = dict(zip(cols, row, strict=True))
            for key in ("versions", "counts", "timings", "metrics"):
                if isinstance(run.get(key), str):
                    run[key] = json.loads(run[key])
            out.append(run)
        return out

    def summary(self) -> dict[str, Any]:
        """Counts for `info`: files, failures, vectors, runs, schema version, bytes on disk."""
        ((ok, failed),) = self.execute(
            "SELECT coalesce(sum(status = 'ok'), 0), coalesce(sum(status = 'error'), 0) FROM images"
        )
        runs = dict(self.execute("SELECT command, count(*) FROM runs GROUP BY command ORDER BY command"))
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return {
            "images": int(ok),
            "failed": int(failed),
            "unique_vectors": self._embedding_count(),
            "folders": int(self.execute("SELECT count(DISTINCT root) FROM images")[0][0]),
            "runs": {str(k): int(v) for k, v in runs.items()},
            "schema_version": int(self.execute("PRAGMA user_version")[0][0]),
            "database_bytes": sum(f.stat().st_size for f in files if f.is_file()),
        }

    # -- bulk access for large indexes (ANN sidecar, streaming analyze) -------------

    def vector_count(self) -> int:
        """Vectors in `embeddings` (referenced or not)."""
        return self._embedding_count()

    def referenced_vector_count(self) -> int:
        """Vectors at least one readable image points at (what `analyze` sees)."""
        return int(
            self.execute(
                "SELECT count(*) FROM embeddings WHERE sha256 IN (SELECT sha256 FROM images WHERE status = 'ok')"
            )[0][0]
        )

    def vector_rowids(self) -> np.ndarray:
        """Sorted rowids of `embeddings`: the keys of the ANN sidecar.

        Unordered, so SQLite reads them from the small sha256 index instead of walking the
        table's leaf pages, which hold the vectors (1M rows: 1.7 s instead of 34 s)."""
        rows = self.execute("SELECT rowid FROM embeddings")
        return np.sort(np.array([r[0] for r in rows], dtype=np.int64))

    def iter_vectors_by_rowid(self, first: int, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rowids, float32 matrix) of `embeddings` from rowid ``first`` on, ``chunk`` rows at a time."""
        last = first - 1
        while True:
            rows = self.execute(
                "SELECT rowid, vector FROM embeddings WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, chunk)
            )
            if not rows:
                return
            last = int(rows[-1][0])
            yield np.array([r[0] for r in rows], dtype=np.int64), _matrix([r[1] for r in rows])

    def iter_referenced_vectors(self, chunk: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """What ``load_vectors(through_vec=False)`` returns, streamed ``chunk`` rows at a time,
        so a million vectors never sit in memory twice (as BLOBs and as a matrix)."""
        last = ""
        while True:
            rows = self.execute(
                "SELECT sha256, vector FROM embeddings WHERE sha256 > ? "
                "AND sha256 IN (SELECT sha256 FROM images WHERE status = 'ok') ORDER BY sha256 LIMIT ?",
                (last, chunk),
            )
            if not rows:
                return
            last = str(rows[-1][0])
            yield [str(r[0]) for r in rows], _matrix([r[1] for r in rows])

    def shas_for_rowids(self, rowids: Sequence[int]) -> list[str | None]:
        """sha256 of each `embeddings` rowid, in order (None for a rowid gone since)."""
        keys = [int(r) for r in rowids]
        found = dict(self._select_in("SELECT rowid, sha256 FROM embeddings WHERE rowid IN ({marks})", keys))
        return [found.get(r) for r in keys]

    # -- marks, patient keys, dedupe (schema v10) ----------------------------------

    def marks(self, kind: str = "not_duplicate") -> list[tuple[str, str, str]]:
        """Every mark of ``kind`` as (sha256 a, sha256 b, created_at), a < b, in order."""
        if not self.execute("SELECT 1 FROM sqlite_master WHERE name = 'marks'"):
            return []  # an index that could not be migrated (read-only) has none
        rows = self.execute("SELECT a, b, created_at FROM marks WHERE kind = ? ORDER BY a, b", (kind,))
        return [(str(a), str(b), str(t)) for a, b, t in rows]

    def add_marks(self, pairs: Iterable[tuple[str, str]], kind: str = "not_duplicate") -> int:
        """Store content pairs (either order); returns how many were new."""
        stamp = now()
        before = len(self.marks(kind))
        self.executemany(
            "INSERT OR IGNORE INTO marks(a, b, kind, created_at) VALUES (?, ?, ?, ?)",
            ((min(a, b), max(a, b), kind, stamp) for a, b in pairs),
        )
        return len(self.marks(kind)) - before

    def remove_marks(self, pairs: Iterable[tuple[str, str]], kind: str = "not_duplicate") -> int:
        """Drop content pairs (either order); returns how many were there."""
        before = len(self.marks(kind))
        self.executemany(
            "DELETE FROM marks WHERE a = ? AND b = ? AND kind = ?", ((min(a, b), max(a, b), kind) for a, b in pairs)
        )
        return before - len(self.marks(kind))

    def ok_rows_by_path(self, paths: Sequence[str]) -> dict[str, ImageRow]:
        """Readable rows of these paths (a few indexed reads)."""
        cols = ", ".join(_IMAGE_COLUMNS)
        rows = self._select_in(f"SELECT {cols} FROM images WHERE status = 'ok' AND path IN ({{marks}})", list(paths))
        return {r[0]: ImageRow(*r) for r in rows}

    def patient_salt(self, *, create: bool) -> str | None:
        """The index's salt for patient keys (hex), made on first use when ``create``."""
        salt = self.meta().get("patient_salt")
        if salt is None and create:
            salt = os.urandom(32).hex()
            self.set_meta(patient_salt=salt)
        return salt

    def patient_keys(self) -> dict[str, str | None]:
        """sha256 -> salted patient key (None: read, but the file has no identifier)."""
        return {str(s): k for s, k in self.execute("SELECT sha256, key FROM patient_keys")}

    def set_patient_keys(self, keys: dict[str, str | None]) -> None:
        self.executemany("INSERT OR REPLACE INTO patient_keys(sha256, key) VALUES (?, ?)", keys.items())

    def replace_image_rows(self, remove: Sequence[str], put: Sequence[ImageRow], run_id: int | None) -> None:
        """What a dedupe action or its undo did to files, in one transaction: rows of files that left
        their folder go, rows of files that now hold other bytes (links) or came back are written.
        Vectors stay (an undo finds them); the next embed drops the ones nothing points at."""
        with self.transaction():
            self.delete_images(remove)
            self.upsert_images(put, run_id or 0)


def _group(rows: Iterable[tuple[Any, ...]]) -> dict[str, list[str]]:
    """(sha256, path) rows, in order, as sha256 -> its paths."""
    out: dict[str, list[str]] = {}
    for sha, path in rows:
        out.setdefault(sha, []).append(path)
    return out


def _matrix(blobs: list[bytes]) -> np.ndarray:
    """Equal-length little-endian float32 BLOBs as one (rows, dim) matrix."""
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1).astype(np.float32)


def _migration_files() -> list[Path]:
    files = sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    if not files:
        raise StoreError(f"no schema migrations found in {MIGRATIONS_DIR}")
    return files


def _split_sql(script: str) -> list[str]:
    """Split a migration into whole statements, as SQLite's own parser sees them."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip() and not all(ln.strip().startswith("--") for ln in current.strip().splitlines()):
        raise StoreError("unterminated statement at the end of a migration")
    return statements


def _jsonable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
