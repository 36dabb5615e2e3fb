"""One PR's OOT results as a frozen view, built purely from ``oot_pr_results`` rows (policies applied here once)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from policy.gate import GateDecision, GateJob, decide, gating
from policy.pr_policy import DEFAULT_POLICY, PrPolicy
from policy.pr_rows import EPOCH, LEVEL_ORDER, backend_levels, cached_verdict, row_recency, row_time
from policy.verdicts import FAILED_VERDICTS, Verdict

# Worst first: a job's verdict across its matrix legs is its worst leg's, a backend's is its worst job's.
VERDICT_SEVERITY: dict[Verdict, int] = {
    Verdict.FAILURE: 6, Verdict.TIMED_OUT: 5, Verdict.CANCELLED: 4,
    Verdict.NO_REPORT: 3, Verdict.RUNNING: 2, Verdict.SUCCESS: 1,
}
HEAD_FROM_WEBHOOK = "webhook"
HEAD_FROM_NEWEST_RESULT = "newest_result"


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe verdict (SUCCESS when there is none)."""
    return max(verdicts, key=VERDICT_SEVERITY.__getitem__, default=Verdict.SUCCESS)


@dataclasses.dataclass(frozen=True, slots=True)
class LegResult:
    """One matrix leg (one check run) at the job's final attempt. URLs are untrusted text."""

    check_run_id: str
    verdict: Verdict
    silent: bool
    duration_s: float | None
    queue_time_s: float | None
    tests_passed: int | None
    tests_failed: int | None
    tests_skipped: int | None
    run_url: str
    artifact_url: str
    started_at: datetime | None
    completed_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class JobResult:
    """One (workflow, job) of a backend at one head SHA: its final attempt, legs merged (worst leg wins)."""

    workflow: str
    job: str
    verdict: Verdict
    attempt: int  # the final (highest) run_attempt
    legs: tuple[LegResult, ...]
    flaky: bool  # an earlier attempt failed (failure / timed_out) and the final attempt passed
    also_failing_on_trunk: bool  # failed here and in the backend's latest trunk run of this workflow
    silent: bool  # some leg in_progress for longer than silence_hours ("no report")
    duration_s: float | None  # the longest leg
    queue_time_s: float | None  # the longest leg's queue time
    tests_passed: int | None  # summed over legs; None when no leg reported tests
    tests_failed: int | None
    tests_skipped: int | None
    run_url: str  # untrusted: renderers link it only when it is https
    artifact_url: str  # untrusted
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def failed(self) -> bool:
        return self.verdict in FAILED_VERDICTS

    @property
    def failed_legs(self) -> int:
        return sum(1 for leg in self.legs if leg.verdict in FAILED_VERDICTS)


@dataclasses.dataclass(frozen=True, slots=True)
class VerdictCounts:
    """Jobs per verdict (after merging legs and taking final attempts)."""

    success: int = 0
    failure: int = 0
    timed_out: int = 0
    cancelled: int = 0
    running: int = 0
    no_report: int = 0
    flaky: int = 0

    @classmethod
    def of(cls, jobs: Iterable[JobResult]) -> VerdictCounts:
        # Hot path (every backend row, headline and matrix cell): count into a list indexed by verdict.
        counts = [0] * 7
        for job in jobs:
            counts[_COUNT_INDEX[job.verdict]] += 1
            counts[6] += job.flaky
        return cls(*counts)

    def __add__(self, other: VerdictCounts) -> VerdictCounts:
        return VerdictCounts(self.success + other.success, self.failure + other.failure,
                             self.timed_out + other.timed_out, self.cancelled + other.cancelled,
                             self.running + other.running, self.no_report + other.no_report,
                             self.flaky + other.flaky)

    @property
    def failed(self) -> int:
        return self.failure + self.timed_out

    @property
    def total(self) -> int:
        return self.success + self.failure + self.timed_out + self.cancelled + self.running + self.no_report


# VerdictCounts' field order (flaky last, at index 6).
_COUNT_INDEX = {Verdict.SUCCESS: 0, Verdict.FAILURE: 1, Verdict.TIMED_OUT: 2, Verdict.CANCELLED: 3,
                Verdict.RUNNING: 4, Verdict.NO_REPORT: 5}


