-- One row per displayed backend (L1 is stored, never shown) over the last {days} days, worst pass rate first.
-- Policies (the same as renderers/pr_view.py, which the PR page and the backend matrix use; a test checks
-- they agree): FINAL collapses replays/versions (same result merged or not); a job is (upstream repo, PR,
-- head SHA, backend, workflow, job) and its final attempt is its highest run_attempt; the rows at that
-- attempt are matrix legs and the job's verdict is its worst leg's; flaky = an earlier attempt failed
-- (failure / timed_out) and the final attempt passed; silence = in_progress and started (else first
-- received) more than {silence_hours} before now -> no report. Counts are jobs at final attempts; the
-- pass rate is computed by the renderer (policy.pass_rate) from successes / failures / timed_out, and the
-- ORDER BY uses the same ratio. Trunk (pr_number 0) is also counted apart. {now} is an ISO-8601 instant,
-- or '' for the server's clock. The window uses the server's receive time (downstream clocks are
-- untrusted); the per-day series buckets each job by its last receipt.
-- Verdicts are ranked by severity (pr_view.VERDICT_SEVERITY): 6 failure, 5 timed_out, 4 cancelled,
-- 3 no report, 2 running, 1 success; max((run_attempt, severity)) is then the final attempt's worst leg,
-- so one GROUP BY per job does it (speed: see docs/read-path.md).
WITH
    bounds AS (
        SELECT
            coalesce(parseDateTime64BestEffortOrNull({now:String}, 3, 'UTC'), now64(3, 'UTC')) AS t_now,
            t_now - toIntervalDay({days:UInt32}) AS t_since,
            t_now - toIntervalMillisecond(toInt64({silence_hours:Float64} * 3600000)) AS t_silent
    ),
    legs AS (
        SELECT
            downstream_repo, downstream_level, upstream_repo, pr_number, head_sha, workflow_name, job_name,
            run_attempt, received_at,
            coalesce(execution_time_s,
                     if(completed_at >= started_at, dateDiff('millisecond', started_at, completed_at) / 1000, NULL),
                     -1) AS duration_s,
            multiIf(status != 'completed',
                        if(coalesce(started_at, first_received_at) < (SELECT t_silent FROM bounds), 3, 2),
                    conclusion = 'failure', 6, conclusion = 'timed_out', 5, conclusion = 'cancelled', 4,
                    conclusion = 'success', 1,
                    3) AS severity
        FROM oot_job_results FINAL
        WHERE deleted = 0
          AND received_at >= (SELECT t_since FROM bounds)
          AND downstream_level != 'L1'
    ),
    jobs AS (
        SELECT
            any(downstream_repo) AS backend,
            any(pr_number) = 0 AS trunk,
            max((run_attempt, severity)).2 AS sev,
            max((run_attempt, duration_s)).2 AS duration,
            countIf(severity IN (5, 6)) > 0 AS any_failed_leg,
            max(received_at) AS job_at,
            argMax(downstream_level, received_at) AS job_level
        FROM legs
        -- A 64-bit hash of the job's identity groups ~3x faster than the six columns (strings); a collision
        -- among a million jobs has a probability of about 1e-8 and would merge two jobs' counts.
        GROUP BY cityHash64(downstream_repo, upstream_repo, pr_number, head_sha, workflow_name, job_name)
    )
SELECT * EXCEPT (series)
FROM
(
    SELECT
        backend AS downstream_repo,
        argMax(job_level, job_at) AS level,
        countIf(sev = 1) AS successes,
        countIf(sev = 6) AS failures,
        countIf(sev = 5) AS timed_out,
        countIf(sev = 4) AS cancelled,
        countIf(sev = 2) AS running,
        countIf(sev = 3) AS no_report,
        -- flaky: the final attempt passed, so any failed leg was on an earlier attempt
        countIf(sev = 1 AND any_failed_leg) AS flaky,
        count() AS total,
        if(countIf(duration >= 0) = 0, NULL, avgIf(duration, duration >= 0)) AS avg_duration_s,
        max(job_at) AS last_run,
        countIf(trunk AND sev = 1) AS trunk_successes,
        countIf(trunk AND sev = 6) AS trunk_failures,
        countIf(trunk AND sev = 5) AS trunk_timed_out,
        sumMap([toDate(job_at)], [toUInt64(sev = 1)], [toUInt64(sev IN (1, 5, 6))]) AS series,
        series.1 AS series_days,
        series.2 AS series_successes,
        series.3 AS series_judged
    FROM jobs
    GROUP BY backend
)
ORDER BY
    successes + failures + timed_out = 0,
    if(successes + failures + timed_out = 0, 0, successes / (successes + failures + timed_out)),
    failures + timed_out DESC,
    downstream_repo
SETTINGS do_not_merge_across_partitions_select_final = 1
