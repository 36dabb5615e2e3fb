"""Fetch and decide: a PR's current comment body and check-run output, from the warehouse and renderers."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from policy.pr_policy import DEFAULT_POLICY, PrPolicy
from renderers.markdown import CheckRunOutput, render_check_run, render_pr_comment, short_fallback_comment
from renderers.oncall import OncallNotice, oncall_notices, render_oncall_comment
from renderers.pr_view import build_pr_view, gate_decision, has_results
from sql.pr_results import fetch_pr_rows
from sql.warehouse import Warehouse


@dataclasses.dataclass(frozen=True, slots=True)
class Rendered:
    """What the PR should show now. ``comment`` None = post nothing; ``check`` None = no check run yet."""

    comment: str | None
    short_comment: str | None
    check: CheckRunOutput | None
    # True when the current head SHA has results (a check run may be created); else only update one.
    check_has_results: bool = True
    # Seconds until the merge gate changes with no new result (a pending backend passes the max pending
    # age): render again then. None: nothing changes by itself.
    recheck_after: float | None = None
    # On-call notices (only when the deployment opted in) and the comment for the ones a round claims.
    notices: tuple[OncallNotice, ...] = ()
    render_notice: Callable[[tuple[OncallNotice, ...]], str] | None = None


Render = Callable[[str, int], Awaitable[Rendered]]
RenderSync = Callable[[str, int], Rendered]


def warehouse_renderer(warehouse: Warehouse, *, silence_hours: float, public_url: str,
                       now: Callable[[], datetime] | None = None,
                       policy: Callable[[], PrPolicy] = lambda: DEFAULT_POLICY) -> RenderSync:
    """The production renderer: saved query -> PR view -> Markdown (blocking; run it in a thread).
    ``policy()``: the deployment's rules as of this render (the allowlist changes while running)."""

    def render(upstream_repo: str, pr_number: int) -> Rendered:
        rows = fetch_pr_rows(warehouse, upstream_repo, pr_number)
        view = build_pr_view(rows, now=now() if now else datetime.now(UTC), silence_hours=silence_hours,
                             public_url=public_url, upstream_repo=upstream_repo, pr_number=pr_number,
                             policy=policy())
        if not has_results(view):
            return Rendered(None, None, None, False)
        change = gate_decision(view).next_change if view.backends else None
        notices = oncall_notices(view) if view.policy.notify_oncalls else ()
        return Rendered(comment=render_pr_comment(view), short_comment=short_fallback_comment(view),
                        check=render_check_run(view) if view.head_sha else None,
                        check_has_results=bool(view.backends),
                        recheck_after=None if change is None else change.total_seconds() + 0.5,
                        notices=notices,
                        render_notice=functools.partial(render_oncall_comment, view) if notices else None)

    return render