@dataclasses.dataclass(frozen=True, slots=True)
class BackendResult:
    """One downstream backend's jobs at one head SHA, worst job first."""

    downstream_repo: str  # the relay-verified repository (trusted identity, still escaped when shown)
    level: str  # "L4", "L3" or "L2" (L1 and unknown levels are never in a view)
    head_sha: str
    jobs: tuple[JobResult, ...]
    gating: bool = False  # gates merging (policy.gate.gating: the allowlist's L4, else the relay's L4)

    @property
    def verdict(self) -> Verdict:
        return worst(job.verdict for job in self.jobs)

    @property
    def blocking(self) -> bool:
        return self.gating

    @property
    def counts(self) -> VerdictCounts:
        return VerdictCounts.of(self.jobs)

    @property
    def tests_passed(self) -> int | None:
        return _sum_or_none(job.tests_passed for job in self.jobs)

    @property
    def tests_failed(self) -> int | None:
        return _sum_or_none(job.tests_failed for job in self.jobs)

    @property
    def tests_skipped(self) -> int | None:
        return _sum_or_none(job.tests_skipped for job in self.jobs)

    @property
    def duration_s(self) -> float | None:
        """The longest job (the backend's critical path; jobs of one backend usually run in parallel)."""
        return max((job.duration_s for job in self.jobs if job.duration_s is not None), default=None)

    @property
    def run_url(self) -> str:
        """The newest job's run URL (untrusted)."""
        newest = max(self.jobs, key=lambda job: (job.started_at or EPOCH, job.run_url != ""), default=None)
        return "" if newest is None else newest.run_url

    @property
    def failed_jobs(self) -> tuple[JobResult, ...]:
        return tuple(job for job in self.jobs if job.failed)


