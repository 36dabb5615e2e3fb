-- The trunk baseline, defined once (issue 4, docs/pr-view.md): the (downstream_repo, workflow_name, job_name)
-- of an upstream repo whose final attempt failed or timed out in their backend's latest trunk delivery of
-- that workflow (rows with pr_number = 0; a delivery's finish time is its legs' latest completion, else
-- receipt). Read as oot_trunk_failing(upstream_repo = ...) by the saved queries oot_pr_results and
-- oot_trunk_failing; the PR path (sql/pr_results.py) runs this body inline (same text, read from this file).
-- FINAL with deleted = 0: the same set merged or not.
-- Shape (measured, docs/pr-view.md): plain aggregation, no window; per delivery its finish time and its legs
-- (job names, codes run_attempt * 2 + failed); per (backend, workflow) maxMapArgMax keeps the deliveries that
-- finished last (every one tied at the maximum) and each job's highest code among them: odd = failing.
-- CREATE OR REPLACE, not IF NOT EXISTS: applied on every start, so a changed definition replaces the old
-- one (a view holds no data; the replace is atomic for readers).
CREATE OR REPLACE VIEW oot_trunk_failing AS
SELECT downstream_repo, workflow_name,
       arrayJoin(arrayFilter((job, code) -> code % 2 = 1,
                             (maxMapArgMax(jobs, codes, d_fin) AS latest).1, latest.2)) AS job_name
FROM
(
    SELECT downstream_repo, workflow_name, delivery_id,
           max(coalesce(completed_at, received_at)) AS d_fin,
           groupArray(job_name) AS jobs,
           groupArray(toUInt64(run_attempt) * 2 + (conclusion IN ('failure', 'timed_out'))) AS codes
    FROM oot_job_results FINAL
    WHERE upstream_repo = {upstream_repo:String} AND pr_number = 0 AND deleted = 0
      AND status = 'completed'
    GROUP BY downstream_repo, workflow_name, delivery_id
)
GROUP BY downstream_repo, workflow_name
