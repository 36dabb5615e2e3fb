-- One row per displayed backend (L1 is stored, never shown) over the last {days} days, worst pass rate first.
-- Policies (the same as renderers/pr_view.py, which the PR page and the backend matrix use; a test checks
-- they agree): FINAL collapses replays/versions (same result merged or not); a job is (upstream repo, PR,
-- head SHA, backend, workflow, job) and its final attempt is its highest run_attempt; the rows at that
-- attempt are matrix legs and the job's verdict is its worst leg's; flaky = an earlier attempt failed
-- (failure / timed_out) and the final attempt passed; silence = in_progress and started (else first
-- received) more than {silence_hours} before now -> no report. Counts are jobs at final attempts; the
-- pass rate is computed by the renderer (policy.pass_rate) from successes / failures / timed_out, and the
-- ORDER BY uses the same ratio. Trunk (pr_number 0) is also
-- counted apart. {now} is an ISO-8601 instant, or '' for the server's clock. The window uses the server's
-- receive time (downstream clocks are untrusted); the per-day series buckets final jobs by their last receipt.
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
                     if(completed_at >= started_at, dateDiff('millisecond', started_at, completed_at) / 1000, NULL))
                AS duration_s,
            multiIf(status != 'completed',
                        if(coalesce(started_at, first_received_at) < (SELECT t_silent FROM bounds),
                           'no_report', 'running'),
                    conclusion IN ('success', 'failure', 'timed_out', 'cancelled'), conclusion,
                    'no_report') AS verdict
        FROM oot_job_results FINAL
        WHERE deleted = 0
          AND received_at >= (SELECT t_since FROM bounds)
          AND downstream_level != 'L1'
    ),
    attempts AS (
        -- One row per attempt of a job: its verdict is its worst leg's (same order as the PR view).
        SELECT
            downstream_repo, upstream_repo, pr_number, head_sha, workflow_name, job_name, run_attempt,
            multiIf(countIf(verdict = 'failure') > 0, 'failure', countIf(verdict = 'timed_out') > 0, 'timed_out',
                    countIf(verdict = 'cancelled') > 0, 'cancelled', countIf(verdict = 'no_report') > 0, 'no_report',
                    countIf(verdict = 'running') > 0, 'running', 'success') AS attempt_verdict,
            max(duration_s) AS attempt_duration_s,
            max(received_at) AS attempt_at, argMax(downstream_level, received_at) AS attempt_level
        FROM legs
        GROUP BY downstream_repo, upstream_repo, pr_number, head_sha, workflow_name, job_name, run_attempt
    ),
    jobs AS (
        -- One row per job: its final (highest) attempt decides.
        SELECT
            downstream_repo, pr_number = 0 AS trunk,
            argMax(attempt_verdict, run_attempt) AS v,
            argMax(attempt_duration_s, run_attempt) AS duration_s,
            countIf(attempt_verdict IN ('failure', 'timed_out')) > 0 AS any_failed_attempt,
            max(attempt_at) AS job_at, argMax(attempt_level, attempt_at) AS job_level
        FROM attempts
        GROUP BY downstream_repo, upstream_repo, pr_number, head_sha, workflow_name, job_name
    ),
    daily AS (
        SELECT
            downstream_repo, toDate(job_at) AS day,
            countIf(v = 'success') AS s, countIf(v = 'failure') AS f, countIf(v = 'timed_out') AS t,
            countIf(v = 'cancelled') AS c, countIf(v = 'running') AS r, countIf(v = 'no_report') AS nr,
            -- flaky: an earlier attempt failed and the final one passed (a final failure is no flake)
            countIf(v = 'success' AND any_failed_attempt) AS flaky,
            sum(coalesce(duration_s, 0)) AS dur_sum, count(duration_s) AS dur_n,
            countIf(trunk AND v = 'success') AS trunk_s, countIf(trunk AND v = 'failure') AS trunk_f,
            countIf(trunk AND v = 'timed_out') AS trunk_t,
            max(job_at) AS day_at, argMax(job_level, job_at) AS day_level
        FROM jobs
        GROUP BY downstream_repo, day
    )
SELECT
    downstream_repo,
    argMax(day_level, day_at) AS level,
    sum(s) AS successes,
    sum(f) AS failures,
    sum(t) AS timed_out,
    sum(c) AS cancelled,
    sum(r) AS running,
    sum(nr) AS no_report,
    sum(flaky) AS flaky,
    sum(s + f + t + c + r + nr) AS total,
    if(sum(dur_n) = 0, NULL, sum(dur_sum) / sum(dur_n)) AS avg_duration_s,
    max(day_at) AS last_run,
    sum(trunk_s) AS trunk_successes,
    sum(trunk_f) AS trunk_failures,
    sum(trunk_t) AS trunk_timed_out,
    arraySort(groupArray(day)) AS series_days,
    arrayMap(x -> x.2, arraySort(groupArray((day, s)))) AS series_successes,
    arrayMap(x -> x.2, arraySort(groupArray((day, s + f + t)))) AS series_judged
FROM daily
GROUP BY downstream_repo
ORDER BY
    sum(s + f + t) = 0,
    if(sum(s + f + t) = 0, 0, sum(s) / sum(s + f + t)),
    sum(f + t) DESC,
    downstream_repo
