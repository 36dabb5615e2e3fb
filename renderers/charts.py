"""Inline SVG charts (no script, no external asset): a daily pass-rate chart with labelled axes.

A day without data is a gap in its line, never a zero. Every point carries a ``<title>`` (the browser shows
it on hover) with the day, the rate and the counts behind it; the page puts the same numbers in a table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

from renderers.policy import format_pass_rate, pass_rate

WIDTH, HEIGHT = 600, 190
LEFT, RIGHT, TOP, BOTTOM = 54, 12, 10, 40  # room for the axes' labels


@dataclasses.dataclass(frozen=True, slots=True)
class DayCount:
    """One day's jobs at their final attempt (one kind, one backend)."""

    day: date
    passed: int
    failed: int
    timed_out: int
    cancelled: int
    total: int

    @property
    def judged(self) -> int:
        return self.passed + self.failed + self.timed_out

    @property
    def rate(self) -> float | None:
        return pass_rate(self.passed, self.failed, self.timed_out)

    def describe(self) -> str:
        """The numbers behind a point, as plain text."""
        return (f"{format_pass_rate(self.rate)} ({self.passed} passed, {self.failed} failed, "
                f"{self.timed_out} timed out of {self.total} jobs)")


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    name: str  # shown in the point titles (a literal of ours, e.g. "PR")
    css: str  # class of its line and points
    points: tuple[DayCount | None, ...]  # aligned with the chart's days


def _e(value: object) -> str:
    return str(escape(value))


def _day_label(day: date) -> str:
    return day.strftime("%b %d").replace(" 0", " ")


def pass_rate_chart(days: Sequence[date], series: Sequence[Series], *, label: str) -> Markup:
    """The chart: x = days (oldest left), y = pass rate 0-100 %; one line per series, gaps where a day has no
    judged job. ``label`` names the chart for screen readers (escaped)."""
    n = len(days)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(n - 1, 1)

    def x(i: int) -> float:
        return LEFT + (i * step if n > 1 else plot_w / 2)

    def y(rate: float) -> float:
        return TOP + (1 - min(max(rate, 0.0), 1.0)) * plot_h

    parts = [f'<svg class="trend" role="img" aria-label="{_e(label)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{_e(label)}</title>']
    for rate in (0.0, 0.5, 1.0):  # horizontal grid and the y axis' labels
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y(rate):.1f}" x2="{WIDTH - RIGHT}" y2="{y(rate):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y(rate) + 4:.1f}" text-anchor="end">'
                     f"{rate * 100:.0f} %</text>")
    if n:
        ticks = sorted({0, n // 2, n - 1}) if n > 2 else list(range(n))
        for i in ticks:  # the x axis' labels: first, middle and last day
            anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
            parts.append(f'<text class="tick" x="{x(i):.1f}" y="{TOP + plot_h + 16}" text-anchor="{anchor}">'
                         f"{_e(_day_label(days[i]))}</text>")
    parts.append(f'<text class="axis" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 4}" text-anchor="middle">'
                 "day (UTC)</text>")
    parts.append(f'<text class="axis" transform="translate(12 {TOP + plot_h / 2:.1f}) rotate(-90)" '
                 'text-anchor="middle">pass rate</text>')
    for line in series:
        segment: list[str] = []
        segments = [segment]
        dots = []
        for i, point in enumerate(line.points[:n]):
            rate = None if point is None else point.rate
            if point is None or rate is None:
                if segment:
                    segment = []
                    segments.append(segment)
                continue
            segment.append(f"{x(i):.1f},{y(rate):.1f}")
            dots.append(f'<circle class="{_e(line.css)}" cx="{x(i):.1f}" cy="{y(rate):.1f}" r="3">'
                        f"<title>{_e(days[i].isoformat())} · {_e(line.name)}: {_e(point.describe())}</title>"
                        "</circle>")
        for points in segments:
            if len(points) > 1:
                parts.append(f'<polyline class="{_e(line.css)}" points="{" ".join(points)}"/>')
        parts.extend(dots)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from literals, numbers and escaped values only