@dataclasses.dataclass(frozen=True, slots=True)
class SupersededCommit:
    """Results for one older head SHA of the PR: shown collapsed, never counted."""

    head_sha: str
    backends: tuple[BackendResult, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class PrView:
    """Everything a PR's comment, check run and page show. Built by ``build_pr_view``; no I/O."""

    upstream_repo: str
    pr_number: int
    head_sha: str  # the current commit: from webhooks (oot_pr_heads), else the newest result's SHA
    head_source: str  # HEAD_FROM_WEBHOOK or HEAD_FROM_NEWEST_RESULT
    generated_at: datetime
    public_url: str
    silence_hours: float
    backends: tuple[BackendResult, ...]  # current SHA, shown levels only, L4 first then L3 then L2
    superseded: tuple[SupersededCommit, ...]  # older SHAs, newest first
    policy: PrPolicy = DEFAULT_POLICY  # the deployment's rules: allowlist in use, gate settings, label prefix
    commit_first_seen: datetime | None = None  # the current SHA's first result (ages of missing backends)
    reported_repos: frozenset[str] = frozenset()  # every backend with a result at the current SHA (L1 too)
    labels: frozenset[str] = frozenset()  # the PR's labels from webhooks (untrusted); empty when none is known

    @property
    def headline_backends(self) -> tuple[BackendResult, ...]:
        """Backends that drive the headline: L4 and L3; L2 only when no L4/L3 backend reported."""
        main = tuple(b for b in self.backends if b.level != "L2")
        return main or self.observation_backends

    @property
    def main_backends(self) -> tuple[BackendResult, ...]:
        """The table's backends: L4 and L3."""
        return tuple(b for b in self.backends if b.level != "L2")

    @property
    def observation_backends(self) -> tuple[BackendResult, ...]:
        return tuple(b for b in self.backends if b.level == "L2")

    @property
    def totals(self) -> VerdictCounts:
        """Job counts behind the headline (see ``headline_backends``)."""
        total = VerdictCounts()
        for backend in self.headline_backends:
            total = total + backend.counts
        return total

    @property
    def blocking_failures(self) -> int:
        """Gating jobs at the current SHA whose final attempt concluded ``failure`` (a timeout is infrastructure)."""
        return sum(1 for b in self.backends if b.blocking for job in b.jobs if job.verdict is Verdict.FAILURE)

    @property
    def blocking_jobs(self) -> tuple[JobResult, ...]:
        return tuple(job for b in self.backends if b.blocking for job in b.jobs)

    @property
    def short_sha(self) -> str:
        return self.head_sha[:7]


def gate_decision(view: PrView) -> GateDecision:
    """The merge gate (``policy.gate``) for the view's current commit."""
    jobs = [GateJob(repo=b.downstream_repo, relay_level=b.level, workflow=job.workflow, job=job.job,
                    verdict=job.verdict, silent=job.silent, pending_since=job.started_at or view.commit_first_seen)
            for b in view.backends for job in b.jobs]
    return decide(jobs, allowlist=view.policy.allowlist, config=view.policy.gate, now=view.generated_at,
                  commit_first_seen=view.commit_first_seen, reported=view.reported_repos)


def has_results(view: PrView) -> bool:
    """Whether the PR has any displayable OOT result (current or superseded); without one, post nothing."""
    return bool(view.backends or view.superseded)


def build_pr_view(rows: Iterable[Mapping[str, Any]], *, now: datetime, silence_hours: float,
                  public_url: str, upstream_repo: str = "", pr_number: int = 0,
                  policy: PrPolicy = DEFAULT_POLICY) -> PrView:
    """Apply the PR policies (current commit, final attempt, legs, flaky, silence, levels) to query rows.

    ``rows`` are ``oot_pr_results`` rows (one per record, every head SHA). ``upstream_repo``/``pr_number``
    name the PR when there are no rows (they are taken from the rows otherwise). ``policy``: the deployment's
    rules (the allowlist in use decides the gating backends, ``policy.gate``).
    """
    rows = list(rows)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    silence = timedelta(hours=silence_hours)
    if rows:
        upstream_repo = str(rows[0]["upstream_repo"])
        pr_number = int(rows[0]["pr_number"])
    head_sha = str(rows[0].get("current_head_sha") or "") if rows else ""
    head_source = str(rows[0].get("head_source") or HEAD_FROM_NEWEST_RESULT) if rows else HEAD_FROM_NEWEST_RESULT

    # Hot path (the bot renders on every change; the backend matrix builds ~400 views a page): each row's
    # recency is computed once and serves the newest SHA, the backends' levels and the superseded order.
    recency = [row_recency(row) for row in rows]
    if rows and not head_sha:
        head_sha = str(rows[max(range(len(rows)), key=recency.__getitem__)]["head_sha"])
    levels = backend_levels(rows, recency)
    by_sha: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    sha_recency: dict[str, tuple[datetime, datetime]] = {}
    commit_first_seen: datetime | None = None
    reported: set[str] = set()
    for row, recent in zip(rows, recency, strict=True):
        repo = str(row["downstream_repo"])
        sha = str(row["head_sha"])
        if sha == head_sha:
            reported.add(repo)
            if recent[0] != EPOCH and (commit_first_seen is None or recent[0] < commit_first_seen):
                commit_first_seen = recent[0]
        if levels[repo] not in LEVEL_ORDER:
            continue  # L1 (onboarding) and unknown levels are stored, never displayed
        by_sha.setdefault(sha, {}).setdefault(repo, []).append(row)
        if sha not in sha_recency or recent > sha_recency[sha]:
            sha_recency[sha] = recent

    def backends_of(sha: str) -> tuple[BackendResult, ...]:
        found = [
            BackendResult(downstream_repo=repo, level=levels[repo], head_sha=sha,
                          jobs=_jobs(repo_rows, now=now, silence=silence),
                          gating=gating(repo, levels[repo], policy.allowlist, policy.gate.canaries))
            for repo, repo_rows in by_sha.get(sha, {}).items()
        ]
        return tuple(sorted(found, key=_backend_order))

    newest_first = sorted((sha for sha in by_sha if sha != head_sha), key=sha_recency.__getitem__, reverse=True)
    return PrView(
        upstream_repo=upstream_repo, pr_number=pr_number, head_sha=head_sha, head_source=head_source,
        generated_at=now, public_url=public_url.rstrip("/"), silence_hours=silence_hours,
        backends=backends_of(head_sha),
        superseded=tuple(SupersededCommit(sha, backends_of(sha)) for sha in newest_first),
        policy=policy, commit_first_seen=commit_first_seen,
        reported_repos=frozenset(reported),
        labels=frozenset(str(label) for label in rows[0].get("pr_labels") or ()) if rows else frozenset(),
    )


def _backend_order(backend: BackendResult) -> tuple[int, int, str]:
    return (LEVEL_ORDER[backend.level], -VERDICT_SEVERITY[backend.verdict], backend.downstream_repo.lower())


def _job_order(job: JobResult) -> tuple[int, str, str]:
    return (-VERDICT_SEVERITY[job.verdict], job.workflow.lower(), job.job.lower())


def _jobs(rows: list[Mapping[str, Any]], *, now: datetime, silence: timedelta) -> tuple[JobResult, ...]:
    by_job: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        by_job.setdefault((str(row["workflow_name"]), str(row["job_name"])), []).append(row)
    jobs = [_job(workflow, job, job_rows, now=now, silence=silence) for (workflow, job), job_rows in by_job.items()]
    return tuple(sorted(jobs, key=_job_order))


def _leg_order(leg: LegResult) -> tuple[int, str]:
    return (-VERDICT_SEVERITY[leg.verdict], leg.check_run_id)


def _job(workflow: str, job: str, rows: list[Mapping[str, Any]], *, now: datetime,
         silence: timedelta) -> JobResult:
    attempts = [int(row.get("run_attempt") or 1) for row in rows]
    final_attempt = max(attempts)
    if len(rows) == 1:  # the common case: one leg, one attempt
        final_rows = rows
        earlier_failed = False
    else:
        final_rows = [row for row, attempt in zip(rows, attempts, strict=True) if attempt == final_attempt]
        earlier_failed = len(final_rows) < len(rows) and any(
            cached_verdict(str(row["status"]), _text(row.get("conclusion")), False) in FAILED_VERDICTS
            for row, attempt in zip(rows, attempts, strict=True) if attempt < final_attempt
        )
    legs = [_leg(row, now=now, silence=silence) for row in final_rows]
    if len(legs) > 1:
        legs.sort(key=_leg_order)
    primary = legs[0]  # sorted worst first: its verdict is the job's, its links are the ones worth following
    job_verdict = primary.verdict
    also_failing_on_trunk = job_verdict in FAILED_VERDICTS and any(
        bool(row.get("also_failing_on_trunk")) for row in final_rows)
    if len(legs) == 1:  # the common case: the job's figures are its leg's (what the merge below gives)
        return JobResult(
            workflow=workflow, job=job, verdict=job_verdict, attempt=final_attempt, legs=(primary,),
            flaky=earlier_failed and job_verdict is Verdict.SUCCESS, also_failing_on_trunk=also_failing_on_trunk,
            silent=primary.silent, duration_s=primary.duration_s, queue_time_s=primary.queue_time_s,
            tests_passed=primary.tests_passed, tests_failed=primary.tests_failed,
            tests_skipped=primary.tests_skipped, run_url=primary.run_url, artifact_url=primary.artifact_url,
            started_at=primary.started_at, completed_at=primary.completed_at,
        )
    return JobResult(
        workflow=workflow, job=job, verdict=job_verdict, attempt=final_attempt, legs=tuple(legs),
        flaky=earlier_failed and job_verdict is Verdict.SUCCESS, also_failing_on_trunk=also_failing_on_trunk,
        silent=any(leg.silent for leg in legs),
        duration_s=max((leg.duration_s for leg in legs if leg.duration_s is not None), default=None),
        queue_time_s=max((leg.queue_time_s for leg in legs if leg.queue_time_s is not None), default=None),
        tests_passed=_sum_or_none([leg.tests_passed for leg in legs]),
        tests_failed=_sum_or_none([leg.tests_failed for leg in legs]),
        tests_skipped=_sum_or_none([leg.tests_skipped for leg in legs]),
        run_url=primary.run_url or next((leg.run_url for leg in legs if leg.run_url), ""),
        artifact_url=primary.artifact_url or next((leg.artifact_url for leg in legs if leg.artifact_url), ""),
        started_at=min((leg.started_at for leg in legs if leg.started_at), default=None),
        completed_at=max((leg.completed_at for leg in legs if leg.completed_at), default=None),
    )


def _leg(row: Mapping[str, Any], *, now: datetime, silence: timedelta) -> LegResult:
    status = str(row["status"])
    started = row_time(row.get("started_at"))
    completed = row_time(row.get("completed_at"))
    silent = False
    if status != "completed":
        since = started or row_time(row.get("first_received_at"))
        received = row_time(row.get("received_at"))
        if since is not None and received is not None and since > received:
            # A downstream clock ahead of ours must not keep a job "running" for ever: silence counts from
            # our own latest receipt at the latest (the same rule as oot_summary's SQL).
            since = received
        silent = since is not None and now - since > silence
    duration = _float(row.get("execution_time_s"))
    if duration is None and started and completed and completed >= started:
        duration = (completed - started).total_seconds()
    return LegResult(
        check_run_id=str(row.get("check_run_id") or ""),
        verdict=cached_verdict(status, _text(row.get("conclusion")), silent),
        silent=silent, duration_s=duration, queue_time_s=_float(row.get("queue_time_s")),
        tests_passed=_int(row.get("tests_passed")), tests_failed=_int(row.get("tests_failed")),
        tests_skipped=_int(row.get("tests_skipped")),
        run_url=str(row.get("workflow_url") or ""), artifact_url=str(row.get("artifact_url") or ""),
        started_at=started, completed_at=completed,
    )


def _sum_or_none(values: Iterable[int | None]) -> int | None:
    present = [value for value in values if value is not None]
    return sum(present) if present else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)
