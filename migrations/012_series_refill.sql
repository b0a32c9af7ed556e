-- embedlab store, version 12: DICOM rows written before version 11 were never read for their
-- series, so their empty series_key did not mean "no series". They are marked here
-- (slice_key '?': unknown) and the next embed decodes those contents once more to fill both
-- keys; until then analyze treats them as it did before (no series rule). A DICOM file without
-- series tags that version 11 wrote is marked too and costs one extra decode.

UPDATE images SET slice_key = '?'
WHERE status = 'ok' AND format = 'DICOM' AND series_key IS NULL AND slice_key IS NULL;
