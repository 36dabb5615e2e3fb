"""A backend's matrix page input: ``oot_backend_dashboard`` rows -> ``BackendPage`` (pure).

The per-job policies (final attempt, matrix legs, flaky, silence, current vs superseded commit) are the PR
view's: each PR's rows go through ``renderers.pr_view.build_pr_view``, so a cell here and the job on the PR
page can never disagree. Trunk commits (pr_number 0) form their own section with their own pass rate.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from renderers.charts import DayCount
from renderers.frame import Crumb, Site, is_repo_name, range_label, range_links
from renderers.html import render_page
from renderers.policy import pass_rate
from renderers.pr_view import BackendResult, JobResult, VerdictCounts, build_pr_view, worst
from renderers.registry import NO_REGISTRY, Registration, Registry
from renderers.trends import TREND_RANGES, BackendTrend, build_trends
from sql.records import as_utc, parse_time

PER_PAGE = 50  # PRs per page (most recently active first), with previous / next links
MAX_TRUNK = 30  # trunk commits per view
MAX_PAGE = 10_000  # beyond any real backend; a bound on ?page=
TRUNK_KINDS = ("push", "nightly", "periodic")  # always offered as views, with any other kind reported
SHARD_MIN = 3  # numbered columns with one stem collapse from this many on
_SHARD = re.compile(r"^(?P<stem>.*?\S)[-_](?P<n>\d{1,4})$")
_EVENT = re.compile(r"^[a-z][a-z0-9_]{0,39}$")  # event types that get a view (a URL parameter, a file name)
_SHA = re.compile(r"^[0-9a-f]{7,64}$")


@dataclasses.dataclass(frozen=True, slots=True)
class ShardGroup:
    """Numbered shards of one job (``test-1`` ... ``test-8``) in one cell: the worst result, opening into each."""

    shards: tuple[tuple[str, JobResult | None], ...]  # (job name, its result at this commit), by number

    @property
    def jobs(self) -> tuple[JobResult, ...]:
        return tuple(job for _, job in self.shards if job is not None)

    @property
    def verdict(self) -> Any:
        return worst(job.verdict for job in self.jobs)

    @property
    def failed(self) -> int:
        return sum(1 for job in self.jobs if job.failed)


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    workflow: str
    job: str  # the job's name, or for shards their stem
    members: tuple[str, ...] = ()  # shard job names, by number; empty for a plain job

    @property
    def label(self) -> str:
        return f"{self.job} ×{len(self.members)}" if self.members else self.job


@dataclasses.dataclass(frozen=True, slots=True)
class MatrixRow:
    """One commit's jobs: a PR head (current or superseded) or a trunk commit."""

    upstream_repo: str
    pr_number: int  # 0 for trunk
    head_sha: str
    event_type: str  # pull_request, push, nightly, periodic, ...
    href: str | None  # the PR's page (live) or the PR on GitHub (static); None for trunk
    commit_href: str | None  # the commit on GitHub
    title: str  # the PR's title from webhooks ('' when unknown or trunk); untrusted
    author: str  # the PR author's login ('' when unknown); untrusted, shown as plain text
    superseded: bool
    last_at: datetime | None
    cells: tuple[JobResult | ShardGroup | None, ...]  # aligned with the section's columns

    @property
    def short_sha(self) -> str:
        return self.head_sha[:7]


@dataclasses.dataclass(frozen=True, slots=True)
class Section:
    columns: tuple[Column, ...]
    rows: tuple[MatrixRow, ...]
    counts: VerdictCounts  # jobs at their final attempt, over every row shown
    shown: int  # PRs (or trunk commits) shown
    total: int  # PRs (or trunk commits) with results in the range

    @property
    def rate(self) -> float | None:
        return pass_rate(self.counts.success, self.counts.failure, self.counts.timed_out)


@dataclasses.dataclass(frozen=True, slots=True)
class Cards:
    """The backend's PR results over the range (jobs at their final attempt; times over every execution)."""

    passed: int
    failed: int
    timed_out: int
    cancelled: int
    jobs: int
    prs: int
    avg_queue_s: float | None
    avg_execution_s: float | None

    @property
    def rate(self) -> float | None:
        return pass_rate(self.passed, self.failed, self.timed_out)

    @property
    def finished(self) -> int:
        return self.passed + self.failed + self.timed_out + self.cancelled

    @property
    def timeout_rate(self) -> float | None:
        """Timed out ÷ jobs that finished (passed, failed, timed out or cancelled)."""
        return None if self.finished == 0 else self.timed_out / self.finished


