-- Jobs failing on trunk: final attempt failed/timed out in the backend's latest trunk delivery (sql/schema/013).
SELECT downstream_repo, workflow_name, job_name
FROM oot_trunk_failing(upstream_repo = {upstream_repo:String})
ORDER BY downstream_repo, workflow_name, job_name
SETTINGS do_not_merge_across_partitions_select_final = 1, max_threads = 1, compile_expressions = 0,
         compile_aggregate_expressions = 0, compile_sort_description = 0
