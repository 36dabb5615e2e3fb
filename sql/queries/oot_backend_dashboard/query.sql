-- One backend's records ({repo}; '' = every backend at once, for publishing) over the last {days} days, one
-- row per record: one page of the backend's PRs (most recently active first, skipping {offset}, then {max_prs};
-- all their head SHAs) and its {max_trunk} newest trunk commits (pr_number 0: push / nightly / periodic / any
-- other event without a PR), only those of event type {event} when it is not ''. L1 (onboarding) records are
-- never displayed. {now} is an ISO-8601 instant, or '' for the server's clock.
-- The renderer applies the per-job policies (final attempt, legs, flaky, silence) with the same code as the
-- PR view; this query adds, per row, the PR's current head SHA (oot_pr_heads from webhooks when known, else
-- the SHA of the PR's newest record from any backend) so older commits can be marked superseded, the PR's
-- title and author from the same webhooks ('' when unknown), the numbers of PRs and (of {event}) trunk
-- commits of the backend in the window (the page says when it shows fewer, and pages), and trunk_kinds:
-- per trunk event type of the backend in the window, (event type, newest commit, its time, commits, its
-- upstream repository).
-- Speed: choosing the PRs / commits needs no FINAL (the newest version of a record also has its newest
-- receive time, so "most recent" is the same merged or not); FINAL then reads only those PRs' granules
-- through the primary key (upstream_repo, pr_number, downstream_repo, ...).
-- Only `candidates` is MATERIALIZED: chDB fails about two runs in three (LOGICAL_ERROR "reading from
-- materialized CTE before its materialization completed") when a materialized CTE reads another one.
WITH
    bounds AS (
        SELECT
            coalesce(parseDateTime64BestEffortOrNull({now:String}, 3, 'UTC'), now64(3, 'UTC')) AS t_now,
            t_now - toIntervalDay({days:UInt32}) AS t_since
    ),
    candidates AS MATERIALIZED (
        SELECT downstream_repo, upstream_repo, pr_number, if(pr_number = 0, head_sha, '') AS trunk_sha,
               if(pr_number = 0, event_type, '') AS trunk_event, max(received_at) AS last_at
        FROM oot_job_results
        WHERE ({repo:String} = '' OR downstream_repo = {repo:String}) AND deleted = 0
          AND downstream_level != 'L1' AND received_at >= (SELECT t_since FROM bounds)
        GROUP BY downstream_repo, upstream_repo, pr_number, trunk_sha, trunk_event
    ),
    recent_prs AS (
        SELECT downstream_repo, upstream_repo, pr_number FROM candidates WHERE pr_number != 0
        ORDER BY last_at DESC, pr_number DESC, upstream_repo LIMIT {offset:UInt32}, {max_prs:UInt32} BY downstream_repo
    ),
    trunk_commits AS (
        -- a commit may carry several event types (a push and a nightly on one SHA): one row per commit
        SELECT downstream_repo, upstream_repo, trunk_sha AS head_sha, max(last_at) AS commit_at FROM candidates
        WHERE pr_number = 0 AND ({event:String} = '' OR trunk_event = {event:String})
        GROUP BY downstream_repo, upstream_repo, trunk_sha
    ),
    recent_trunk AS (
        SELECT downstream_repo, upstream_repo, head_sha FROM trunk_commits
        ORDER BY commit_at DESC, head_sha LIMIT {max_trunk:UInt32} BY downstream_repo
    ),
    kinds AS (
        SELECT downstream_repo, trunk_event, argMax(trunk_sha, last_at) AS newest_sha, max(last_at) AS newest_at,
               count() AS commits, argMax(upstream_repo, last_at) AS newest_upstream
        FROM candidates WHERE pr_number = 0
        GROUP BY downstream_repo, trunk_event
    ),
    totals AS (
        SELECT c.downstream_repo AS downstream_repo, c.prs_total AS prs_total, t.trunk_total AS trunk_total,
               k.trunk_kinds AS trunk_kinds
        FROM (SELECT downstream_repo, countIf(pr_number != 0) AS prs_total FROM candidates GROUP BY downstream_repo) AS c
        LEFT JOIN (SELECT downstream_repo, count() AS trunk_total FROM trunk_commits GROUP BY downstream_repo) AS t
            ON t.downstream_repo = c.downstream_repo
        LEFT JOIN (SELECT downstream_repo,
                          arraySort(x -> x.1, groupArray((trunk_event, newest_sha, newest_at, commits, newest_upstream))) AS trunk_kinds
                   FROM kinds GROUP BY downstream_repo) AS k
            ON k.downstream_repo = c.downstream_repo
    ),
    rows AS (
        SELECT
            downstream_repo, downstream_level, event_type, upstream_repo, pr_number, head_sha, ref,
            workflow_name, job_name, check_run_id, run_id, run_attempt, workflow_url, artifact_url, status,
            conclusion, started_at, completed_at, queue_time_s, execution_time_s, tests_passed, tests_failed,
            tests_skipped, tests_total, first_received_at, received_at
        FROM oot_job_results FINAL
        WHERE ({repo:String} = '' OR downstream_repo = {repo:String})
          AND ((upstream_repo, pr_number, downstream_repo) IN (SELECT upstream_repo, pr_number, downstream_repo
                                                              FROM recent_prs)
               OR (pr_number = 0 AND ({event:String} = '' OR event_type = {event:String})
                   AND (upstream_repo, downstream_repo, head_sha)
                       IN (SELECT upstream_repo, downstream_repo, head_sha FROM recent_trunk)))
          AND deleted = 0 AND downstream_level != 'L1' AND received_at >= (SELECT t_since FROM bounds)
    ),
    webhook_heads AS (
        SELECT upstream_repo, pr_number, argMax(head_sha, updated_at) AS sha, argMax(title, updated_at) AS title,
               argMax(author, updated_at) AS author
        FROM oot_pr_heads FINAL
        WHERE head_sha != '' AND (upstream_repo, pr_number) IN (SELECT DISTINCT upstream_repo, pr_number FROM recent_prs)
        GROUP BY upstream_repo, pr_number
    ),
    newest_heads AS (
        SELECT upstream_repo, pr_number, argMax(head_sha, (first_received_at, received_at)) AS sha
        FROM oot_job_results FINAL
        WHERE deleted = 0 AND (upstream_repo, pr_number) IN (SELECT DISTINCT upstream_repo, pr_number FROM recent_prs)
        GROUP BY upstream_repo, pr_number
    )
SELECT
    r.downstream_repo AS downstream_repo, r.downstream_level AS downstream_level, r.event_type AS event_type,
    r.upstream_repo AS upstream_repo, r.pr_number AS pr_number, r.head_sha AS head_sha,
    r.ref AS ref, r.workflow_name AS workflow_name, r.job_name AS job_name,
    r.check_run_id AS check_run_id, r.run_id AS run_id, r.run_attempt AS run_attempt,
    r.workflow_url AS workflow_url, r.artifact_url AS artifact_url, r.status AS status,
    r.conclusion AS conclusion, r.started_at AS started_at, r.completed_at AS completed_at,
    r.queue_time_s AS queue_time_s, r.execution_time_s AS execution_time_s, r.tests_passed AS tests_passed,
    r.tests_failed AS tests_failed, r.tests_skipped AS tests_skipped, r.tests_total AS tests_total,
    r.first_received_at AS first_received_at, r.received_at AS received_at,
    if(r.pr_number = 0, r.head_sha, coalesce(w.sha, n.sha, r.head_sha)) AS current_head_sha,
    coalesce(w.title, '') AS pr_title,
    coalesce(w.author, '') AS pr_author,
    t.prs_total AS prs_total,
    coalesce(t.trunk_total, 0) AS trunk_total,
    t.trunk_kinds AS trunk_kinds
FROM rows AS r
LEFT JOIN totals AS t ON t.downstream_repo = r.downstream_repo
LEFT JOIN webhook_heads AS w ON w.upstream_repo = r.upstream_repo AND w.pr_number = r.pr_number
LEFT JOIN newest_heads AS n ON n.upstream_repo = r.upstream_repo AND n.pr_number = r.pr_number
ORDER BY r.downstream_repo, r.pr_number = 0, r.received_at DESC, r.workflow_name, r.job_name, r.run_attempt, r.check_run_id
-- FINAL stays per partition (a key never changes partition) and the received_at skip index prunes under FINAL
-- without the exact-mode expansion (safe: a newer version is received later; see oot_summary).
SETTINGS join_use_nulls = 1, enable_materialized_cte = 1, do_not_merge_across_partitions_select_final = 1,
         use_skip_indexes_if_final_exact_mode = 0
