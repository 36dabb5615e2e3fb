-- Every job record of one PR, for ALL its head SHAs (the renderer separates current from superseded),
-- plus the PR's current head SHA and, per row, whether the same workflow/job failed in the backend's
-- latest trunk run. FINAL collapses replays and versions whether or not parts have merged.
--   current_head_sha: oot_pr_heads (webhooks) when known, else the SHA of the newest record
--   head_source:      'webhook' or 'newest_result'
--   also_failing_on_trunk: 1 when, for this row's (downstream_repo, workflow_name), the newest completed
--     trunk delivery (pr_number 0, same upstream repo) has this job's final attempt failed/timed out.
WITH
    pr_rows AS (
        SELECT
            key, downstream_repo, downstream_level, event_type, delivery_id, upstream_repo, pr_number,
            head_sha, workflow_name, job_name, check_run_id, run_id, run_attempt, workflow_url,
            artifact_url, status, conclusion, started_at, completed_at, queue_time_s, execution_time_s,
            tests_passed, tests_failed, tests_skipped, tests_total, first_received_at, received_at
        FROM oot_job_results FINAL
        WHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64} AND deleted = 0
    ),
    head AS (
        SELECT
            if(webhook.n > 0, webhook.sha, newest.sha) AS current_head_sha,
            if(webhook.n > 0, 'webhook', 'newest_result') AS head_source
        FROM
        (
            SELECT count() AS n, argMax(head_sha, updated_at) AS sha
            FROM oot_pr_heads FINAL
            WHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64} AND head_sha != ''
        ) AS webhook
        CROSS JOIN
        (
            SELECT argMax(head_sha, (first_received_at, received_at)) AS sha FROM pr_rows
        ) AS newest
    ),
    trunk_rows AS (
        SELECT downstream_repo, workflow_name, job_name, delivery_id, run_attempt, conclusion,
               coalesce(completed_at, received_at) AS finished_at
        FROM oot_job_results FINAL
        WHERE upstream_repo = {upstream_repo:String} AND pr_number = 0 AND deleted = 0
          AND status = 'completed'
          AND downstream_repo IN (SELECT DISTINCT downstream_repo FROM pr_rows)
    ),
    latest_trunk AS (
        SELECT downstream_repo, workflow_name, argMax(delivery_id, finished_at) AS delivery_id
        FROM trunk_rows
        GROUP BY downstream_repo, workflow_name
    ),
    trunk_failing AS (
        SELECT downstream_repo, workflow_name, job_name,
               arrayExists(a -> a.1 = max(run_attempt) AND a.2 IN ('failure', 'timed_out'),
                           groupArray((run_attempt, conclusion))) AS failing
        FROM trunk_rows
        WHERE (downstream_repo, workflow_name, delivery_id) IN (SELECT downstream_repo, workflow_name, delivery_id
                                                                FROM latest_trunk)
        GROUP BY downstream_repo, workflow_name, job_name
    )
SELECT
    r.key AS key,
    r.downstream_repo AS downstream_repo,
    r.downstream_level AS downstream_level,
    r.event_type AS event_type,
    r.delivery_id AS delivery_id,
    r.upstream_repo AS upstream_repo,
    r.pr_number AS pr_number,
    r.head_sha AS head_sha,
    r.workflow_name AS workflow_name,
    r.job_name AS job_name,
    r.check_run_id AS check_run_id,
    r.run_id AS run_id,
    r.run_attempt AS run_attempt,
    r.workflow_url AS workflow_url,
    r.artifact_url AS artifact_url,
    r.status AS status,
    r.conclusion AS conclusion,
    r.started_at AS started_at,
    r.completed_at AS completed_at,
    r.queue_time_s AS queue_time_s,
    r.execution_time_s AS execution_time_s,
    r.tests_passed AS tests_passed,
    r.tests_failed AS tests_failed,
    r.tests_skipped AS tests_skipped,
    r.tests_total AS tests_total,
    r.first_received_at AS first_received_at,
    r.received_at AS received_at,
    head.current_head_sha AS current_head_sha,
    head.head_source AS head_source,
    toUInt8(coalesce(t.failing, 0)) AS also_failing_on_trunk
FROM pr_rows AS r
CROSS JOIN head
LEFT JOIN trunk_failing AS t
    ON t.downstream_repo = r.downstream_repo AND t.workflow_name = r.workflow_name AND t.job_name = r.job_name
ORDER BY r.head_sha, r.downstream_repo, r.workflow_name, r.job_name, r.run_attempt, r.check_run_id
SETTINGS join_use_nulls = 1
