"""HTML rendering: one Jinja2 environment (autoescape on for every template), the shared filters, and links.

Every untrusted string reaches a page through autoescaping; the filters here that return ``Markup`` build
it with ``Markup.format``/``escape`` so their arguments are escaped too. URLs become links only when they
are ``https://`` (anything else is shown as plain escaped text).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from renderers.policy import (
    VERDICT_COLOUR,
    Verdict,
    format_duration,
    format_pass_rate,
    pass_rate_band,
)

NAME_LIMIT = 120  # longer untrusted names are cut on screen (the full text stays in the tooltip)

VERDICT_LABEL = {
    Verdict.SUCCESS: "success", Verdict.FAILURE: "failure", Verdict.TIMED_OUT: "timed out",
    Verdict.CANCELLED: "cancelled", Verdict.RUNNING: "running", Verdict.NO_REPORT: "no report",
}
# Control and bidirectional-override characters are dropped from displayed text: escaping leaves them
# live, and an RLO (U+202E) could make "exe.txt" read as "txt.exe".
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


# ---- filters -------------------------------------------------------------------------------------------

def clean_text(value: object) -> str:
    return _UNSAFE_CHARS.sub("", "" if value is None else str(value))


def _e(value: object) -> str:
    return str(escape(value))


def _safe(html: str) -> Markup:
    """Mark HTML as safe. Only for strings assembled in this module from literals and ``_e()`` values
    (faster than ``Markup.format`` on pages with thousands of chips)."""
    return Markup(html)  # noqa: S704


def bidi(value: object, limit: int = NAME_LIMIT) -> Markup:
    """Untrusted text, escaped, isolated from the surrounding direction, cut at ``limit`` characters."""
    text = clean_text(value)
    if len(text) <= limit:
        return _safe(f"<bdi>{_e(text)}</bdi>")
    return _safe(f'<bdi title="{_e(text)}">{_e(text[:limit])}…</bdi>')


def is_https(url: object) -> bool:
    return isinstance(url, str) and _is_https(url)


@functools.lru_cache(maxsize=8192)  # pages repeat the same run URL across a backend's jobs
def _is_https(url: str) -> bool:
    if not url or len(url) > 2048 or _UNSAFE_CHARS.search(url) or any(ch.isspace() for ch in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme == "https" and bool(parts.hostname)
    except ValueError:  # e.g. "https://[x]/": a bracketed host that is no IP address
        return False


def link(url: object, text: object, limit: int = NAME_LIMIT) -> Markup:
    """An https link, or (for any other URL) the text alone, escaped."""
    label = bidi(text, limit)
    if not is_https(url):
        return label
    return _safe(f'<a href="{_e(url)}" rel="noopener noreferrer nofollow">{label}</a>')


def linked(content: Markup, url: object) -> Markup:
    """Already-safe markup (a chip) wrapped in an https link, or left as it is for any other URL."""
    content = escape(content)  # a Markup argument comes back unchanged; plain text is escaped
    if not is_https(url):
        return content
    return _safe(f'<a href="{_e(url)}" rel="noopener noreferrer nofollow">{content}</a>')


def chip(verdict: Verdict | str, label: str | None = None, tip: str | None = None) -> Markup:
    v = Verdict(verdict)
    colour = VERDICT_COLOUR[v]
    text = _e(label if label is not None else VERDICT_LABEL[v])
    if tip:
        return _safe(f'<span class="chip chip-{colour}" data-verdict="{v.value}" title="{_e(clean_text(tip))}">'
                     f"{text}</span>")
    return _safe(f'<span class="chip chip-{colour}" data-verdict="{v.value}">{text}</span>')


def rate_chip(rate: float | None) -> Markup:
    band = pass_rate_band(rate)
    return _safe(f'<span class="chip chip-{band}" data-band="{band}">{_e(format_pass_rate(rate))}</span>')


def level_chip(level: str | None) -> Markup:
    text = clean_text(level) or "?"
    css = text if re.fullmatch(r"L[1-4]", text) else ""
    return _safe(f'<span class="chip chip-level {css}">{_e(text)}</span>')


def duration(seconds: float | None) -> str:
    return format_duration(seconds) or "–"


def when(value: datetime | None) -> Markup:
    """A ``<time>`` element: machine-readable ISO in the attribute, short UTC text on screen."""
    if value is None:
        return Markup("–")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    iso = value.isoformat(timespec="seconds").replace("+00:00", "Z")
    return _safe(f'<time datetime="{iso}">{value.strftime("%Y-%m-%d %H:%M UTC")}</time>')


def sparkline(points: Sequence[float | None], width: int = 120, height: int = 24,
              label: str = "pass rate per day") -> Markup:
    """Inline SVG of values in [0, 1] (None = no data that day, a gap); empty string for no data at all."""
    if not any(p is not None for p in points):
        return Markup("")
    n = len(points)
    step = width / max(n - 1, 1)
    pad = 2
    segments: list[list[str]] = [[]]
    for i, value in enumerate(points):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        x = i * step if n > 1 else width / 2
        y = pad + (1 - min(max(value, 0.0), 1.0)) * (height - 2 * pad)
        segments[-1].append(f"{x:.1f},{y:.1f}")
    lines = []
    for seg in segments:
        if len(seg) == 1:  # a lone day is a dot-sized segment so it stays visible
            x, y = seg[0].split(",")
            left, right = max(float(x) - 1, 0.0), min(float(x) + 1, float(width))
            seg = [f"{left:.1f},{y}", f"{right:.1f},{y}"]
        if seg:
            lines.append(Markup('<polyline points="{}"/>').format(" ".join(seg)))
    desc = ", ".join("–" if p is None else f"{p * 100:.0f}%" for p in points)
    return Markup(
        '<svg class="spark" role="img" aria-label="{label}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        'xmlns="http://www.w3.org/2000/svg"><title>{label}: {desc}</title>'
        '<line class="base" x1="0" y1="{b}" x2="{w}" y2="{b}"/>{lines}</svg>'
    ).format(label=label, w=width, h=height, desc=desc, b=height - pad, lines=Markup("").join(lines))


def job_tip(job: Any) -> str:
    """A job cell's tooltip (plain text; escaped where used): attempt, legs, duration, tests, queue time."""
    parts = [f"attempt {job.attempt}"]
    if len(job.legs) > 1:
        parts.append(f"{len(job.legs)} legs")
    if job.flaky:
        parts.append("flaky (an earlier attempt failed)")
    if job.duration_s is not None:
        parts.append(f"took {format_duration(job.duration_s)}")
    if job.tests_passed is not None or job.tests_failed is not None:
        tests = f"tests {job.tests_passed or 0:,} passed, {job.tests_failed or 0:,} failed"
        if job.tests_skipped:
            tests += f", {job.tests_skipped:,} skipped"
        parts.append(tests)
    if job.queue_time_s is not None:
        parts.append(f"queued {format_duration(job.queue_time_s)}")
    if getattr(job, "silent", False):
        parts.append("no report for a long time")
    return " · ".join(parts)


