-- The backend page's summary cards, beside the verdict counts (oot_daily_pass_rate, kind 'pr'): one row per
-- backend ({repo}; '' = every backend, for publishing) over its PR results of the last {days} days (trunk runs
-- have their own section): distinct PRs, and the average queue and execution time over every job execution
-- (each attempt and leg) that reported one. L1 is never shown. {now}: ISO-8601, or '' for the server's clock.
WITH
    bounds AS (
        SELECT
            coalesce(parseDateTime64BestEffortOrNull({now:String}, 3, 'UTC'), now64(3, 'UTC')) AS t_now,
            t_now - toIntervalDay({days:UInt32}) AS t_since
    )
SELECT
    downstream_repo,
    uniqExact(upstream_repo, pr_number) AS prs,
    avg(queue_time_s) AS avg_queue_s,
    avgIf(coalesce(execution_time_s,
                   if(completed_at >= started_at, dateDiff('millisecond', started_at, completed_at) / 1000, NULL)),
          status = 'completed') AS avg_execution_s
FROM oot_job_results FINAL
WHERE ({repo:String} = '' OR downstream_repo = {repo:String})
  AND deleted = 0 AND pr_number != 0 AND downstream_level != 'L1'
  AND received_at >= (SELECT t_since FROM bounds)
GROUP BY downstream_repo
ORDER BY downstream_repo
-- As oot_backend_dashboard: FINAL stays per partition and the received_at skip index prunes under FINAL (safe:
-- a record's newer version is received later). Measured against argMax over each key: FINAL is cheaper.
SETTINGS do_not_merge_across_partitions_select_final = 1, use_skip_indexes_if_final_exact_mode = 0
