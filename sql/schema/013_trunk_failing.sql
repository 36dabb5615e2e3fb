-- The trunk baseline, defined once (issue 4, docs/pr-view.md): the (downstream_repo, workflow_name, job_name)
-- of an upstream repo whose final attempt failed or timed out in their backend's latest trunk delivery of
-- that workflow (rows with pr_number = 0; a delivery's finish time is its legs' latest completion, else
-- receipt). Read as oot_trunk_failing(upstream_repo = ...) by the saved queries oot_pr_results and
-- oot_trunk_failing; the PR path (sql/pr_results.py) runs this body inline (same text, read from this file).
--
-- It reads oot_trunk_results, a narrow copy of the trunk rows kept by a materialized view on every insert
-- into oot_job_results (the embedded store and the replicator both insert there, so both feed it): sorted by
-- (upstream_repo, downstream_repo, key), with each leg's finish time (fin) and code (run_attempt * 2 +
-- failed) precomputed. Same engine, version, tombstone and partition as the source, so FINAL gives each
-- record's newest version exactly as on the source. Measured on the 1M-row bench (docs/pr-view.md, round 6):
-- every backend's set 26.5 -> 21.4 ms, the trunk fingerprint 4.3 -> 3.1 ms; each insert pays for one more
-- view (~1-3 ms a statement; the embedded store batches its inserts, the replicator inserts per batch).
-- Idempotent, in this order (as sql/schema/011): the table; a full copy while the copy is empty; the
-- materialized view; a catch-up of the last day's rows a concurrent writer inserted in between.
CREATE TABLE IF NOT EXISTS oot_trunk_results
(
    upstream_repo     LowCardinality(String),
    downstream_repo   LowCardinality(String),
    workflow_name     String,
    delivery_id       String,
    job_name          String,
    key               String,
    fin               DateTime64(3, 'UTC'),
    code              UInt64,
    completed         UInt8,
    first_received_at DateTime64(3, 'UTC'),
    received_at       DateTime64(3, 'UTC'),
    version           UInt64,
    deleted           UInt8
)
ENGINE = ReplacingMergeTree(version, deleted)
PARTITION BY toYYYYMM(first_received_at)
ORDER BY (upstream_repo, downstream_repo, key)
SETTINGS index_granularity = 1024;

CREATE OR REPLACE VIEW oot_trunk_results_source AS
SELECT
    upstream_repo, downstream_repo, workflow_name, delivery_id, job_name, key,
    coalesce(completed_at, received_at) AS fin,
    toUInt64(run_attempt) * 2 + (conclusion IN ('failure', 'timed_out')) AS code,
    toUInt8(status = 'completed') AS completed,
    first_received_at, received_at, version, deleted
FROM oot_job_results
WHERE pr_number = 0;

INSERT INTO oot_trunk_results
SELECT * FROM oot_trunk_results_source
WHERE (SELECT count() FROM oot_trunk_results) = 0;

-- The view's SELECT again: a materialized view fires on inserts into the table it reads, so it must read
-- oot_job_results itself, not the view (tests/test_trunk_cache.py checks both give the same rows).
CREATE MATERIALIZED VIEW IF NOT EXISTS oot_trunk_results_mv TO oot_trunk_results AS
SELECT
    upstream_repo, downstream_repo, workflow_name, delivery_id, job_name, key,
    coalesce(completed_at, received_at) AS fin,
    toUInt64(run_attempt) * 2 + (conclusion IN ('failure', 'timed_out')) AS code,
    toUInt8(status = 'completed') AS completed,
    first_received_at, received_at, version, deleted
FROM oot_job_results
WHERE pr_number = 0;

INSERT INTO oot_trunk_results
SELECT * FROM oot_trunk_results_source
WHERE received_at >= (SELECT max(received_at) FROM oot_trunk_results) - INTERVAL 1 DAY
  AND (key, version) NOT IN (
      SELECT key, version FROM oot_trunk_results
      WHERE received_at >= (SELECT max(received_at) FROM oot_trunk_results) - INTERVAL 1 DAY);

-- FINAL with deleted = 0: the same set merged or not.
-- Shape (measured, docs/pr-view.md): plain aggregation, no window; per delivery its finish time and its legs
-- (job names, codes); per (backend, workflow) maxMapArgMax keeps the deliveries that finished last (every
-- one tied at the maximum) and each job's highest code among them: odd = failing.
-- CREATE OR REPLACE, not IF NOT EXISTS: applied on every start, so a changed definition replaces the old
-- one (a view holds no data; the replace is atomic for readers).
CREATE OR REPLACE VIEW oot_trunk_failing AS
SELECT downstream_repo, workflow_name,
       arrayJoin(arrayFilter((job, code) -> code % 2 = 1,
                             (maxMapArgMax(jobs, codes, d_fin) AS latest).1, latest.2)) AS job_name
FROM
(
    SELECT downstream_repo, workflow_name, delivery_id,
           max(fin) AS d_fin,
           groupArray(job_name) AS jobs,
           groupArray(code) AS codes
    FROM oot_trunk_results FINAL
    WHERE upstream_repo = {upstream_repo:String} AND deleted = 0 AND completed
    GROUP BY downstream_repo, workflow_name, delivery_id
)
GROUP BY downstream_repo, workflow_name
