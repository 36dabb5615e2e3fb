"""The shared page frame: where pages live (``Site``: live vs static links), breadcrumbs and range links.

Every page's input object builds its frame from here; ``renderers.html`` only renders (no page module
imports another's, and this module imports none of them).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from urllib.parse import quote

RANGES = (1, 7, 30)  # the time ranges every page offers, in days
DEFAULT_RANGE = 7
_REPO = re.compile(r"^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Crumb:
    text: str
    href: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RangeLink:
    days: int
    href: str
    current: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Site:
    """Where pages live. Live: absolute ``/oot/...`` URLs. Static: links relative to the page, which sits
    ``depth`` directories below the site root, so the site works from any sub-path and from file://."""

    static: bool = False
    depth: int = 0
    ranges: tuple[int, ...] = RANGES  # the ranges that exist (a static site may publish fewer)
    pages: int | None = None  # a backend's PR pages that exist (a static site publishes the first); None: all
    trunk_days: int | None = None  # the one range whose trunk-kind views exist (static: the widest); None: all

    @property
    def _root(self) -> str:
        return "../" * self.depth

    def at(self, depth: int) -> Site:
        return dataclasses.replace(self, depth=depth)

    def home(self) -> str:
        return f"{self._root}index.html" if self.static else "/oot"

    def summary(self, days: int) -> str:
        return f"{self._root}{days}d/index.html" if self.static else f"/oot?days={days}"

    def backend(self, repo: str, days: int, *, page: int = 1, event: str | None = None) -> str | None:
        """The backend page (its ``page``-th page of PRs, or the view of one trunk ``event`` type), or None for a
        name that cannot be a GitHub ``owner/name`` or a page this site does not have."""
        if not is_repo_name(repo) or (self.pages is not None and page > self.pages):
            return None
        if event and self.trunk_days is not None:
            days = self.trunk_days
        if self.static:
            name = (f"trunk-{quote(event, safe='')}.html" if event
                    else "index.html" if page == 1 else f"page-{page}.html")
            return f"{self._root}{days}d/{quote(repo)}/{name}"
        extra = f"&event={quote(event, safe='')}" if event else f"&page={page}" if page > 1 else ""
        return f"/oot/{quote(repo)}?days={days}{extra}"

    def badge(self, repo: str) -> str | None:
        """The backend's badge (an SVG), or None for a name that cannot be a repository."""
        if not is_repo_name(repo):
            return None
        return f"{self._root}badge/{quote(repo)}.svg" if self.static else f"/oot/badge/{quote(repo)}.svg"

    def trends(self, days: int) -> str:
        return f"{self._root}trends/{days}d/index.html" if self.static else f"/oot/trends?days={days}"

    def pr(self, upstream_repo: str, number: int) -> str | None:
        """The PR page live; on the static site (which has no PR pages) the PR on GitHub."""
        if not is_repo_name(upstream_repo) or number <= 0:
            return None
        if self.static:
            return f"https://github.com/{quote(upstream_repo)}/pull/{number}"
        return f"/oot/pr/{quote(upstream_repo)}/{number}"


def is_repo_name(value: str) -> bool:
    return bool(_REPO.match(value)) and not any(part in (".", "..") for part in value.split("/"))


def range_label(days: int) -> str:
    return "last day" if days == 1 else f"last {days} days"


def range_links(current: int, href_for: Callable[[int], str], ranges: Sequence[int] = RANGES) -> tuple[RangeLink, ...]:
    return tuple(RangeLink(days, href_for(days), days == current) for days in ranges)
