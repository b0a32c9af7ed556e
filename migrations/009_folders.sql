-- embedlab store, version 9: what an indexed folder is (embedlab/folders.py).
-- A folder is its resolved real path (symlinks followed, absolute), not the text it was typed
-- as: `embed --images-dir images` run from two working folders are two folders, and one folder
-- reached through a symlink and through its absolute path is one. `root` stays the prefix of its
-- images' paths (the folder as first named), so printed paths keep the user's spelling.
CREATE TABLE folders (
    root        TEXT PRIMARY KEY,       -- images.root of its rows
    real_path   TEXT UNIQUE,            -- resolved path at the last embed; NULL: indexed before version 9
    embedded_at TEXT                    -- last embed of this folder
);
INSERT INTO folders(root) SELECT DISTINCT root FROM images;
