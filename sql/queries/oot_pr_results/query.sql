-- oot_pr_rows + also_failing_on_trunk (views in sql/schema/013, 014); settings: docs/pr-view.md ("Query").
-- The PR's backends narrow the trunk scan (a filter on the view's grouping key, pushed down to its read).
SELECT *, toUInt8((downstream_repo, workflow_name, job_name) IN (
    SELECT downstream_repo, workflow_name, job_name
    FROM oot_trunk_failing(upstream_repo = {upstream_repo:String})
    WHERE downstream_repo IN (SELECT downstream_repo FROM oot_job_results
                              WHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64}))
    ) AS also_failing_on_trunk
FROM oot_pr_rows(upstream_repo = {upstream_repo:String}, pr = {pr:UInt64})
ORDER BY head_sha, downstream_repo, workflow_name, job_name, run_attempt, check_run_id
SETTINGS do_not_merge_across_partitions_select_final = 1, max_threads = 1, compile_expressions = 0,
         compile_aggregate_expressions = 0, compile_sort_description = 0
