-- embedlab store, version 6: two more per-image statistics for anomaly flags (embedlab/anomaly.py).
-- NULL for images embedded before this version; their flags fall back to the file mode.
ALTER TABLE images ADD COLUMN colourfulness REAL;  -- Hasler-Suesstrunk colourfulness / 255 (0: grey)
ALTER TABLE images ADD COLUMN band REAL;           -- fraction of bottom rows in one flat colour not at other edges
