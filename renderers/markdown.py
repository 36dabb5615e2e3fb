"""The PR comment and the check-run output (Markdown) from a ``PrView``, within GitHub's size budgets."""

from __future__ import annotations

import dataclasses

from renderers.pr_view import PrView

COMMENT_MARKER = "<!-- oot-hud:pr-comment -->"  # first line of the sticky comment
COMMENT_BUDGET_CHARS = 65_536  # GitHub's limit on a comment body (characters)
CHECK_SUMMARY_BUDGET_BYTES = 65_535  # GitHub's limit on a check run's output.summary and output.text (bytes)
CHECK_RUN_NAME = "OOT Backends"


@dataclasses.dataclass(frozen=True, slots=True)
class CheckRunOutput:
    """What the bot sends for the PR's check run (create or update), on ``head_sha``."""

    name: str
    head_sha: str
    status: str  # "in_progress" or "completed"
    conclusion: str | None  # None while in progress; else "success", "failure" or "neutral"
    title: str
    summary: str  # <= CHECK_SUMMARY_BUDGET_BYTES UTF-8 bytes
    text: str  # <= CHECK_SUMMARY_BUDGET_BYTES UTF-8 bytes
    details_url: str  # the PR page
    external_id: str  # "{upstream_repo}#{pr_number}"


def render_pr_comment(view: PrView) -> str | None:
    """The sticky comment body (starts with ``COMMENT_MARKER``), or None when the PR has no displayable
    OOT results (then the bot posts nothing). Deterministic: no timestamps, so an unchanged state renders
    an identical body and the bot can skip the write."""
    raise NotImplementedError


def render_check_run(view: PrView) -> CheckRunOutput:
    """The check run for the view's current head SHA (conclusion policy in docs/pr-view.md)."""
    raise NotImplementedError


def short_fallback_comment(view: PrView) -> str:
    """A tiny body (marker, headline, link to the PR page) for when GitHub refuses the full one (422)."""
    raise NotImplementedError
