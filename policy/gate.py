"""The merge gate: the ``OOT Backends`` check run's status and conclusion from the gating jobs of a PR's
current commit. Pure; every rule is one row below (README "Blocking rules"), each with a test
(tests/test_gate.py).

Which backends gate: with an allowlist in use, exactly the repos it lists at L4 (the level the relay
reported does not count); without one (none configured, or none readable yet), the backends the relay
reported at L4. L3 and L2 never gate.

| # | the gating jobs at the current commit             | status, conclusion             | the check's text |
|---|----------------------------------------------------|--------------------------------|------------------|
| 1 | a final attempt concluded `failure`                | completed, `failure` (at once) | each failure     |
| 2 | else a job running or silent, < max pending age    | in_progress                    | each, its age    |
| 3 | else an allowlisted L4 without a result, < max age | in_progress                    | each, its age    |
| 4 | a job or backend of rows 2-3 past the max age      | blocks no more: `neutral`      | loud: who, how long |
| 5 | `timed_out` or `cancelled`                         | as if absent (infrastructure)  | each             |
| 6 | another conclusion (`skipped`, `neutral`, …)       | as if absent                   | each             |
| 7 | else a gating job passed, nothing past the max age | completed, `success`           |                  |
| 8 | else (no gating backend, none passed, or row 4)    | completed, `neutral`           | why              |
| 9 | an allowlist configured, no copy ever readable     | rows 1-8 on the relay's levels | says so          |
| 10| a canary backend (``OOT_HUD_CANARY_BACKENDS``)      | never gates, at any level      |                  |

The max pending age is ``OOT_HUD_GATE_MAX_PENDING_HOURS`` (default 24; 0 = a pending backend blocks for
ever); a backend without a result (row 3) counts from the commit's first result. "Silent" = in progress
past the silence window (``OOT_HUD_SILENCE_HOURS``): still pending here, never a pass.

Unreadable inputs: a warehouse that cannot be read leaves the check as it was (the writer retries; a pending
check stays pending: closed); an allowlist that cannot be read is row 9 (the relay itself assigned those
levels from the allowlist at dispatch). GitHub's branch protection accepts `success` and `neutral`: rows 4-8
let a PR through, rows 1-3 hold it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime, timedelta

from policy.allowlist import Allowlist
from policy.verdicts import BLOCKING_LEVEL, Verdict

DEFAULT_MAX_PENDING = timedelta(hours=24)
INFRASTRUCTURE = frozenset({Verdict.TIMED_OUT, Verdict.CANCELLED})

LEVELS_FROM_ALLOWLIST = "allowlist"
LEVELS_FROM_RELAY = "relay"
LEVELS_FROM_RELAY_ALLOWLIST_UNREADABLE = "relay, allowlist unreadable"


@dataclasses.dataclass(frozen=True, slots=True)
class GateConfig:
    """``max_pending`` None: a pending gating backend blocks for ever. ``allowlist_configured``: tells row 9
    apart from "no allowlist"."""

    max_pending: timedelta | None = DEFAULT_MAX_PENDING
    allowlist_configured: bool = False
    # The relay's canaries (OOT_HUD_CANARY_BACKENDS, lower case) fail, cancel and time out by design: they never
    # gate, whatever level the allowlist or the relay gives them.
    canaries: frozenset[str] = frozenset()


DEFAULT_GATE = GateConfig()


@dataclasses.dataclass(frozen=True, slots=True)
class GateJob:
    """One job of one backend at the current commit, as the gate sees it."""

    repo: str
    relay_level: str
    workflow: str
    job: str
    verdict: Verdict
    silent: bool  # in progress past the silence window (its verdict is NO_REPORT)
    pending_since: datetime | None  # started (or first received) while not completed

    @property
    def pending(self) -> bool:
        return self.verdict is Verdict.RUNNING or (self.verdict is Verdict.NO_REPORT and self.silent)


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """A gating job (``job`` set) or a backend with no result yet (``job`` None), since when and for how long
    (``since``: the job's start, or the commit's first result for a backend without one)."""

    repo: str
    job: GateJob | None
    age: timedelta | None
    since: datetime | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class GateDecision:
    status: str  # "in_progress" or "completed"
    conclusion: str | None  # None while in progress; "failure", "success" or "neutral"
    levels_from: str  # LEVELS_FROM_*
    gating_repos: tuple[str, ...]  # sorted
    failed: tuple[GateJob, ...]  # row 1
    pending: tuple[Pending, ...]  # rows 2-3, still blocking
    expired: tuple[Pending, ...]  # row 4, no longer blocking
    infrastructure: tuple[GateJob, ...]  # row 5
    other: tuple[GateJob, ...]  # row 6
    passed: int
    max_pending: timedelta | None

    @property
    def blocking(self) -> bool:
        return bool(self.failed or self.pending)

    @property
    def next_change(self) -> timedelta | None:
        """How long until a pending item passes the max pending age (row 4) with no new result: the gate
        must be decided again then. None when nothing pending can expire."""
        if self.max_pending is None:
            return None
        left = [self.max_pending - item.age for item in self.pending if item.age is not None]
        return max(min(left), timedelta(0)) if left else None


def gating(repo: str, relay_level: str, allowlist: Allowlist | None, canaries: frozenset[str] = frozenset()) -> bool:
    """Whether a backend gates: never a canary; else the allowlist's word when one is in use, else the relay's
    level."""
    if repo.lower() in canaries:
        return False
    return allowlist.gates(repo) if allowlist is not None else relay_level == BLOCKING_LEVEL


def decide(jobs: Iterable[GateJob], *, allowlist: Allowlist | None, config: GateConfig, now: datetime,
           commit_first_seen: datetime | None, reported: Iterable[str] = ()) -> GateDecision:
    """The gate for the current commit. ``jobs``: every job at the commit (any level); ``reported``: every
    backend with a result at the commit (lower case or not); ``commit_first_seen``: the commit's first result."""
    gate_jobs = [job for job in jobs if gating(job.repo, job.relay_level, allowlist, config.canaries)]
    seen = {repo.lower() for repo in reported} | {job.repo.lower() for job in gate_jobs} | config.canaries
    missing = sorted(entry.repo for entry in allowlist.at_level(BLOCKING_LEVEL)
                     if entry.repo.lower() not in seen) if allowlist is not None else []

    def overdue(age: timedelta | None) -> bool:
        return config.max_pending is not None and age is not None and age > config.max_pending

    def age_since(since: datetime | None) -> timedelta | None:
        return None if since is None else max(now - since, timedelta(0))

    failed, infrastructure, other, waiting = [], [], [], []
    passed = 0
    for job in gate_jobs:
        if job.verdict is Verdict.FAILURE:
            failed.append(job)
        elif job.pending:
            waiting.append(Pending(job.repo, job, age_since(job.pending_since), job.pending_since))
        elif job.verdict in INFRASTRUCTURE:
            infrastructure.append(job)
        elif job.verdict is Verdict.SUCCESS:
            passed += 1
        else:
            other.append(job)
    waiting += [Pending(repo, None, age_since(commit_first_seen), commit_first_seen) for repo in missing]
    pending = [item for item in waiting if not overdue(item.age)]
    expired = [item for item in waiting if overdue(item.age)]

    if failed:
        status, conclusion = "completed", "failure"
    elif pending:
        status, conclusion = "in_progress", None
    elif passed and not expired:
        status, conclusion = "completed", "success"
    else:
        status, conclusion = "completed", "neutral"
    if allowlist is not None:
        levels_from = LEVELS_FROM_ALLOWLIST
    else:
        levels_from = LEVELS_FROM_RELAY_ALLOWLIST_UNREADABLE if config.allowlist_configured else LEVELS_FROM_RELAY
    repos = {job.repo for job in gate_jobs} | set(missing)
    return GateDecision(status, conclusion, levels_from, tuple(sorted(repos, key=str.lower)), tuple(failed),
                        tuple(pending), tuple(expired), tuple(infrastructure), tuple(other), passed,
                        config.max_pending)
