-- The relay's health from its canaries ({repos}: downstream repositories whose jobs are meant to fail, be
-- cancelled or time out; OOT_HUD_CANARY_BACKENDS). One row per canary and per one of its {prs} newest PRs in the
-- last {days} days (a canary without a PR there: one row, pr_number 0), with the canary's newest receipt of any
-- kind (last_report, NULL: nothing in the window) and, per PR, its jobs at the PR's newest head SHA (the
-- canary's own newest) at their final attempt, worst leg: expected / pending / unexpected, and the names of the
-- unexpected ones (at most 10).
-- Expected outcome (policy/canary.py, the same table; tests/test_canary.py checks both): a job whose name
-- holds xfail / xcancel / xtimeout (ASCII case ignored) is expected to conclude failure / cancelled /
-- timed_out, any other job success. Pending: not completed, started (else first received, never later than
-- our receipt) less than {silence_hours} ago; one silent for longer never came back: unexpected.
-- Names match exactly as the relay reports them (the bloom filter on downstream_repo then skips granules).
-- {now}: ISO-8601, or '' for the server's clock; windows use our receive time.
WITH
    bounds AS (
        SELECT
            coalesce(parseDateTime64BestEffortOrNull({now:String}, 3, 'UTC'), now64(3, 'UTC')) AS t_now,
            t_now - toIntervalDay({days:UInt32}) AS t_since,
            t_now - toIntervalMillisecond(toInt64({silence_hours:Float64} * 3600000)) AS t_silent
    ),
    -- MATERIALIZED: read once for recent, legs, prs and last (the only materialized CTE: chDB fails at random when
    -- materialized CTEs read each other); 1M rows, a 10,000-row canary: 153 -> 82 ms CPU, an absent one 60 -> 48
    seen AS MATERIALIZED (
        -- no FINAL: a record's newest version is also its latest receipt
        SELECT downstream_repo, upstream_repo, pr_number, max(received_at) AS last_at
        FROM oot_job_results
        WHERE has({repos:Array(String)}, downstream_repo) AND deleted = 0
          AND received_at >= (SELECT t_since FROM bounds)
        GROUP BY downstream_repo, upstream_repo, pr_number
    ),
    recent AS (
        SELECT downstream_repo, upstream_repo, pr_number, last_at FROM seen WHERE pr_number != 0
        ORDER BY last_at DESC, pr_number DESC, upstream_repo LIMIT {prs:UInt32} BY downstream_repo
    ),
    legs AS (
        SELECT
            downstream_repo, upstream_repo, pr_number, head_sha, workflow_name, job_name, run_attempt, received_at,
            multiIf(
                status = 'completed',
                if((positionCaseInsensitive(job_name, 'xfail') > 0 AND conclusion = 'failure')
                   OR (positionCaseInsensitive(job_name, 'xcancel') > 0 AND conclusion = 'cancelled')
                   OR (positionCaseInsensitive(job_name, 'xtimeout') > 0 AND conclusion = 'timed_out')
                   OR (positionCaseInsensitive(job_name, 'xfail') = 0 AND positionCaseInsensitive(job_name, 'xcancel') = 0
                       AND positionCaseInsensitive(job_name, 'xtimeout') = 0 AND conclusion = 'success'), 0, 2),
                least(coalesce(started_at, first_received_at), received_at) < (SELECT t_silent FROM bounds), 2,
                1) AS code
        FROM oot_job_results FINAL
        WHERE has({repos:Array(String)}, downstream_repo) AND deleted = 0
          AND received_at >= (SELECT t_since FROM bounds)
          AND (upstream_repo, pr_number, downstream_repo) IN (SELECT upstream_repo, pr_number, downstream_repo FROM recent)
    ),
    heads AS (
        SELECT downstream_repo, upstream_repo, pr_number, argMax(head_sha, received_at) AS head
        FROM legs GROUP BY downstream_repo, upstream_repo, pr_number
    ),
    jobs AS (
        -- the final attempt's worst leg: the maximum of run_attempt * 4 + code
        SELECT l.downstream_repo AS downstream_repo, l.upstream_repo AS upstream_repo, l.pr_number AS pr_number,
               any(l.head_sha) AS head_sha, l.job_name AS job_name,
               max(toUInt64(l.run_attempt) * 4 + l.code) % 4 AS code
        FROM legs AS l
        INNER JOIN heads AS h
            ON h.downstream_repo = l.downstream_repo AND h.upstream_repo = l.upstream_repo
           AND h.pr_number = l.pr_number AND h.head = l.head_sha
        GROUP BY l.downstream_repo, l.upstream_repo, l.pr_number, l.workflow_name, l.job_name
    ),
    prs AS (
        SELECT j.downstream_repo AS downstream_repo, j.upstream_repo AS upstream_repo, j.pr_number AS pr_number,
               any(j.head_sha) AS head_sha, any(r.last_at) AS pr_at, count() AS jobs,
               countIf(j.code = 0) AS expected, countIf(j.code = 1) AS pending, countIf(j.code = 2) AS unexpected,
               arraySlice(arraySort(groupArrayIf(j.job_name, j.code = 2)), 1, 10) AS unexpected_jobs
        FROM jobs AS j
        INNER JOIN recent AS r
            ON r.downstream_repo = j.downstream_repo AND r.upstream_repo = j.upstream_repo AND r.pr_number = j.pr_number
        GROUP BY j.downstream_repo, j.upstream_repo, j.pr_number
    ),
    last AS (
        SELECT downstream_repo, max(last_at) AS last_report FROM seen GROUP BY downstream_repo
    )
SELECT
    c.canary AS canary,
    if(l.downstream_repo = '', NULL, l.last_report) AS last_report,
    p.upstream_repo AS upstream_repo,
    p.pr_number AS pr_number,
    p.head_sha AS head_sha,
    if(p.pr_number = 0, NULL, p.pr_at) AS pr_at,
    p.jobs AS jobs,
    p.expected AS expected,
    p.pending AS pending,
    p.unexpected AS unexpected,
    p.unexpected_jobs AS unexpected_jobs
FROM (SELECT DISTINCT arrayJoin({repos:Array(String)}) AS canary) AS c
LEFT JOIN last AS l ON l.downstream_repo = c.canary
LEFT JOIN prs AS p ON p.downstream_repo = c.canary
ORDER BY canary, pr_at DESC, pr_number DESC
-- FINAL stays per partition (a key never changes partition) and the received_at skip index prunes under FINAL
-- without the exact-mode expansion (safe: a newer version is received later; see oot_summary).
SETTINGS enable_materialized_cte = 1, do_not_merge_across_partitions_select_final = 1,
         use_skip_indexes_if_final_exact_mode = 0