@dataclasses.dataclass(frozen=True, slots=True)
class TrunkKind:
    event: str
    href: str | None  # its view; None for an event type that cannot be a URL parameter / file name
    newest_sha: str
    commit_href: str | None
    newest_at: datetime | None
    commits: int
    current: bool


@dataclasses.dataclass(frozen=True, slots=True)
class PageLink:
    number: int
    href: str | None  # None: not available here (the static site publishes only the first pages)


@dataclasses.dataclass(frozen=True, slots=True)
class BackendPage:
    repo: str
    level: str
    days: int
    generated_at: datetime
    site: Site
    silence_hours: float
    prs: Section
    trunk: Section
    event: str | None = None  # a trunk kind's view (?event=...): the trunk section of that kind only
    page: int = 1
    pages: int = 1
    previous: PageLink | None = None
    next: PageLink | None = None
    cards: Cards | None = None
    trend: BackendTrend | None = None
    trend_links: tuple[tuple[int, str], ...] = ()  # (days, the trends page at this backend)
    trunk_kinds: tuple[TrunkKind, ...] = ()
    all_kinds_href: str | None = None
    badge_markdown: str | None = None  # the README snippet (text, never a link)
    registration: Registration | None = None  # what the allowlist says (None: no allowlist in use)
    canary: bool = False  # one of the relay's canaries (its jobs are meant to fail)

    def context(self) -> dict[str, Any]:
        crumbs = [Crumb(range_label(self.days), self.site.summary(self.days)), Crumb(self.repo)]
        if self.event:
            crumbs[-1] = Crumb(self.repo, self.site.backend(self.repo, self.days))
            crumbs.append(Crumb(f"trunk: {self.event}"))
        return {
            "title": f"{self.repo}{f' {self.event}' if self.event else ''}, {range_label(self.days)}",
            "crumbs": tuple(crumbs),
            "ranges": range_links(
                self.days, lambda days: self.site.backend(self.repo, days, event=self.event) or "",
                (self.site.trunk_days,) if self.event and self.site.trunk_days else self.site.ranges),
            "home": self.site.home(),
            "generated_at": self.generated_at,
            "refresh": not self.site.static,
            "page": self,
        }


def render_backend(page: BackendPage) -> str:
    return render_page("backend.html", **page.context())


@dataclasses.dataclass(frozen=True, slots=True)
class BackendView:
    """Which view of the page is asked for, and the rows of its queries beside the dashboard's."""

    page: int = 1
    event: str | None = None  # a trunk kind's view
    daily: tuple[Mapping[str, Any], ...] | None = None  # oot_daily_pass_rate rows over trend_days (trends)
    card_daily: tuple[Mapping[str, Any], ...] | None = None  # the same over the page's days (cards); or daily
    stats: Mapping[str, Any] | None = None  # this backend's oot_backend_stats row
    trend_days: int | None = None
    public_url: str | None = None  # where the live site is, for the README badge snippet
    registry: Registry = NO_REGISTRY  # the allowlist and the canaries


