"""The PR page (``/oot/pr/{owner}/{repo}/{number}``): a ``PrView`` (+ the dry-run bot output) -> HTML."""

from __future__ import annotations

import dataclasses
from typing import Any

from renderers.frame import DEFAULT_RANGE, Crumb, Site, is_repo_name
from renderers.gfm import render_gfm
from renderers.html import render_page
from renderers.markdown import (
    CheckRunOutput,
    check_status,
    headline_icon,
    headline_text,
    render_check_run,
    render_pr_comment,
)
from renderers.policy import format_duration
from renderers.pr_view import HEAD_FROM_WEBHOOK, BackendResult, JobResult, LegResult, PrView


@dataclasses.dataclass(frozen=True, slots=True)
class DryRunOutput:
    """What the bot would have posted without GitHub App credentials (shown verbatim on the page)."""

    comment: str | None  # None: no comment would be posted
    check_run: CheckRunOutput


def dry_run_output(view: PrView) -> DryRunOutput:
    return DryRunOutput(comment=render_pr_comment(view), check_run=render_check_run(view))


def render_pr_page(view: PrView, *, dry_run: DryRunOutput | None = None, site: Site | None = None) -> str:
    """The whole page; with ``dry_run``, a section showing the exact comment and check-run output."""
    site = site or Site()
    repo_ok = is_repo_name(view.upstream_repo) and view.pr_number > 0
    github_pr = f"https://github.com/{view.upstream_repo}/pull/{view.pr_number}" if repo_ok else None
    status, conclusion = check_status(view)
    context: dict[str, Any] = {
        "title": f"PR #{view.pr_number} · {view.upstream_repo}",
        "crumbs": (Crumb("PRs"), Crumb(f"{view.upstream_repo}#{view.pr_number}", github_pr)),
        "ranges": (),
        "home": site.home(),
        "generated_at": view.generated_at,
        "view": view,
        "icon": headline_icon(view),
        "headline": headline_text(view),
        "head_from_webhook": view.head_source == HEAD_FROM_WEBHOOK,
        "check_status": status,
        "check_conclusion": conclusion,
        "sections": _sections(view),
        "superseded": [(commit.head_sha, commit.backends) for commit in view.superseded],
        "backend_href": lambda repo: site.backend(repo, DEFAULT_RANGE),
        "job_tip": job_tip,
        "leg_tip": leg_tip,
        "tests": tests_text,
        "dry_run": dry_run,
        "gfm": render_gfm,
    }
    return render_page("pr.html", **context)


def _sections(view: PrView) -> list[tuple[str, str, tuple[BackendResult, ...]]]:
    """(anchor, heading, backends): blocking and stable backends, then observation-only ones."""
    out = []
    if view.main_backends:
        out.append(("current", "Blocking (L4) and stable (L3) backends", view.main_backends))
    if view.observation_backends:
        out.append(("observation", "Observation-only backends (L2)", view.observation_backends))
    return out


def tests_text(passed: int | None, failed: int | None, skipped: int | None) -> str:
    parts = [f"{n:,} {word}" for n, word in ((passed, "passed"), (failed, "failed"), (skipped, "skipped"))
             if n is not None]
    return ", ".join(parts) or "–"


def job_tip(job: JobResult) -> str:
    """Tooltip of a job's verdict chip: attempt, duration, tests, queue time."""
    return " · ".join(part for part in (
        f"attempt {job.attempt}", f"{len(job.legs)} leg{'s' if len(job.legs) != 1 else ''}",
        f"duration {format_duration(job.duration_s) or '–'}",
        f"tests {tests_text(job.tests_passed, job.tests_failed, job.tests_skipped)}",
        f"queued {format_duration(job.queue_time_s) or '–'}",
        "flaky" if job.flaky else "", "also failing on trunk" if job.also_failing_on_trunk else "",
        "no report for longer than the silence threshold" if job.silent else "",
    ) if part)


def leg_tip(leg: LegResult) -> str:
    return " · ".join((f"check run {leg.check_run_id}", f"duration {format_duration(leg.duration_s) or '–'}",
                       f"tests {tests_text(leg.tests_passed, leg.tests_failed, leg.tests_skipped)}",
                       f"queued {format_duration(leg.queue_time_s) or '–'}"))
