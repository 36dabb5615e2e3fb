-- Read path (issue 4): a min/max skip index on the receive time, so the pages' 1- and 7-day windows skip
-- granules of older results. PR numbers grow with time, so granules of the (upstream_repo, pr_number, ...)
-- order hold narrow time ranges. Safe with FINAL: a record's newest version has its latest receive time, so
-- a granule skipped for "older than the window" holds no version that passes the filter.
-- Idempotent; parts written before this index get it when they merge.
ALTER TABLE oot_job_results ADD INDEX IF NOT EXISTS idx_received_at received_at TYPE minmax GRANULARITY 1
