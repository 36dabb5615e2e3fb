-- Daily pass rate per backend and kind over the last {days} days ({repo}; '' = every backend), for the trends
-- page and each backend page's trends section. One row per (day, backend, kind) that has a job; a day without
-- one has no row (the renderer draws it as a gap). kind is 'pr' (the result carries a pull request) or
-- 'trunk' (push, nightly, periodic: pr_number 0).
-- The same final-attempt rules as oot_summary, on the same narrow copy (oot_summary_legs FINAL): a job is
-- (upstream repo, PR, head SHA, backend, workflow, job), its verdict the worst leg of its highest run_attempt,
-- its day the UTC day of its last receipt, the window the server's receive time. passed / failed / timed_out /
-- cancelled count jobs at their final attempt; total also counts jobs still running or without a verdict (the
-- pass rate, policy.pass_rate, is passed / (passed + failed + timed_out)). level is the backend's newest
-- record's. L1 (onboarding) is never shown. {now} is an ISO-8601 instant, or '' for the server's clock.
WITH
    bounds AS (
        SELECT
            coalesce(parseDateTime64BestEffortOrNull({now:String}, 3, 'UTC'), now64(3, 'UTC')) AS t_now,
            t_now - toIntervalDay({days:UInt32}) AS t_since
    ),
    -- MATERIALIZED: read once for both jobs and backends (the FINAL scan is most of the cost: one backend over
    -- 30 days at 1M rows 75 -> 51 ms CPU; every backend: the same). The only materialized CTE here: chDB
    -- fails at random when materialized CTEs read each other (see oot_backend_dashboard).
    legs AS MATERIALIZED (
        SELECT job_id, downstream_repo, downstream_level, pr_number, run_attempt, received_at,
               -- not completed (0) ranks as running (2): above success, below every other verdict, as in
               -- oot_summary (running and "no report" differ only by the clock, and neither is judged)
               if(outcome = 0, 2, outcome) AS severity
        FROM oot_summary_legs FINAL
        WHERE deleted = 0
          AND received_at >= (SELECT t_since FROM bounds)
          AND downstream_level != 'L1'
          AND ({repo:String} = '' OR downstream_repo = {repo:String})
    ),
    jobs AS (
        SELECT
            any(cityHash64(downstream_repo)) AS backend_id,
            any(pr_number) = 0 AS trunk,
            max(toUInt64(run_attempt) * 8 + severity) % 8 AS sev,
            toDate(max(received_at)) AS day
        FROM legs
        GROUP BY job_id
    ),
    backends AS (
        SELECT cityHash64(downstream_repo) AS id, any(downstream_repo) AS name,
               argMax(downstream_level, received_at) AS level
        FROM legs
        GROUP BY downstream_repo
    )
SELECT
    j.day AS day,
    any(b.name) AS backend,
    any(b.level) AS level,
    if(j.trunk, 'trunk', 'pr') AS kind,
    countIf(j.sev = 1) AS passed,
    countIf(j.sev = 6) AS failed,
    countIf(j.sev = 5) AS timed_out,
    countIf(j.sev = 4) AS cancelled,
    count() AS total
FROM jobs AS j
LEFT JOIN backends AS b ON b.id = j.backend_id
GROUP BY j.backend_id, j.trunk, j.day
ORDER BY backend, kind, day
-- As oot_summary: FINAL stays per partition, and the received_at skip index prunes under FINAL without the
-- exact-mode expansion (safe: a record's newer version is received later).
SETTINGS enable_materialized_cte = 1, do_not_merge_across_partitions_select_final = 1,
         use_skip_indexes_if_final_exact_mode = 0
