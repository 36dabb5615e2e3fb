-- One PR's records, all head SHAs, + current_head_sha, head_source (view oot_pr_rows, sql/schema/014).
SELECT * FROM oot_pr_rows(upstream_repo = {upstream_repo:String}, pr = {pr:UInt64})
ORDER BY head_sha, downstream_repo, workflow_name, job_name, run_attempt, check_run_id
SETTINGS do_not_merge_across_partitions_select_final = 1, max_threads = 1, compile_expressions = 0,
         compile_aggregate_expressions = 0, compile_sort_description = 0
