-- embedlab store, version 4: per-run metrics.
-- JSON with what a run measured (throughput, latency, peak memory, sizes), so a
-- team can compare runs from the index alone; `--metrics-out FILE` writes the same object.
ALTER TABLE runs ADD COLUMN metrics TEXT;
