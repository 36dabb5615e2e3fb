"""Trends: ``oot_daily_pass_rate`` rows -> each backend's daily PR and trunk pass rate (pure).

Used by the trends page (``/oot/trends``, every backend) and by each backend page's trends section.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from markupsafe import Markup

from renderers.charts import DayCount, Series, pass_rate_chart
from renderers.frame import Crumb, RangeLink, Site, is_repo_name
from renderers.html import clean_text, render_page
from renderers.policy import pass_rate

TREND_RANGES = (7, 30, 90)  # days the trends offer
DEFAULT_TREND_RANGE = 30
_LEVEL_ORDER = {"L4": 0, "L3": 1, "L2": 2}


@dataclasses.dataclass(frozen=True, slots=True)
class BackendTrend:
    repo: str
    level: str
    href: str | None  # the backend's page
    anchor: str | None  # its block's id on the trends page (None for a name that cannot be a repository)
    days: tuple[date, ...]  # every day of the range, oldest first
    pr: tuple[DayCount | None, ...]  # aligned with days; None = no PR job that day
    trunk: tuple[DayCount | None, ...]

    @property
    def pr_rate(self) -> float | None:
        return _overall(self.pr)

    @property
    def trunk_rate(self) -> float | None:
        return _overall(self.trunk)

    @property
    def rows(self) -> tuple[tuple[date, DayCount | None, DayCount | None], ...]:
        """The table behind the chart: days with any job, newest first."""
        return tuple((day, pr, trunk) for day, pr, trunk in reversed(list(zip(self.days, self.pr, self.trunk,
                                                                               strict=True)))
                     if pr is not None or trunk is not None)

    def chart(self) -> Markup:
        return pass_rate_chart(self.days, (Series("PR", "pr", self.pr), Series("trunk", "trunk", self.trunk)),
                               label=f"{clean_text(self.repo)[:200]}: daily pass rate of PR and trunk jobs")


@dataclasses.dataclass(frozen=True, slots=True)
class TrendsPage:
    days: int
    generated_at: datetime
    site: Site
    backends: tuple[BackendTrend, ...]  # L4 first, then L3, L2, other levels; by name within a level

    def context(self) -> dict[str, Any]:
        return {
            "title": f"OOT trends, last {self.days} days",
            "crumbs": (Crumb("trends"), Crumb(f"last {self.days} days")),
            "ranges": trend_links(self.site, self.days),
            "home": self.site.home(),
            "generated_at": self.generated_at,
            "refresh": not self.site.static,
            "page": self,
        }


def trend_links(site: Site, current: int) -> tuple[RangeLink, ...]:
    return tuple(RangeLink(days, site.trends(days), days == current) for days in TREND_RANGES)


def day_range(days: int, now: datetime) -> tuple[date, ...]:
    """Every UTC day the window touches, oldest first (the first one only partly)."""
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    last = now.astimezone(UTC).date()
    first = (now - timedelta(days=days)).astimezone(UTC).date()
    return tuple(first + timedelta(days=i) for i in range((last - first).days + 1))


def build_trends(rows: Iterable[Mapping[str, Any]], *, days: int, now: datetime, site: Site,
                 link_days: int = 7) -> tuple[BackendTrend, ...]:
    """Every backend in ``rows``, L4 first; ``link_days``: the range of the backend pages linked."""
    day_list = day_range(days, now)
    index = {day: i for i, day in enumerate(day_list)}
    by_repo: dict[str, dict[str, list[DayCount | None]]] = {}
    levels: dict[str, str] = {}
    for row in rows:
        repo = str(row["backend"])
        day = _as_date(row["day"])
        if day not in index:
            continue
        kinds = by_repo.setdefault(repo, {"pr": [None] * len(day_list), "trunk": [None] * len(day_list)})
        levels[repo] = str(row.get("level") or "")
        kind = "trunk" if str(row["kind"]) == "trunk" else "pr"
        kinds[kind][index[day]] = DayCount(day, int(row["passed"]), int(row["failed"]), int(row["timed_out"]),
                                           int(row["cancelled"]), int(row["total"]))
    trends = [
        BackendTrend(repo=repo, level=levels[repo], href=site.backend(repo, link_days),
                     anchor=anchor(repo), days=day_list, pr=tuple(kinds["pr"]), trunk=tuple(kinds["trunk"]))
        for repo, kinds in by_repo.items()
    ]
    return tuple(sorted(trends, key=lambda t: (_LEVEL_ORDER.get(t.level, 3), t.repo.lower())))


def anchor(repo: str) -> str | None:
    return "b-" + repo.replace("/", "--") if is_repo_name(repo) else None


def render_trends(page: TrendsPage) -> str:
    return render_page("trends.html", **page.context())


def _overall(points: tuple[DayCount | None, ...]) -> float | None:
    present = [p for p in points if p is not None]
    return pass_rate(sum(p.passed for p in present), sum(p.failed for p in present),
                     sum(p.timed_out for p in present))


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
