-- One PR's record rows (all head SHAs), defined once for the saved queries oot_pr_rows and oot_pr_results
-- (the same rows + also_failing_on_trunk, JSON API), read as oot_pr_rows(upstream_repo = ..., pr = ...), and
-- for the bot's and the PR page's read (sql/pr_results.py), which runs this body inline (same text, read
-- from this file: no view planning per call). Columns: the record's, plus
--   current_head_sha  the head from oot_pr_heads (webhooks) when known, else the SHA of the newest record
--                     (by first_received_at, then received_at: a late completion of an old SHA does not
--                     move the head back)
--   head_source       'webhook' or 'newest_result'
--   pr_labels         the PR's labels from the newest pull_request webhook ([] when none is known;
--                     sql/schema/016): the comment's L3 label lines
-- FINAL with deleted = 0 in WHERE (after the merge, or an older version would resurface); the PREWHERE is
-- on sort-key columns, identical for every version of a key, so it cannot change which version wins.
-- No ORDER BY here: a view's order is not kept by the query that reads it; the saved queries sort.
-- CREATE OR REPLACE: applied on every start, so a changed definition replaces the old one.
CREATE OR REPLACE VIEW oot_pr_rows AS
WITH
    (
        SELECT tuple(argMax(head_sha, updated_at), argMax(labels, updated_at))
        FROM oot_pr_heads FINAL
        WHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64} AND head_sha != ''
    ) AS webhook,
    webhook.1 AS webhook_head
SELECT
    key, downstream_repo, downstream_level, event_type, delivery_id, upstream_repo, pr_number,
    head_sha, workflow_name, job_name, check_run_id, run_id, run_attempt, workflow_url,
    artifact_url, status, conclusion, started_at, completed_at, queue_time_s, execution_time_s,
    tests_passed, tests_failed, tests_skipped, tests_total, first_received_at, received_at,
    if(webhook_head != '', webhook_head,
       argMax(head_sha, (first_received_at, received_at)) OVER ()) AS current_head_sha,
    if(webhook_head != '', 'webhook', 'newest_result') AS head_source,
    webhook.2 AS pr_labels
FROM oot_job_results FINAL
PREWHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64}
WHERE deleted = 0
