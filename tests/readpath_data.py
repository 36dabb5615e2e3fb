"""Warehouse rows for read-path tests, built through the one record -> row mapping (``item_to_row``)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from sql.records import JobRecord, item_to_row

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
_counter = itertools.count(10_000_000)  # room below for "older" versions


def record(*, backend: str = "acme/torch-acme", level: str = "L4", pr: int = 100, sha: str = "a" * 40,
           workflow: str = "ci", job: str = "test", attempt: int = 1, leg: str = "",
           status: str = "completed", conclusion: str | None = "success", event: str | None = None,
           received: datetime | None = None, started: datetime | None = None,
           duration: float | None = 600.0, upstream: str = "pytorch/pytorch", **extra: Any) -> JobRecord:
    """One job record; the key follows the contract (one per attempt and leg)."""
    received = received or NOW - timedelta(hours=1)
    event = event or ("pull_request" if pr else "push")
    check_run = f"{pr}{attempt}{leg}{job}"
    return JobRecord(
        key=f"{backend}/{sha[:8]}-{pr}/{workflow}/{job}/{check_run}", downstream_repo=backend,
        event_type=event, delivery_id=f"{sha[:8]}-{pr}", upstream_repo=upstream, pr_number=pr, head_sha=sha,
        workflow_name=workflow, job_name=job, check_run_id=check_run, run_attempt=attempt, status=status,
        received_at=received, downstream_level=level, run_id=f"run-{pr}",
        workflow_url=extra.pop("workflow_url", f"https://github.com/{backend}/actions/runs/{pr}"),
        conclusion=conclusion if status == "completed" else None,
        started_at=started or received - timedelta(seconds=duration or 60),
        completed_at=received if status == "completed" else None,
        execution_time_s=duration if status == "completed" else None, **extra)


def row(rec: JobRecord, version: int | None = None, *, first_received: datetime | None = None) -> list[Any]:
    item = rec.present_fields()
    if first_received is not None:
        item["first_received_at"] = first_received.isoformat()
    return item_to_row(item, version=version or next(_counter))
