"""Warehouse rows for read-path tests, built through the one record -> row mapping (``item_to_row``)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from sql.records import JobRecord, item_to_row
from sql.warehouse import Warehouse

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


# ---- random histories: the policies' SQL against their Python references -----------------------------------

HISTORY_UPSTREAM = "pytorch/pytorch"
BACKENDS = [("acme/a", "L4"), ("acme/b", "L4"), ("beta/c", "L3"), ("gamma/d", "L2"), ("delta/e", "L1")]
WORKFLOWS = ["ci", "nightly"]
JOBS = ["build", "test", "test-dist"]
CONCLUSIONS = ["success", "success", "failure", "timed_out", "cancelled", "skipped"]
PRS = (100, 101, 102, 103)


def random_history(warehouse: Warehouse, seed: int) -> list[JobRecord]:
    """Trunk deliveries and PRs of two upstream repos, every record in one of four parts (merged or not),
    with replays, newer versions, tombstones, re-runs, matrix legs, in-progress and silent legs, two heads,
    equal finish times (a minute grid) and a webhook head for one PR. Returns the records that are live
    (the newest version of each key, tombstoned ones gone), for references of the policies in Python."""
    rng = random.Random(seed)
    parts: list[list[list[Any]]] = [[] for _ in range(4)]
    live: dict[tuple[str, str], JobRecord] = {}  # by (upstream, key): the sort key has both
    version = 1_000

    def put(rec: JobRecord, *, deleted: bool = False) -> None:
        nonlocal version
        version += rng.randint(1, 5)
        parts[rng.randrange(len(parts))].append(item_to_row(rec.present_fields(), deleted=deleted, version=version))
        if deleted:
            live.pop((rec.upstream_repo, rec.key), None)
        else:
            live[(rec.upstream_repo, rec.key)] = rec

    def jobs(pr: int, sha: str, backend: str, level: str, workflow: str, at: datetime, upstream: str,
             clean: bool) -> None:
        for job in rng.sample(JOBS, rng.randint(1, 3)):
            for attempt in range(1, rng.choice([1, 1, 2]) + 1):
                for leg in rng.choice([[""], ["a", "b"]]):
                    status = rng.choice(["completed"] * 6 + ["in_progress"])
                    rec = record(pr=pr, sha=sha, backend=backend, level=level, workflow=workflow, job=job,
                                 attempt=attempt, leg=leg, status=status, upstream=upstream,
                                 conclusion="success" if clean else rng.choice(CONCLUSIONS),
                                 received=at + timedelta(minutes=rng.choice([0, 0, 1]) * attempt))
                    put(rec)
                    if rng.random() < 0.15:
                        put(rec)  # replay
                    if rng.random() < 0.05:
                        put(rec, deleted=True)

    for upstream in (HISTORY_UPSTREAM, "other/upstream"):
        for _ in range(rng.randint(20, 35)):
            backend, _level = rng.choice(BACKENDS)
            at = NOW - timedelta(minutes=10 * rng.randint(0, 12))
            jobs(0, f"{rng.getrandbits(160):040x}", backend, "L4", rng.choice(WORKFLOWS), at, upstream, False)
        for pr in PRS:
            shas = [f"{rng.getrandbits(160):040x}" for _ in range(rng.choice([1, 2]))]
            for backend, level in rng.sample(BACKENDS, rng.randint(2, 5)):
                for i, sha in enumerate(shas):
                    at = NOW - timedelta(hours=rng.choice([1, 9]) - i)
                    jobs(pr, sha, backend, level, rng.choice(WORKFLOWS), at, upstream, clean=pr == 103)
    for part in parts:
        if part:
            warehouse.insert_job_rows(part)
    warehouse.insert("oot_pr_heads", [[HISTORY_UPSTREAM, 101, "f" * 40, "open", "main", 1, NOW]],
                     ["upstream_repo", "pr_number", "head_sha", "state", "base_ref", "installation_id", "updated_at"])
    return list(live.values())
