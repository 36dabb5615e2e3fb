"""The summary's pipeline-health line: ``oot_canary_health`` rows -> ``PipelineHealth`` (pure).

A canary (``OOT_HUD_CANARY_BACKENDS``) is a downstream whose jobs are meant to fail, be cancelled or time out
(``policy.canary``). Its state tells a maintainer "my backend is broken" apart from "the relay is broken":

- **silent** (red): nothing from the canary for longer than the silence window (``OOT_HUD_SILENCE_HOURS``),
  or nothing in the query's window at all;
- **degraded** (amber): it reports, but one of its newest PRs came back with an outcome its job names did not
  ask for (or a job that never came back);
- **healthy** (green): every judged PR of its newest ones came back as expected;
- **waiting** (grey): it reports, but none of its newest PRs has a judged job yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from renderers.frame import Site
from sql.records import as_utc

STATES = {"silent": ("red", "relay silent"), "degraded": ("amber", "degraded"), "healthy": ("green", "healthy"),
          "waiting": ("grey", "no PR results yet")}
_ORDER = ("silent", "degraded", "waiting", "healthy")  # worst first


@dataclasses.dataclass(frozen=True, slots=True)
class CanaryPr:
    upstream_repo: str
    pr_number: int
    href: str | None
    at: datetime | None
    jobs: int
    expected: int
    pending: int
    unexpected: int
    unexpected_jobs: tuple[str, ...]  # untrusted (the canary's job names)

    @property
    def as_expected(self) -> bool | None:
        """True: every job came back as expected; False: one did not; None: only pending jobs so far."""
        if self.unexpected:
            return False
        return True if self.expected else None


@dataclasses.dataclass(frozen=True, slots=True)
class CanaryHealth:
    repo: str
    href: str | None  # the canary's own backend page
    last_report: datetime | None
    age_s: float | None  # how long ago the last report was
    prs: tuple[CanaryPr, ...]  # newest first
    state: str  # a key of STATES

    @property
    def colour(self) -> str:
        return STATES[self.state][0]

    @property
    def label(self) -> str:
        return STATES[self.state][1]

    @property
    def judged(self) -> tuple[CanaryPr, ...]:
        return tuple(pr for pr in self.prs if pr.as_expected is not None)

    @property
    def good(self) -> int:
        return sum(1 for pr in self.prs if pr.as_expected)


@dataclasses.dataclass(frozen=True, slots=True)
class PipelineHealth:
    canaries: tuple[CanaryHealth, ...]  # worst first
    silence_hours: float
    recent_prs: int  # how many of each canary's newest PRs are judged
    window_days: int  # how far back the query looked for a report

    @property
    def state(self) -> str:
        return self.canaries[0].state if self.canaries else "waiting"


def build_health(rows: Iterable[Mapping[str, Any]], *, now: datetime, silence_hours: float, site: Site,
                 recent_prs: int, window_days: int, days: int) -> PipelineHealth:
    """Group ``oot_canary_health`` rows by canary and judge each one; ``days``: the range its links keep."""
    now = _utc(now) or datetime.now(UTC)
    by_canary: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_canary.setdefault(str(row["canary"]), []).append(row)
    canaries = []
    for repo, found in by_canary.items():
        last = _utc(found[0].get("last_report"))
        prs = tuple(CanaryPr(
            upstream_repo=str(row["upstream_repo"]), pr_number=int(row["pr_number"]),
            href=site.pr(str(row["upstream_repo"]), int(row["pr_number"])), at=_utc(row.get("pr_at")),
            jobs=int(row["jobs"]), expected=int(row["expected"]), pending=int(row["pending"]),
            unexpected=int(row["unexpected"]), unexpected_jobs=tuple(str(j) for j in row["unexpected_jobs"] or ()))
            for row in found if int(row.get("pr_number") or 0))
        canaries.append(CanaryHealth(repo=repo, href=site.backend(repo, days), last_report=last,
                                     age_s=None if last is None else max(0.0, (now - last).total_seconds()), prs=prs,
                                     state=canary_state(last, prs, now=now, silence_hours=silence_hours)))
    canaries.sort(key=lambda c: (_ORDER.index(c.state), c.repo.lower()))
    return PipelineHealth(canaries=tuple(canaries), silence_hours=silence_hours, recent_prs=recent_prs,
                          window_days=window_days)


def canary_state(last_report: datetime | None, prs: Iterable[CanaryPr], *, now: datetime,
                 silence_hours: float) -> str:
    if last_report is None or now - last_report > timedelta(hours=silence_hours):
        return "silent"
    verdicts = [pr.as_expected for pr in prs]
    if any(verdict is False for verdict in verdicts):
        return "degraded"
    return "healthy" if any(verdicts) else "waiting"


def _utc(value: Any) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None