def build_backend(rows: Iterable[Mapping[str, Any]], *, repo: str, days: int, now: datetime, site: Site,
                  silence_hours: float, view: BackendView | None = None) -> BackendPage:
    """Group the query's rows by PR (all its SHAs) and by trunk commit, then apply the PR view's policies."""
    asked = view or BackendView()
    page, event = asked.page, asked.event
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    rows = list(rows)
    pr_groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    trunk_groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if int(row["pr_number"]) == 0:
            trunk_groups.setdefault((str(row["upstream_repo"]), str(row["head_sha"])), []).append(row)
        else:
            pr_groups.setdefault((str(row["upstream_repo"]), int(row["pr_number"])), []).append(row)

    pr_rows: list[MatrixRow] = []
    for (upstream, number), group in sorted(pr_groups.items(), key=lambda kv: _recency(kv[1]), reverse=True):
        view = build_pr_view(group, now=now, silence_hours=silence_hours, public_url="",
                             upstream_repo=upstream, pr_number=number)
        commits = [(view.head_sha, view.backends, False)]
        commits += [(old.head_sha, old.backends, True) for old in view.superseded]
        for sha, backends, superseded in commits:
            if backends:
                pr_rows.append(_row(upstream, number, sha, backends[0], group, site=site, superseded=superseded))

    trunk_rows: list[MatrixRow] = []
    for (upstream, sha), group in sorted(trunk_groups.items(), key=lambda kv: _recency(kv[1]), reverse=True):
        # A trunk commit is its own "current head": pr_view's policies then apply unchanged.
        fixed = [{**row, "current_head_sha": sha} for row in group]
        view = build_pr_view(fixed, now=now, silence_hours=silence_hours, public_url="")
        if view.backends:
            trunk_rows.append(_row(upstream, 0, sha, view.backends[0], group, site=site, superseded=False))

    first = rows[0] if rows else {}
    level = _newest_level(rows)
    prs_total = max(int(first.get("prs_total") or 0), len(pr_groups))
    pages = max(1, math.ceil(prs_total / PER_PAGE))
    kinds = _trunk_kinds(first.get("trunk_kinds") or (), repo=repo, days=days, site=site, current=event)
    trend = None
    if asked.daily is not None:
        found = build_trends(asked.daily, days=asked.trend_days or days, now=now, site=site, link_days=days)
        trend = found[0] if found else None
    return BackendPage(
        repo=repo, level=level, days=days, generated_at=now, site=site, silence_hours=silence_hours,
        prs=_section(pr_rows, shown=len(pr_groups), total=prs_total),
        trunk=_section(trunk_rows, shown=len(trunk_groups),
                       total=int(first.get("trunk_total") or len(trunk_groups))),
        event=event, page=page, pages=pages,
        previous=_page_link(site, repo, days, page - 1) if page > 1 else None,
        next=_page_link(site, repo, days, page + 1) if page < pages else None,
        cards=None if event else _cards(asked.card_daily if asked.card_daily is not None else asked.daily,
                                        asked.stats),
        trend=None if event else trend,
        trend_links=tuple((d, f"{site.trends(d)}#{_anchor(repo)}") for d in TREND_RANGES) if is_repo_name(repo)
        else (),
        trunk_kinds=kinds, all_kinds_href=site.backend(repo, days),
        badge_markdown=badge_markdown(repo, asked.public_url) if asked.public_url and not event else None,
        registration=asked.registry.registration(repo, level or None), canary=asked.registry.is_canary(repo),
    )


def badge_markdown(repo: str, public_url: str) -> str | None:
    """The Markdown a backend pastes into its README (shown as text: the page never offers it as a link)."""
    if not is_repo_name(repo):
        return None
    base = public_url.rstrip("/")
    return f"[![OOT PR pass rate]({base}/oot/badge/{repo}.svg)]({base}/oot/{repo})"


def _anchor(repo: str) -> str:
    return "b-" + repo.replace("/", "--")


def _page_link(site: Site, repo: str, days: int, number: int) -> PageLink:
    return PageLink(number, site.backend(repo, days, page=number))


def _cards(daily: Iterable[Mapping[str, Any]] | None, stats: Mapping[str, Any] | None) -> Cards | None:
    if daily is None:
        return None
    counts = [DayCount(row["day"], int(row["passed"]), int(row["failed"]), int(row["timed_out"]),
                       int(row["cancelled"]), int(row["total"])) for row in daily if str(row["kind"]) == "pr"]
    stats = stats or {}
    return Cards(passed=sum(c.passed for c in counts), failed=sum(c.failed for c in counts),
                 timed_out=sum(c.timed_out for c in counts), cancelled=sum(c.cancelled for c in counts),
                 jobs=sum(c.total for c in counts), prs=int(stats.get("prs") or 0),
                 avg_queue_s=_float(stats.get("avg_queue_s")), avg_execution_s=_float(stats.get("avg_execution_s")))


