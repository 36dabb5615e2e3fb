-- Every backend that reported in the last {days} days, L1 (onboarding) included, with its level (its newest
-- record's) and its newest receipt: the summary's list of L1 names and its count of backends by level.
-- Read without FINAL from the narrow copy (oot_summary_legs): a record's newest version is also its latest
-- receipt, so the newest level is the same merged or not; a backend whose every record was deleted (a
-- tombstone) would still be listed until the parts merge. {now}: ISO-8601, or '' for the server's clock.
WITH
    bounds AS (
        SELECT
            coalesce(parseDateTime64BestEffortOrNull({now:String}, 3, 'UTC'), now64(3, 'UTC')) AS t_now,
            t_now - toIntervalDay({days:UInt32}) AS t_since
    )
SELECT
    downstream_repo,
    argMax(downstream_level, received_at) AS level,
    max(received_at) AS last_at
FROM oot_summary_legs
WHERE received_at >= (SELECT t_since FROM bounds) AND deleted = 0
GROUP BY downstream_repo
ORDER BY downstream_repo
