-- embedlab store, version 5: what a row's data was read from.

-- 1: the vector was computed from bytes hashed as they were read for decoding, so
-- it belongs to sha256. NULL: from before version 5, when a file replaced between
-- hashing and decoding could leave another file's vector under a copy's hash;
-- `embed --rehash` embeds such vectors again.
ALTER TABLE embeddings ADD COLUMN bytes_checked INTEGER;
-- Status-change time (st_ctime_ns) at the scan: a failed file is tried again when
-- it moves (chmod, chown, rewrite), even if its size and mtime stay the same.
ALTER TABLE images ADD COLUMN ctime_ns INTEGER;
