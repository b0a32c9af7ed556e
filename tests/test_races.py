"""Files that change while `embed` runs: replaced, deleted or rewritten after planning, before decoding.

The race is made deterministic with the run's own log: planning ends, then the
model is loaded ("loading backbone"), then files are decoded. A log handler
acts on the folder at that record, so the files change exactly between the
hash taken by planning and the read for decoding. Every check compares the
index with a fresh index of the folder as it ends up.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from embedlab.images import sha256_file
from embedlab.indexer import embed_folder

from .conftest import skimage_image, small

_COLUMNS = (
    "path, sha256, size, mtime_ns, status, error, width, height, format, mode, entropy, contrast, sharpness, "
    "brightness, frames"
)


@contextmanager
def _after_planning(action: Callable[[], None]) -> Iterator[list[bool]]:
    """Run ``action`` once, when the run has planned and is about to load the model and decode."""
    fired: list[bool] = []

    class Hook(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if not fired and record.getMessage().startswith("loading backbone"):
                fired.append(True)
                action()

    logger = logging.getLogger("embedlab")
    handler, level = Hook(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield fired
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _state(index: Path) -> tuple[list[tuple[object, ...]], dict[str, bytes]]:
    """Rows (without run ids and times) and the vectors they point at."""
    conn = sqlite3.connect(index / "embedlab.db")
    rows = conn.execute(f"SELECT {_COLUMNS} FROM images ORDER BY path").fetchall()
    vectors = {
        s: bytes(v)
        for s, v in conn.execute(
            "SELECT sha256, vector FROM embeddings WHERE sha256 IN (SELECT sha256 FROM images WHERE status = 'ok')"
        )
    }
    conn.close()
    return rows, vectors


def _vector_of(index: Path, path: str) -> bytes:
    conn = sqlite3.connect(index / "embedlab.db")
    (blob,) = conn.execute(
        "SELECT e.vector FROM images i JOIN embeddings e ON e.sha256 = i.sha256 WHERE i.path = ?", (path,)
    ).fetchone()
    conn.close()
    return bytes(blob)


def _folder(work: Path) -> Path:
    """twin_a.png and twin_b.png hold the same bytes; other.png and last.png are other photos."""
    imgs = work / "imgs"
    imgs.mkdir()
    small(skimage_image("coffee"), 96).convert("RGB").save(imgs / "twin_a.png")
    shutil.copyfile(imgs / "twin_a.png", imgs / "twin_b.png")
    small(skimage_image("astronaut"), 80).convert("RGB").save(imgs / "other.png")
    small(skimage_image("coins"), 72).convert("RGB").save(imgs / "last.png")
    return imgs


def test_file_replaced_after_planning_never_poisons_its_twin(work: Path) -> None:
    imgs = _folder(work)
    with _after_planning(lambda: shutil.copyfile(imgs / "other.png", imgs / "twin_a.png")) as fired:
        embed_folder("./imgs", "./index")
    assert fired
    rows, _ = _state(work / "index")
    for path, sha, *_ in rows:  # every row is keyed by the bytes its file holds
        assert sha == sha256_file(work / path), path
    embed_folder("./imgs", "./clean")
    assert _state(work / "index") == _state(work / "clean")  # row for row, vector for vector
    assert _vector_of(work / "index", "imgs/twin_b.png") != _vector_of(work / "index", "imgs/other.png")
    again = embed_folder("./imgs", "./index")
    assert (again.unchanged, again.embedded_vectors) == (4, 0)


def test_file_deleted_after_planning_does_not_fail_its_twin(work: Path) -> None:
    imgs = _folder(work)
    with _after_planning(lambda: (imgs / "twin_a.png").unlink()) as fired:
        report = embed_folder("./imgs", "./index")
    assert fired and report.failed == 1
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    rows = dict(conn.execute("SELECT path, coalesce(error, status) FROM images").fetchall())
    conn.close()
    assert rows["imgs/twin_a.png"] == "cannot read: No such file or directory"
    assert rows["imgs/twin_b.png"] == "ok"
    embed_folder("./imgs", "./index")  # the gone file leaves the index
    embed_folder("./imgs", "./clean")
    assert _state(work / "index") == _state(work / "clean")


def test_churn_during_embed_ends_equal_to_a_fresh_index(work: Path) -> None:
    """Modified, deleted and replaced at once, with copies among them, in small batches."""
    imgs = _folder(work)
    small(skimage_image("horse"), 64).convert("RGB").save(imgs / "horse.png")
    shutil.copyfile(imgs / "other.png", imgs / "other_copy.png")
    shutil.copyfile(imgs / "last.png", imgs / "z_last_copy.png")

    def churn() -> None:
        small(skimage_image("chelsea"), 88).convert("RGB").save(imgs / "horse.png")  # modified
        (imgs / "other.png").unlink()  # deleted; other_copy.png keeps its bytes
        shutil.copyfile(imgs / "twin_b.png", imgs / "last.png")  # replaced by a copy of a twin

    with _after_planning(churn) as fired:
        embed_folder("./imgs", "./index", batch_size=2)
    assert fired
    embed_folder("./imgs", "./index", batch_size=2)  # the next run drops the deleted file
    embed_folder("./imgs", "./clean")
    assert _state(work / "index") == _state(work / "clean")


def _back_to_schema_4(conn: sqlite3.Connection) -> None:
    """Undo every migration after 004: drop the columns and tables they add (read from the files)."""
    for file in sorted((Path(__file__).resolve().parent.parent / "migrations").glob("*.sql"), reverse=True):
        if int(file.name[:3]) <= 4:
            continue
        for line in file.read_text().splitlines():
            words = line.split()
            if words[:2] == ["ALTER", "TABLE"] and words[3:5] == ["ADD", "COLUMN"]:
                conn.execute(f"ALTER TABLE {words[2]} DROP COLUMN {words[5].rstrip(';')}")
            elif words[:2] == ["CREATE", "TABLE"]:
                conn.execute(f"DROP TABLE {words[2]}")
    conn.execute("PRAGMA user_version = 4")


def test_rehash_repairs_rows_poisoned_by_an_older_embedlab(work: Path) -> None:
    """An index left by the old race: a twin holding another file's vector and another a copied failure.

    Such an index predates the record of which vectors were checked against the
    bytes they were computed from (schema v5), which is what it is made to look like here."""
    imgs = _folder(work)
    small(skimage_image("horse"), 64).convert("RGB").save(imgs / "horse.png")
    shutil.copyfile(imgs / "horse.png", imgs / "horse_copy.png")
    embed_folder("./imgs", "./index")
    embed_folder("./imgs", "./clean")
    conn = sqlite3.connect(work / "index" / "embedlab.db")
    other = conn.execute("SELECT sha256 FROM images WHERE path = 'imgs/other.png'").fetchone()[0]
    twin = conn.execute("SELECT sha256 FROM images WHERE path = 'imgs/twin_b.png'").fetchone()[0]
    with conn:
        conn.execute(
            "UPDATE embeddings SET vector = (SELECT vector FROM embeddings WHERE sha256 = ?) WHERE sha256 = ?",
            (other, twin),
        )
        conn.execute(
            "UPDATE images SET status = 'error', error = 'FileNotFoundError: [Errno 2] No such file or directory' "
            "WHERE path IN ('imgs/horse.png', 'imgs/horse_copy.png')"
        )
        conn.execute("DELETE FROM embeddings WHERE sha256 = (SELECT sha256 FROM images WHERE path = 'imgs/horse.png')")
        _back_to_schema_4(conn)  # the schema of the embedlab that made such rows
    conn.close()
    assert _state(work / "index") != _state(work / "clean")

    embed_folder("./imgs", "./index", rehash=True)
    assert _state(work / "index") == _state(work / "clean")
    confirmed = embed_folder("./imgs", "./index", rehash=True)  # now checked: nothing to embed again
    assert (confirmed.unchanged, confirmed.embedded_vectors) == (6, 0)
