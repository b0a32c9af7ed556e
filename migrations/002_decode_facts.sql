-- embedlab store, version 2: what decoding learnt beyond size and mode.
-- DICOM tags kept here are acquisition facts only; no patient tag is ever stored.

ALTER TABLE images ADD COLUMN frames INTEGER;     -- frames or pages in the file; only frame 0 is embedded
ALTER TABLE images ADD COLUMN modality TEXT;      -- DICOM Modality (CT, MR, US, ...)
ALTER TABLE images ADD COLUMN body_part TEXT;     -- DICOM Body Part Examined
