-- embedlab store, version 11: where a DICOM image lies in its series.
-- Slices of one series are different images however alike they look (neighbouring slices agree
-- at 64 px as well as a re-encoded copy does), so analyze never groups two files of one series
-- at two places. The series UID itself is not stored, only a short hash of it.

ALTER TABLE images ADD COLUMN series_key TEXT;  -- first 16 hex digits of SHA-256(SeriesInstanceUID)
ALTER TABLE images ADD COLUMN slice_key TEXT;   -- p:<mm along the slice normal> or l:<SliceLocation>
