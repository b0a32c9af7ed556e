-- embedlab store, version 1.
-- Plain tables stay readable from the stock sqlite3 shell; the sqlite-vec
-- `vec_index` virtual table is created by the store once the dimension is
-- known, and is always rebuildable from `embeddings`.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per file seen under an embedded folder.
CREATE TABLE images (
    path        TEXT PRIMARY KEY,          -- as the user named it, e.g. assets/images/017.png
    root        TEXT NOT NULL,             -- the --images-dir it was found under
    sha256      TEXT NOT NULL,             -- content hash; joins embeddings
    size        INTEGER NOT NULL,          -- bytes
    mtime_ns    INTEGER NOT NULL,
    width       INTEGER,
    height      INTEGER,
    format      TEXT,                      -- PNG, JPEG, ...
    mode        TEXT,                      -- Pillow mode before conversion: L, RGB, I;16, P, CMYK ...
    entropy     REAL,                      -- bits, grey-level histogram (0..8)
    contrast    REAL,                      -- std of grey levels / 255
    sharpness   REAL,                      -- variance of the Laplacian on a 256 px grey thumbnail
    brightness  REAL,                      -- mean grey level / 255
    status      TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error       TEXT,                      -- why the file could not be embedded
    run_id      INTEGER,                   -- run that last (re)scanned the file
    updated_at  TEXT NOT NULL
);
CREATE INDEX images_sha256 ON images (sha256);
CREATE INDEX images_root ON images (root);

-- Source of truth for vectors: L2-normalised float32, little endian.
CREATE TABLE embeddings (
    sha256     TEXT PRIMARY KEY,
    dim        INTEGER NOT NULL,
    vector     BLOB NOT NULL,
    run_id     INTEGER,
    created_at TEXT NOT NULL
);

-- One row per command run.
CREATE TABLE runs (
    id              INTEGER PRIMARY KEY,
    command         TEXT NOT NULL,
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    status          TEXT NOT NULL,          -- running, ok, failed
    backbone        TEXT,
    weights_sha256  TEXT,
    dim             INTEGER,
    seed            INTEGER,
    batch_size      INTEGER,
    images_dir      TEXT,
    versions        TEXT,                   -- JSON: embedlab, python, torch, torchvision, timm, sqlite, sqlite-vec
    counts          TEXT,                   -- JSON: seen, new, reused, removed, failed ...
    timings         TEXT                    -- JSON: seconds per phase
);
