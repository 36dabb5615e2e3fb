-- One row per displayed backend (L1 is stored, never shown) over the last {days} days, worst pass rate first.
-- Policies (the same as renderers/pr_view.py, which the PR page and the backend matrix use; a test checks
-- they agree): FINAL collapses replays/versions (same result merged or not); a job is (upstream repo, PR,
-- head SHA, backend, workflow, job) and its final attempt is its highest run_attempt; the rows at that
-- attempt are matrix legs and the job's verdict is its worst leg's; flaky = an earlier attempt failed
-- (failure / timed_out) and the final attempt passed; silence = in_progress and started (else first
-- received) more than {silence_hours} before now -> no report. Counts are jobs at final attempts; the
-- pass rate is computed by the renderer (policy.pass_rate) from successes / failures / timed_out, and the
-- ORDER BY uses the same ratio. The counts cover PR and trunk jobs; trunk (pr_number 0) is also counted apart
-- (trunk_*), so PR-only figures are the difference; the per-day series (pr_series_*) counts PR jobs only. {now} is an ISO-8601 instant,
-- or '' for the server's clock. The window uses the server's receive time (downstream clocks are
-- untrusted); the per-day series buckets each job by its last receipt.
-- Verdicts are ranked by severity (pr_view.VERDICT_SEVERITY): 6 failure, 5 timed_out, 4 cancelled,
-- 3 no report, 2 running, 1 success; the maximum of (run_attempt, severity) is then the final attempt's
-- worst leg, so one GROUP BY per job does it (speed: see docs/read-path.md).
-- It reads oot_summary_legs (sql/schema/011_summary_legs.sql): the same records, narrow, kept on insert by a
-- materialized view, with the job identity hashed and the completed verdict precomputed (outcome: 6..1 as
-- above, 0 = not completed, ranked here as running or no report by the silence threshold).
WITH
    bounds AS (
        SELECT
            coalesce(parseDateTime64BestEffortOrNull({now:String}, 3, 'UTC'), now64(3, 'UTC')) AS t_now,
            t_now - toIntervalDay({days:UInt32}) AS t_since,
            t_now - toIntervalMillisecond(toInt64({silence_hours:Float64} * 3600000)) AS t_silent
    ),
    legs AS (
        SELECT
            job_id, downstream_repo, downstream_level, pr_number, run_attempt, received_at, duration_s,
            -- silence counts from the downstream's start, but never from later than our own latest receipt
            -- (a downstream clock ahead of ours must not keep a job "running" for ever)
            if(outcome = 0, if(least(since, received_at) < (SELECT t_silent FROM bounds), 3, 2), outcome) AS severity
        FROM oot_summary_legs FINAL
        WHERE deleted = 0
          AND received_at >= (SELECT t_since FROM bounds)
          AND downstream_level != 'L1'
    ),
    jobs AS (
        -- The final attempt's worst leg and longest leg: max over run_attempt * 8 + severity (and
        -- run_attempt * 2^32 + seconds + 1, 0 = unknown) are integer maxima, far cheaper than tuples.
        SELECT
            any(cityHash64(downstream_repo)) AS backend,  -- an integer state is far cheaper than a name
            any(pr_number) = 0 AS trunk,
            max(toUInt64(run_attempt) * 8 + severity) % 8 AS sev,
            toInt64(max(toUInt64(run_attempt) * 4294967296 + toUInt32(least(duration_s + 1, 4294967295)))
                    % 4294967296) - 1 AS duration,
            countIf(severity IN (5, 6)) > 0 AS any_failed_leg,
            max(received_at) AS job_at
        FROM legs
        -- job_id is a 64-bit hash of the job's identity (groups ~3x faster than the six strings); a collision
        -- among a million jobs has a probability of about 1e-8 and would merge two jobs' counts.
        GROUP BY job_id
    ),
    daily AS (
        SELECT
            backend, toDate(job_at) AS day,
            countIf(sev = 1) AS s, countIf(sev = 6) AS f, countIf(sev = 5) AS t, countIf(sev = 4) AS c,
            countIf(sev = 2) AS r, countIf(sev = 3) AS nr,
            -- flaky: the final attempt passed, so any failed leg was on an earlier attempt
            countIf(sev = 1 AND any_failed_leg) AS flaky,
            sumIf(duration, duration >= 0) AS dur_sum, countIf(duration >= 0) AS dur_n,
            countIf(trunk AND sev = 1) AS trunk_s, countIf(trunk AND sev = 6) AS trunk_f,
            countIf(trunk AND sev = 5) AS trunk_t, countIf(trunk AND sev = 4) AS trunk_c,
            countIf(trunk AND sev = 2) AS trunk_r, countIf(trunk AND sev = 3) AS trunk_nr,
            countIf(trunk AND sev = 1 AND any_failed_leg) AS trunk_flaky,
            max(job_at) AS day_at
        FROM jobs
        GROUP BY backend, day
    ),
    backends AS (
        -- each backend's name and level (its newest record's): one more pass over legs, cheaper than
        -- carrying a name and an argMax state through ~600,000 job groups
        SELECT cityHash64(downstream_repo) AS id, any(downstream_repo) AS repo_name,
               argMax(downstream_level, received_at) AS repo_level
        FROM legs
        GROUP BY downstream_repo
    )
SELECT
    any(b.repo_name) AS downstream_repo,
    any(b.repo_level) AS level,
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
    sum(trunk_c) AS trunk_cancelled,
    sum(trunk_r) AS trunk_running,
    sum(trunk_nr) AS trunk_no_report,
    sum(trunk_flaky) AS trunk_flaky,
    -- the per-day series of PR jobs only (the trunk has its own rate beside it)
    arraySort(groupArrayIf(day, s + f + t > trunk_s + trunk_f + trunk_t)) AS pr_series_days,
    arrayMap(x -> x.2, arraySort(groupArrayIf((day, s - trunk_s), s + f + t > trunk_s + trunk_f + trunk_t)))
        AS pr_series_successes,
    arrayMap(x -> x.2, arraySort(groupArrayIf((day, s + f + t - trunk_s - trunk_f - trunk_t),
                                              s + f + t > trunk_s + trunk_f + trunk_t))) AS pr_series_judged
FROM daily
LEFT JOIN backends AS b ON b.id = daily.backend
GROUP BY backend
ORDER BY
    successes + failures + timed_out = 0,
    if(successes + failures + timed_out = 0, 0, successes / (successes + failures + timed_out)),
    failures + timed_out DESC,
    downstream_repo
-- do_not_merge_across_partitions_select_final: a key never changes partition, so FINAL stays per partition.
-- use_skip_indexes_if_final_exact_mode = 0: let the received_at minmax index skip granules under FINAL without
-- re-adding every granule whose key range intersects a kept one (that expansion read all 121 of 121 granules
-- for days=1). Safe because a record's newer version (or tombstone) is also received later: a skipped
-- granule (all received before the window) can only hold versions the window excludes anyway, never the
-- newest version of a record that is in the window. 1 day: ~170 -> ~50 ms CPU, 7 days: ~220 -> ~120 ms.
SETTINGS do_not_merge_across_partitions_select_final = 1, use_skip_indexes_if_final_exact_mode = 0
