-- The head SHA GitHub reports for each PR (from pull_request webhooks), newest update wins.
-- Queries prefer it over "the SHA of the newest result" when deciding a PR's current commit.
CREATE TABLE IF NOT EXISTS oot_pr_heads
(
    upstream_repo    LowCardinality(String),
    pr_number        UInt64,
    head_sha         String,
    state            LowCardinality(String),
    base_ref         String,
    installation_id  UInt64,
    updated_at       DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (upstream_repo, pr_number)
