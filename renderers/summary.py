"""The global summary page's input: ``oot_summary`` rows -> ``SummaryPage`` (pure; pass rates via policy)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from renderers.frame import Crumb, Site, range_label, range_links
from renderers.html import render_page
from renderers.policy import pass_rate


@dataclasses.dataclass(frozen=True, slots=True)
class BackendSummary:
    """One backend's row: counts are jobs at their final attempt in the range (L1 never appears)."""

    repo: str
    href: str | None  # its matrix page; None for a name that cannot be a repository
    level: str
    rate: float | None
    successes: int
    failures: int
    timed_out: int
    cancelled: int
    running: int
    no_report: int
    flaky: int
    total: int
    avg_duration_s: float | None
    last_run: datetime | None
    trunk_rate: float | None
    trunk_judged: int
    series: tuple[float | None, ...]  # pass rate per day, oldest first (None: nothing completed that day)
    series_days: tuple[date, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class SummaryPage:
    days: int
    generated_at: datetime
    site: Site
    backends: tuple[BackendSummary, ...]  # worst pass rate first, as the query sorts them

    def context(self) -> dict[str, Any]:
        return {
            "title": f"OOT backends, {range_label(self.days)}",
            "crumbs": (Crumb(range_label(self.days)),),
            "ranges": range_links(self.days, self.site.summary, self.site.ranges),
            "home": self.site.home(),
            "generated_at": self.generated_at,
            "page": self,
        }


def render_summary(page: SummaryPage) -> str:
    return render_page("summary.html", **page.context())


def build_summary(rows: Iterable[Mapping[str, Any]], *, days: int, now: datetime, site: Site) -> SummaryPage:
    """Turn ``oot_summary`` rows into the page (order kept: the query sorts worst first)."""
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    first_day = (now - timedelta(days=days)).astimezone(UTC).date()
    day_list = tuple(first_day + timedelta(days=i) for i in range((now.astimezone(UTC).date() - first_day).days + 1))
    backends = tuple(_backend(row, days=days, day_list=day_list, site=site) for row in rows)
    return SummaryPage(days=days, generated_at=now, site=site, backends=backends)


def _backend(row: Mapping[str, Any], *, days: int, day_list: tuple[date, ...], site: Site) -> BackendSummary:
    successes, failures, timed_out = int(row["successes"]), int(row["failures"]), int(row["timed_out"])
    per_day = {
        _as_date(day): pass_rate(int(ok), int(judged) - int(ok), 0)
        for day, ok, judged in zip(row["series_days"], row["series_successes"], row["series_judged"], strict=True)
    }
    trunk_ok, trunk_failed = int(row["trunk_successes"]), int(row["trunk_failures"])
    trunk_timed_out = int(row["trunk_timed_out"])
    repo = str(row["downstream_repo"])
    last_run = row.get("last_run")
    return BackendSummary(
        repo=repo, href=site.backend(repo, days), level=str(row.get("level") or ""),
        rate=pass_rate(successes, failures, timed_out),
        successes=successes, failures=failures, timed_out=timed_out, cancelled=int(row["cancelled"]),
        running=int(row["running"]), no_report=int(row["no_report"]), flaky=int(row["flaky"]),
        total=int(row["total"]),
        avg_duration_s=None if row.get("avg_duration_s") is None else float(row["avg_duration_s"]),
        last_run=_as_utc(last_run) if isinstance(last_run, datetime) else None,
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


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
