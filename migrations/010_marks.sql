-- embedlab store, version 10: what people decided about the groups, and split bookkeeping.
-- Keyed by content (sha256), never by path: a mark follows the picture through renames,
-- moves and re-embedding, and is simply unused while no indexed file holds that content.

-- "These two are not the same picture": analyze, dedupe and report never group them again.
CREATE TABLE marks (
    a           TEXT NOT NULL,             -- sha256 of one content ...
    b           TEXT NOT NULL,             -- ... and of the other, a < b
    kind        TEXT NOT NULL DEFAULT 'not_duplicate',
    created_at  TEXT NOT NULL,
    PRIMARY KEY (a, b, kind),
    CHECK (a < b)
);

-- A salted hash of a DICOM file's patient identifier, written only by `leaks --patient-key`.
-- The identifier itself is never stored; the salt is meta.patient_salt, made once per index,
-- so the same patient gives the same key within one index and nothing across indexes.
CREATE TABLE patient_keys (
    sha256      TEXT PRIMARY KEY,          -- the content the key was read from
    key         TEXT                       -- HMAC-SHA256(salt, identifier), hex; NULL: the file has none
);
