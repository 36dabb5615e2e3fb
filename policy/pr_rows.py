"""Policies over a PR's raw result rows (``oot_pr_results``), shared by the SQL read path and the PR view:
a backend's level, a row's recency, a leg's verdict, and which backends the trunk baseline matters for."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from policy.verdicts import FAILED_VERDICTS, LEVELS_SHOWN_ON_PR, Verdict, verdict

LEVEL_ORDER = {level: index for index, level in enumerate(LEVELS_SHOWN_ON_PR)}  # L4 first
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def row_time(value: Any) -> datetime | None:
    """A row's timestamp (a datetime, or ISO-8601 text) as an aware UTC datetime; None when absent."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if value else None
    if not isinstance(value, datetime):
        return None
    zone = value.tzinfo
    if zone is None:
        return value.replace(tzinfo=UTC)
    return value if zone is UTC else value.astimezone(UTC)


def row_recency(row: Mapping[str, Any]) -> tuple[datetime, datetime]:
    """(first received, last received): newer rows sort later."""
    return (row_time(row.get("first_received_at")) or EPOCH, row_time(row.get("received_at")) or EPOCH)


def backend_levels(rows: list[Mapping[str, Any]], recency: list[tuple[datetime, datetime]]) -> dict[str, str]:
    """A backend's level is the one on its newest record (levels change as a backend matures)."""
    newest: dict[str, tuple[tuple[datetime, datetime], Mapping[str, Any]]] = {}
    for row, recent in zip(rows, recency, strict=True):
        repo = str(row["downstream_repo"])
        best = newest.get(repo)
        if best is None or recent > best[0]:
            newest[repo] = (recent, row)
    return {repo: str(row.get("downstream_level") or "") for repo, (_, row) in newest.items()}


@functools.lru_cache(maxsize=1024)
def cached_verdict(status: str, conclusion: str | None, silent: bool) -> Verdict:
    """``verdict``, memoised: a PR has a handful of (status, conclusion) pairs and hundreds of legs."""
    return verdict(status, conclusion, silent=silent)


def backends_needing_trunk(rows: Iterable[Mapping[str, Any]]) -> set[str]:
    """The backends whose "also failing on trunk" flags the PR view reads: shown ones (by level) with a
    job, at some head SHA, whose final attempt has a failed or timed-out leg (a job's verdict is its worst
    final leg's, and those are the worst). The view is the same whatever flags other rows carry, so the PR
    path (``sql.pr_results.fetch_pr_rows``) looks the trunk up for these backends only."""
    rows = list(rows)
    levels = backend_levels(rows, [row_recency(row) for row in rows])
    final: dict[tuple[str, str, str, str], tuple[int, bool]] = {}  # job -> (final attempt, a final leg failed)
    for row in rows:
        repo = str(row["downstream_repo"])
        if levels[repo] not in LEVEL_ORDER:
            continue
        job = (str(row["head_sha"]), repo, str(row["workflow_name"]), str(row["job_name"]))
        attempt = int(row.get("run_attempt") or 1)
        # A completed leg is never silent; silence only turns a leg in progress into "no report".
        conclusion = row.get("conclusion")
        failed = cached_verdict(str(row["status"]), str(conclusion) if conclusion else None,
                                False) in FAILED_VERDICTS
        best = final.get(job, (0, False))
        if attempt > best[0]:
            final[job] = (attempt, failed)
        elif attempt == best[0] and failed:
            final[job] = (attempt, True)
    return {job[1] for job, (_, failed) in final.items() if failed}
