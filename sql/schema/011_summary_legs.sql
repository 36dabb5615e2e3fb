-- Read path (issue 4): a narrow copy of oot_job_results for the summary page (oot_summary), kept by a
-- materialized view on every insert (the embedded store and the replicator both insert into
-- oot_job_results, so both feed it). Same engine, version, tombstone and partition as the source, so FINAL
-- gives each record's newest version exactly as on the source (replays and older versions collapse, a
-- tombstone hides the record); a key never changes partition, so FINAL can stay inside a partition.
-- Why: the summary re-derives every job of the window from up to a million rows; on the source, FINAL has to
-- read and compare the (upstream_repo, pr_number, downstream_repo, key) strings of every row and the job
-- grouping hashes six strings per row. Here the sort key is integers and the job identity is precomputed:
--   job_id  cityHash64(downstream_repo, upstream_repo, pr_number, head_sha, workflow_name, job_name)
--   key_id  cityHash64(key): the record's identity; a 64-bit collision among a million keys has a
--           probability of about 3e-8 and would hide one record from the summary only (pages and the
--           PR view read the source table).
--   outcome 6 failure, 5 timed_out, 4 cancelled, 3 other conclusion, 1 success, 0 not completed (the
--           summary turns 0 into running or no report with its own clock)
-- Idempotent, in this order: (1) the table; (2) a full copy of the source, only while the copy is empty (the
-- first start with this file; later starts only count the copy's rows); (3) the view; (4) a catch-up of the
-- last day's source rows whose (key_id, version) the copy lacks: rows inserted between (2) and (3) by a
-- concurrent writer (a replicator on a server; `serve` applies the schema before it accepts results). Its
-- set is one day of keys, not the whole table, so restarts stay cheap. A duplicate collapses under FINAL.
CREATE TABLE IF NOT EXISTS oot_summary_legs
(
    upstream_repo     LowCardinality(String),
    pr_number         UInt64,
    job_id            UInt64,
    key_id            UInt64,
    downstream_repo   LowCardinality(String),
    downstream_level  LowCardinality(String),
    run_attempt       UInt32,
    outcome           UInt8,
    since             DateTime64(3, 'UTC'),
    duration_s        Float64,
    first_received_at DateTime64(3, 'UTC'),
    received_at       DateTime64(3, 'UTC'),
    version           UInt64,
    deleted           UInt8,
    INDEX idx_received_at received_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version, deleted)
PARTITION BY toYYYYMM(first_received_at)
ORDER BY (upstream_repo, pr_number, job_id, key_id);

CREATE OR REPLACE VIEW oot_summary_legs_source AS
SELECT
    upstream_repo,
    pr_number,
    cityHash64(downstream_repo, upstream_repo, pr_number, head_sha, workflow_name, job_name) AS job_id,
    cityHash64(key) AS key_id,
    downstream_repo,
    downstream_level,
    run_attempt,
    toUInt8(multiIf(status != 'completed', 0, conclusion = 'failure', 6, conclusion = 'timed_out', 5,
                    conclusion = 'cancelled', 4, conclusion = 'success', 1, 3)) AS outcome,
    coalesce(started_at, first_received_at) AS since,
    coalesce(execution_time_s,
             if(completed_at >= started_at, dateDiff('millisecond', started_at, completed_at) / 1000, NULL),
             -1) AS duration_s,
    first_received_at,
    received_at,
    version,
    deleted
FROM oot_job_results;

INSERT INTO oot_summary_legs
SELECT * FROM oot_summary_legs_source
WHERE (SELECT count() FROM oot_summary_legs) = 0;

-- The view's SELECT again: a materialized view fires on inserts into the table it reads, so it must
-- read oot_job_results itself, not the view (tests/test_saved_queries.py checks both give the same rows).
CREATE MATERIALIZED VIEW IF NOT EXISTS oot_summary_legs_mv TO oot_summary_legs AS
SELECT
    upstream_repo,
    pr_number,
    cityHash64(downstream_repo, upstream_repo, pr_number, head_sha, workflow_name, job_name) AS job_id,
    cityHash64(key) AS key_id,
    downstream_repo,
    downstream_level,
    run_attempt,
    toUInt8(multiIf(status != 'completed', 0, conclusion = 'failure', 6, conclusion = 'timed_out', 5,
                    conclusion = 'cancelled', 4, conclusion = 'success', 1, 3)) AS outcome,
    coalesce(started_at, first_received_at) AS since,
    coalesce(execution_time_s,
             if(completed_at >= started_at, dateDiff('millisecond', started_at, completed_at) / 1000, NULL),
             -1) AS duration_s,
    first_received_at,
    received_at,
    version,
    deleted
FROM oot_job_results;

INSERT INTO oot_summary_legs
SELECT * FROM oot_summary_legs_source
WHERE received_at >= (SELECT max(received_at) FROM oot_summary_legs) - INTERVAL 1 DAY
  AND (key_id, version) NOT IN (
      SELECT key_id, version FROM oot_summary_legs
      WHERE received_at >= (SELECT max(received_at) FROM oot_summary_legs) - INTERVAL 1 DAY)