def job_log_url(run_url: str, check_run_id: str) -> str | None:
    """A job's own log on GitHub (``<run url>/job/<check run id>``): only for an https run URL without a query
    or fragment and a numeric check-run id; None otherwise (the run's link is then the only one)."""
    if not check_run_id.isdigit() or len(check_run_id) > 20 or not is_https(run_url) or "?" in run_url \
            or "#" in run_url:
        return None
    return f"{run_url.rstrip('/')}/job/{check_run_id}"


def job_cell(job: Any) -> Markup:
    """A matrix cell: one chip per leg (linked to that leg's own job log, else its run), a link to the run,
    flaky / attempt tags, the artifacts link. Built here rather than in a template macro: a matrix page has
    ~1,000 cells and the macro was its render cost."""
    if job is None:
        return _safe('<span class="note" aria-label="not run">·</span>')
    tip = job_tip(job)
    legs = job.legs
    if len(legs) > 1:
        count = len(legs)
        chips = "".join(linked(chip(leg.verdict, tip=f"{tip} · leg {index} of {count}"),
                               job_log_url(leg.run_url, leg.check_run_id) or leg.run_url)
                        for index, leg in enumerate(legs, 1))
    else:
        leg = legs[0]
        chips = linked(chip(job.verdict, tip=tip), job_log_url(leg.run_url, leg.check_run_id) or job.run_url) + "\n"
    run = (f' <a class="run" href="{_e(job.run_url)}" rel="noopener noreferrer nofollow" title="the workflow run">'
           "run</a>") if is_https(job.run_url) else ""
    flaky = '<span class="tag tag-flaky" title="an earlier attempt failed">flaky</span>' if job.flaky else ""
    attempt = f'<span class="tag" title="final attempt">#{_e(job.attempt)}</span>' if job.attempt > 1 else ""
    artifacts = f'<div class="note">{link(job.artifact_url, "artifacts")}</div>' if job.artifact_url else ""
    return _safe(f'<div class="legs">\n{chips}{flaky}{attempt}{run}</div>\n{artifacts}')


def shard_cell(group: Any) -> Markup:
    """Numbered shards in one cell: the worst result, opening (``<details>``, no script) into each shard."""
    jobs = group.jobs
    failed = group.failed
    summary = f"{failed} of {len(group.shards)} failed" if failed else f"{len(jobs)} of {len(group.shards)} ran"
    items = "".join(f'<li><span class="shard">{bidi(name, 60)}</span> {job_cell(job)}</li>'
                    for name, job in group.shards)
    return _safe(f'<details class="shards"><summary>{chip(group.verdict, tip=summary)} '
                 f'<span class="note">{_e(summary)}</span></summary><ul>{items}</ul></details>')


def matrix_cell(cell: Any) -> Markup:
    """A matrix cell of either kind: one job, or a group of shards (anything with ``shards``)."""
    return shard_cell(cell) if hasattr(cell, "shards") else job_cell(cell)


ENV = Environment(
    loader=PackageLoader("renderers", "templates"),
    autoescape=True,  # every template, whatever its extension
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(bidi=bidi, link=link, chip=chip, rate_chip=rate_chip, level_chip=level_chip,
                   duration=duration, when=when, sparkline=sparkline, clean=clean_text,
                   job_tip=job_tip, linked=linked, job_cell=job_cell, matrix_cell=matrix_cell)
ENV.globals.update(format_pass_rate=format_pass_rate, Verdict=Verdict)

# Our own stylesheet (not input), inlined so pages need no other request and work offline.
_STYLE = Markup((resources.files("renderers") / "templates" / "style.css").read_text())  # noqa: S704


def render_page(template: str, **context: Any) -> str:
    """Render a page template that extends ``base.html`` (see its header comment for the context)."""
    return ENV.get_template(template).render(css=_STYLE, **context)


def escape_text(value: object) -> Markup:
    return escape(clean_text(value))