def _trunk_kinds(found: Sequence[Any], *, repo: str, days: int, site: Site, current: str | None
                 ) -> tuple[TrunkKind, ...]:
    by_event = {str(item[0]): item for item in found}
    events = list(TRUNK_KINDS) + sorted(e for e in by_event if e not in TRUNK_KINDS)
    kinds = []
    for event in events:
        item = by_event.get(event)
        sha = str(item[1]) if item else ""
        kinds.append(TrunkKind(
            event=event, href=site.backend(repo, days, event=event) if _EVENT.match(event) else None,
            newest_sha=sha, commit_href=commit_url(str(item[4]), sha) if item else None,
            newest_at=_time(item[2]) if item else None, commits=int(item[3]) if item else 0,
            current=event == current))
    return tuple(kinds)


def commit_url(upstream: str, sha: str) -> str | None:
    """The commit on GitHub, for a real repository name and a hexadecimal SHA; None otherwise."""
    if not is_repo_name(upstream) or not _SHA.match(sha):
        return None
    return f"https://github.com/{upstream}/commit/{sha}"


def is_event_view(event: str) -> bool:
    return bool(_EVENT.match(event))


def _row(upstream: str, number: int, sha: str, backend: BackendResult, group: list[Mapping[str, Any]], *,
         site: Site, superseded: bool) -> MatrixRow:
    at_sha = [row for row in group if str(row["head_sha"]) == sha]
    event = str(at_sha[0].get("event_type") or "") if at_sha else ""
    head = group[0]
    return MatrixRow(
        upstream_repo=upstream, pr_number=number, head_sha=sha, event_type=event,
        href=site.pr(upstream, number) if number else None, commit_href=commit_url(upstream, sha),
        title=str(head.get("pr_title") or "") if number else "",
        author=str(head.get("pr_author") or "") if number else "", superseded=superseded,
        last_at=max((_time(row.get("received_at")) for row in at_sha), default=None, key=_sort_key),
        cells=tuple(backend.jobs),  # re-aligned to the section's columns in _section
    )


def _columns(keys: set[tuple[str, str]]) -> tuple[Column, ...]:
    """The section's columns: one per job, except numbered shards of one stem (three or more), which share one."""
    stems: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for workflow, job in keys:
        match = _SHARD.match(job)
        if match:
            stems.setdefault((workflow, match["stem"]), []).append((int(match["n"]), job))
    grouped = {(workflow, stem): tuple(name for _, name in sorted(members))
               for (workflow, stem), members in stems.items() if len(members) >= SHARD_MIN}
    in_group = {(workflow, name) for (workflow, _), names in grouped.items() for name in names}
    columns = [Column(workflow, job) for workflow, job in keys if (workflow, job) not in in_group]
    columns += [Column(workflow, stem, names) for (workflow, stem), names in grouped.items()]
    return tuple(sorted(columns, key=lambda c: (c.workflow.lower(), c.job.lower(), c.members)))


def _section(rows: list[MatrixRow], *, shown: int, total: int) -> Section:
    columns = _columns({(job.workflow, job.job) for row in rows for job in row.cells
                        if isinstance(job, JobResult)})
    aligned = []
    counts = VerdictCounts()
    for row in rows:
        by_column = {(job.workflow, job.job): job for job in row.cells if isinstance(job, JobResult)}
        cells: list[JobResult | ShardGroup | None] = []
        for column in columns:
            if column.members:
                shards = tuple((name, by_column.get((column.workflow, name))) for name in column.members)
                cells.append(ShardGroup(shards) if any(job for _, job in shards) else None)
            else:
                cells.append(by_column.get((column.workflow, column.job)))
        aligned.append(dataclasses.replace(row, cells=tuple(cells)))
        counts = counts + VerdictCounts.of(by_column.values())
    return Section(columns=columns, rows=tuple(aligned), counts=counts, shown=shown, total=max(total, shown))


def _newest_level(rows: list[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    newest = max(rows, key=lambda row: _sort_key(_time(row.get("received_at"))))
    return str(newest.get("downstream_level") or "")


def _recency(group: list[Mapping[str, Any]]) -> datetime:
    return max(_sort_key(_time(row.get("received_at"))) for row in group)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _sort_key(value: datetime | None) -> datetime:
    return value or _EPOCH


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str) and value:
        return parse_time(value)
    return None
