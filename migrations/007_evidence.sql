-- embedlab store, version 7: same-picture evidence per content (embedlab/evidence.py).
-- What `analyze` and `search` verify near-duplicate candidates with, so they never
-- re-read image files: a 64x64 grey thumbnail (uint8, row-major) and ORB keypoints
-- (x/width, y/height as float16 pairs; 32-byte descriptors), keyed like embeddings.
CREATE TABLE evidence (
    sha256       TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,      -- evidence.EVIDENCE_VERSION that computed the row
    width        INTEGER NOT NULL,      -- of the decoded picture the evidence describes
    height       INTEGER NOT NULL,
    thumb        BLOB NOT NULL,
    keypoints    INTEGER NOT NULL,      -- how many keypoints the two blobs below hold
    points       BLOB NOT NULL,
    descriptors  BLOB NOT NULL
);
