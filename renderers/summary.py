"""The global summary page's input: ``oot_summary`` rows -> ``SummaryPage`` (pure; pass rates via policy).

Backends are grouped by level, L4 (gates merges) first, each group worst PR pass rate first. The PR columns
count pull-request jobs only; the trunk (push, nightly, periodic) has its own pass rate beside them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from renderers.frame import Crumb, Site, range_label, range_links
from renderers.health import PipelineHealth
from renderers.html import render_page
from renderers.policy import pass_rate
from renderers.registry import NO_REGISTRY, Registration, Registry
from sql.records import as_utc

# The summary's sections, in order: (level, heading, what the level means).
LEVEL_SECTIONS = (
    ("L4", "L4: gates merges", "A failed L4 job turns the PR's check run red."),
    ("L3", "L3: stable, never blocks", "Shown on the PR; runs when the PR carries the backend's label."),
    ("L2", "L2: observation", "Shown here and collapsed on the PR."),
)
OTHER_LEVELS = ("other", "Other levels", "The relay reported a level this page does not know.")
ONBOARDING_LEVEL = "L1"


@dataclasses.dataclass(frozen=True, slots=True)
class BackendSummary:
    """One backend's row. Counts are PR jobs at their final attempt in the range; trunk_* the trunk's."""

    repo: str
    href: str | None  # its matrix page; None for a name that cannot be a repository
    level: str
    rate: float | None  # PR pass rate
    successes: int
    failures: int
    timed_out: int
    cancelled: int
    running: int
    no_report: int
    flaky: int
    total: int
    avg_duration_s: float | None  # PR and trunk jobs
    last_run: datetime | None  # newest result of any kind
    trunk_rate: float | None
    trunk_judged: int
    series: tuple[float | None, ...]  # PR pass rate per day, oldest first (None: nothing judged that day)
    series_days: tuple[date, ...]
    registration: Registration | None = None  # what the allowlist says (None: no allowlist in use)
    silent: bool = False  # registered, but no result shown in the range (none at all, or only L1 ones)

    @property
    def judged(self) -> int:
        return self.successes + self.failures + self.timed_out

    def order(self) -> tuple[Any, ...]:
        """Worst first: lowest PR pass rate, then lowest trunk pass rate, then most failures; unrated, then
        registered but silent, last."""
        return (self.silent, self.rate is None, self.rate or 0.0, self.trunk_rate is None, self.trunk_rate or 0.0,
                -(self.failures + self.timed_out), self.repo.lower())


@dataclasses.dataclass(frozen=True, slots=True)
class LevelSection:
    level: str
    heading: str
    meaning: str
    backends: tuple[BackendSummary, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class SummaryPage:
    days: int
    generated_at: datetime
    site: Site
    backends: tuple[BackendSummary, ...]  # every shown backend, in the sections' order
    sections: tuple[LevelSection, ...]  # L4, L3, L2 (then other levels), only those with a backend
    onboarding: tuple[str, ...]  # L1 backends, by name only
    level_counts: tuple[tuple[str, int], ...]  # backends per level, L4 first (L1 included)
    registered_counts: bool = False  # level_counts are the allowlist's registered backends (else: reported)
    silent: int = 0  # registered backends without a result shown in the range
    registrations: Mapping[str, Registration] = dataclasses.field(default_factory=dict)  # L1 names' (allowlist)
    health: PipelineHealth | None = None  # the relay's canaries (None: none configured)

    def context(self) -> dict[str, Any]:
        return {
            "title": f"OOT backends, {range_label(self.days)}",
            "crumbs": (Crumb(range_label(self.days)),),
            "ranges": range_links(self.days, self.site.summary, self.site.ranges),
            "home": self.site.home(),
            "generated_at": self.generated_at,
            "refresh": not self.site.static,
            "page": self,
        }


def render_summary(page: SummaryPage) -> str:
    return render_page("summary.html", **page.context())


def build_summary(rows: Iterable[Mapping[str, Any]], *, days: int, now: datetime, site: Site,
                  levels: Iterable[Mapping[str, Any]] = (), registry: Registry = NO_REGISTRY,
                  health: PipelineHealth | None = None) -> SummaryPage:
    """Turn ``oot_summary`` rows (and ``oot_backend_levels`` rows, for L1 names and the counts) into the page.

    With an allowlist (``registry``), a registered backend sits in the section of the allowlist's level (the
    level that decides whether it gates), a level the relay reported otherwise is flagged with both levels,
    registered backends without a result in the range are listed last in their section ("silent"), and the
    counts are the allowlist's. The relay's canaries are left out of every section and count: the pipeline
    health line (``health``) shows them."""
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    first_day = (now - timedelta(days=days)).astimezone(UTC).date()
    day_list = tuple(first_day + timedelta(days=i) for i in range((now.astimezone(UTC).date() - first_day).days + 1))
    shown = [_backend(row, days=days, day_list=day_list, site=site) for row in rows
             if not registry.is_canary(str(row["downstream_repo"]))]
    level_of = {b.repo: b.level for b in shown}
    for row in levels:  # the newest level of every backend in the range, L1 included
        if not registry.is_canary(str(row["downstream_repo"])):
            level_of.setdefault(str(row["downstream_repo"]), str(row.get("level") or ""))
    place = dict(level_of)  # repo -> the level whose section shows it
    registrations: dict[str, Registration] = {}
    if registry.allowlist is not None:
        reported = {repo.lower(): (repo, level) for repo, level in level_of.items()}
        for entry in registry.entries():
            repo, level = reported.get(entry.repo.lower(), (entry.repo, None))
            registration = registry.registration(repo, level)
            assert registration is not None
            registrations[repo] = registration
            place[repo] = entry.level
        for repo in level_of:
            registrations.setdefault(repo, registry.registration(repo, level_of[repo]))  # type: ignore[arg-type]
        shown = [dataclasses.replace(b, registration=registrations[b.repo]) for b in shown]
        listed = {b.repo for b in shown}
        shown += [_silent(repo, registration, day_list=day_list, site=site, days=days)
                  for repo, registration in registrations.items()
                  if repo not in listed and place[repo] != ONBOARDING_LEVEL and registration.registered]
    sections = []
    known = {level for level, _, _ in LEVEL_SECTIONS}
    for level, heading, meaning in (*LEVEL_SECTIONS, OTHER_LEVELS):
        members = sorted((b for b in shown if (place[b.repo] if place[b.repo] in known else "other") == level
                          and place[b.repo] != ONBOARDING_LEVEL), key=BackendSummary.order)
        if members:
            sections.append(LevelSection(level, heading, meaning, tuple(members)))
    onboarding = tuple(sorted((repo for repo, level in place.items() if level == ONBOARDING_LEVEL), key=str.lower))
    counted = ({entry.repo: entry.level for entry in registry.entries()} if registry.allowlist is not None
               else level_of)
    counts: dict[str, int] = {}
    for level in counted.values():
        counts[level] = counts.get(level, 0) + 1
    order = [level for level, _, _ in LEVEL_SECTIONS] + [ONBOARDING_LEVEL]
    level_counts = tuple((level, counts[level]) for level in order if level in counts)
    level_counts += tuple(sorted((level or "?", n) for level, n in counts.items() if level not in order))
    silent = sum(1 for r in registrations.values() if r.registered and (r.reported_level is None or (
        r.reported_level == ONBOARDING_LEVEL and r.level != ONBOARDING_LEVEL)))
    return SummaryPage(days=days, generated_at=now, site=site,
                       backends=tuple(b for section in sections for b in section.backends),
                       sections=tuple(sections), onboarding=onboarding, level_counts=level_counts,
                       registered_counts=registry.allowlist is not None, silent=silent,
                       registrations={repo: registrations[repo] for repo in onboarding if repo in registrations},
                       health=health)


def _silent(repo: str, registration: Registration, *, day_list: tuple[date, ...], site: Site,
            days: int) -> BackendSummary:
    """A registered backend with no result shown in the range: none at all, or only L1 (stored, not shown)."""
    return BackendSummary(
        repo=repo, href=site.backend(repo, days), level=registration.reported_level or registration.level or "",
        rate=None, successes=0, failures=0, timed_out=0, cancelled=0, running=0, no_report=0, flaky=0, total=0,
        avg_duration_s=None, last_run=None, trunk_rate=None, trunk_judged=0, series=tuple(None for _ in day_list),
        series_days=day_list, registration=registration, silent=True)


def _backend(row: Mapping[str, Any], *, days: int, day_list: tuple[date, ...], site: Site) -> BackendSummary:
    def pr_only(column: str) -> int:
        return int(row[column]) - int(row.get(f"trunk_{column}") or 0)

    successes, failures, timed_out = pr_only("successes"), pr_only("failures"), pr_only("timed_out")
    per_day = {
        _as_date(day): pass_rate(int(ok), int(judged) - int(ok), 0)
        for day, ok, judged in zip(row["pr_series_days"], row["pr_series_successes"], row["pr_series_judged"],
                                   strict=True)
    }
    trunk_ok, trunk_failed = int(row["trunk_successes"]), int(row["trunk_failures"])
    trunk_timed_out = int(row["trunk_timed_out"])
    trunk_total = sum(int(row.get(f"trunk_{c}") or 0) for c in ("successes", "failures", "timed_out", "cancelled",
                                                                   "running", "no_report"))
    repo = str(row["downstream_repo"])
    last_run = row.get("last_run")
    return BackendSummary(
        repo=repo, href=site.backend(repo, days), level=str(row.get("level") or ""),
        rate=pass_rate(successes, failures, timed_out),
        successes=successes, failures=failures, timed_out=timed_out, cancelled=pr_only("cancelled"),
        running=pr_only("running"), no_report=pr_only("no_report"),
        flaky=int(row["flaky"]) - int(row.get("trunk_flaky") or 0), total=int(row["total"]) - trunk_total,
        avg_duration_s=None if row.get("avg_duration_s") is None else float(row["avg_duration_s"]),
        last_run=as_utc(last_run) if isinstance(last_run, datetime) else None,
        trunk_rate=pass_rate(trunk_ok, trunk_failed, trunk_timed_out),
        trunk_judged=trunk_ok + trunk_failed + trunk_timed_out,
        series=tuple(per_day.get(day) for day in day_list), series_days=day_list,
    )


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))

