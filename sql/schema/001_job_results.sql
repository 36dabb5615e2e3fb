-- One row per job record version. ReplacingMergeTree(version, deleted) keeps the newest version of each
-- key at merge time and drops tombstones; every read that needs one row per key uses FINAL or argMax.
-- ORDER BY starts with (upstream_repo, pr_number) for the PR lookup; the backend dashboard filters on
-- downstream_repo through the skip index. The partition key (month of first receipt) never changes for
-- a key, so all versions of a record meet in one partition and collapse.
CREATE TABLE IF NOT EXISTS oot_job_results
(
    key               String,
    downstream_repo   String,
    downstream_level  LowCardinality(String),
    event_type        LowCardinality(String),
    delivery_id       String,
    upstream_repo     LowCardinality(String),
    pr_number         UInt64,
    head_sha          String,
    ref               String,
    workflow_name     String,
    job_name          String,
    check_run_id      String,
    run_id            String,
    run_attempt       UInt32,
    workflow_url      String,
    artifact_url      String,
    schema_version    String,
    status            LowCardinality(String),
    conclusion        LowCardinality(String),
    started_at        Nullable(DateTime64(3, 'UTC')),
    completed_at      Nullable(DateTime64(3, 'UTC')),
    queue_time_s      Nullable(Float64),
    execution_time_s  Nullable(Float64),
    tests_passed      Nullable(UInt64),
    tests_failed      Nullable(UInt64),
    tests_skipped     Nullable(UInt64),
    tests_total       Nullable(UInt64),
    first_received_at DateTime64(3, 'UTC'),
    received_at       DateTime64(3, 'UTC'),
    version           UInt64,
    deleted           UInt8,
    INDEX idx_downstream_repo downstream_repo TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(version, deleted)
PARTITION BY toYYYYMM(first_received_at)
ORDER BY (upstream_repo, pr_number, downstream_repo, key)
