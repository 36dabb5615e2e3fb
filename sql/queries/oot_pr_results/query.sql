-- One PR's records (all head SHAs) + current_head_sha, head_source, also_failing_on_trunk.
-- Definitions, shape and settings: docs/pr-view.md ("Query"). Comments are kept short on purpose: the
-- client tokenizes the whole text on every call (~0.4 ms per 1,000 characters).
WITH
    (
        SELECT argMax(head_sha, updated_at)
        FROM oot_pr_heads FINAL
        WHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64} AND head_sha != ''
    ) AS webhook_head,
    (
        SELECT groupArray((downstream_repo, workflow_name, job_name))
        FROM
        (
            SELECT downstream_repo, workflow_name, leg.1 AS job_name, max(leg.2) % 2 AS failing
            FROM
            (
                SELECT downstream_repo, workflow_name, max(d_fin) AS w_fin, groupArray((d_fin, legs)) AS deliveries
                FROM
                (
                    SELECT downstream_repo, workflow_name, delivery_id,
                           max(coalesce(completed_at, received_at)) AS d_fin,
                           groupArray((job_name, toUInt64(run_attempt) * 2
                                                 + (conclusion IN ('failure', 'timed_out')))) AS legs
                    FROM oot_job_results FINAL
                    WHERE upstream_repo = {upstream_repo:String} AND pr_number = 0 AND deleted = 0
                      AND status = 'completed'
                      AND downstream_repo IN (
                          SELECT downstream_repo FROM oot_job_results
                          WHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64})
                    GROUP BY downstream_repo, workflow_name, delivery_id
                )
                GROUP BY downstream_repo, workflow_name
            )
            ARRAY JOIN arrayFlatten(arrayMap(d -> d.2, arrayFilter(d -> d.1 = w_fin, deliveries))) AS leg
            GROUP BY downstream_repo, workflow_name, job_name
        )
        WHERE failing
    ) AS trunk_failing
SELECT
    key, downstream_repo, downstream_level, event_type, delivery_id, upstream_repo, pr_number,
    head_sha, workflow_name, job_name, check_run_id, run_id, run_attempt, workflow_url,
    artifact_url, status, conclusion, started_at, completed_at, queue_time_s, execution_time_s,
    tests_passed, tests_failed, tests_skipped, tests_total, first_received_at, received_at,
    if(webhook_head != '', webhook_head,
       argMax(head_sha, (first_received_at, received_at)) OVER ()) AS current_head_sha,
    if(webhook_head != '', 'webhook', 'newest_result') AS head_source,
    toUInt8(has(trunk_failing, (downstream_repo, workflow_name, job_name))) AS also_failing_on_trunk
FROM oot_job_results FINAL
PREWHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64}
WHERE deleted = 0
ORDER BY head_sha, downstream_repo, workflow_name, job_name, run_attempt, check_run_id
SETTINGS do_not_merge_across_partitions_select_final = 1, max_threads = 1, compile_expressions = 0,
         compile_aggregate_expressions = 0, compile_sort_description = 0
