"""A backend's matrix page input: ``oot_backend_dashboard`` rows -> ``BackendPage`` (pure).

The per-job policies (final attempt, matrix legs, flaky, silence, current vs superseded commit) are the PR
view's: each PR's rows go through ``renderers.pr_view.build_pr_view``, so a cell here and the job on the PR
page can never disagree. Trunk commits (pr_number 0) form their own section with their own pass rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from renderers.frame import Crumb, Site, range_label, range_links
from renderers.html import render_page
from renderers.policy import pass_rate
from renderers.pr_view import BackendResult, JobResult, VerdictCounts, build_pr_view
from sql.records import parse_time

MAX_PRS = 100  # PRs per page (newest activity first); the page says how many more there are
MAX_TRUNK = 30  # trunk commits per page


@dataclasses.dataclass(frozen=True, slots=True)
class MatrixRow:
    """One commit's jobs: a PR head (current or superseded) or a trunk commit."""

    upstream_repo: str
    pr_number: int  # 0 for trunk
    head_sha: str
    event_type: str  # pull_request, push, nightly, periodic
    href: str | None  # the PR's page (live) or the PR on GitHub (static); None for trunk
    superseded: bool
    last_at: datetime | None
    cells: tuple[JobResult | None, ...]  # aligned with the section's columns

    @property
    def short_sha(self) -> str:
        return self.head_sha[:7]


@dataclasses.dataclass(frozen=True, slots=True)
class Section:
    columns: tuple[tuple[str, str], ...]  # (workflow, job)
    rows: tuple[MatrixRow, ...]
    counts: VerdictCounts  # jobs at their final attempt, over every row shown
    shown: int  # PRs (or trunk commits) shown
    total: int  # PRs (or trunk commits) with results in the range

    @property
    def rate(self) -> float | None:
        return pass_rate(self.counts.success, self.counts.failure, self.counts.timed_out)


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

    def context(self) -> dict[str, Any]:
        return {
            "title": f"{self.repo}, {range_label(self.days)}",
            "crumbs": (Crumb(range_label(self.days), self.site.summary(self.days)), Crumb(self.repo)),
            "ranges": range_links(self.days, lambda days: self.site.backend(self.repo, days) or "",
                                  self.site.ranges),
            "home": self.site.home(),
            "generated_at": self.generated_at,
            "refresh": not self.site.static,
            "page": self,
        }


def render_backend(page: BackendPage) -> str:
    return render_page("backend.html", **page.context())


def build_backend(rows: Iterable[Mapping[str, Any]], *, repo: str, days: int, now: datetime, site: Site,
                  silence_hours: float) -> BackendPage:
    """Group the query's rows by PR (all its SHAs) and by trunk commit, then apply the PR view's policies."""
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
    return BackendPage(
        repo=repo, level=level, days=days, generated_at=now, site=site, silence_hours=silence_hours,
        prs=_section(pr_rows, shown=len(pr_groups), total=int(first.get("prs_total") or len(pr_groups))),
        trunk=_section(trunk_rows, shown=len(trunk_groups),
                       total=int(first.get("trunk_total") or len(trunk_groups))),
    )


def _row(upstream: str, number: int, sha: str, backend: BackendResult, group: list[Mapping[str, Any]], *,
         site: Site, superseded: bool) -> MatrixRow:
    at_sha = [row for row in group if str(row["head_sha"]) == sha]
    event = str(at_sha[0].get("event_type") or "") if at_sha else ""
    return MatrixRow(
        upstream_repo=upstream, pr_number=number, head_sha=sha, event_type=event,
        href=site.pr(upstream, number) if number else None, superseded=superseded,
        last_at=max((_time(row.get("received_at")) for row in at_sha), default=None, key=_sort_key),
        cells=tuple(backend.jobs),  # re-aligned to the section's columns in _section
    )


def _section(rows: list[MatrixRow], *, shown: int, total: int) -> Section:
    columns = tuple(sorted({(job.workflow, job.job) for row in rows for job in row.cells if job is not None},
                           key=lambda c: (c[0].lower(), c[1].lower())))
    aligned = []
    counts = VerdictCounts()
    for row in rows:
        by_column = {(job.workflow, job.job): job for job in row.cells if job is not None}
        aligned.append(dataclasses.replace(row, cells=tuple(by_column.get(column) for column in columns)))
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


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str) and value:
        return parse_time(value)
    return None
