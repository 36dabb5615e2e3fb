"""Route ``/oot/pr/{owner}/{repo}/{number}``: one PR's OOT results, live from the warehouse."""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

from oot_hud.responses import WAREHOUSE_DOWN, html_page, plain
from oot_hud.services import Services
from renderers.pr_page import dry_run_output, render_pr_page
from renderers.pr_view import build_pr_view
from sql.pr_results import fetch_pr_rows
from sql.warehouse import WarehouseError

log = logging.getLogger("oot_hud.pr_pages")

router = APIRouter(tags=["pages"])

# GitHub's own rules for owner and repository names (a superset is harmless: the query binds the value).
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_NUMBER = re.compile(r"^[0-9]{1,19}$")


def pr_page_clock() -> datetime:
    """The PR page's notion of now (silence); tests pin it with ``app.dependency_overrides``."""
    return datetime.now(UTC)


@router.get("/oot/pr/{owner}/{repo}/{number}", response_class=HTMLResponse, summary="one PR's OOT results",
            responses={200: html_page("the PR page"), 400: plain("not a GitHub owner, repository or PR number"),
                       503: plain(WAREHOUSE_DOWN)})
async def pr_page(request: Request, owner: str, repo: str, number: str,
                  now: Annotated[datetime, Depends(pr_page_clock)]) -> Response:
    """The PR page; in dry run (no GitHub App credentials) it also shows what the bot would post."""
    if not _NAME.match(owner) or not _NAME.match(repo) or owner in (".", "..") or repo in (".", ".."):
        return PlainTextResponse("owner and repo must be GitHub names (letters, digits, '.', '-', '_')",
                                 status_code=400)
    if not _NUMBER.match(number) or int(number) == 0:
        return PlainTextResponse("the PR number must be a positive integer", status_code=400)
    services: Services = await request.app.state.services.settled()
    settings = services.settings
    upstream_repo, pr_number = f"{owner}/{repo}", int(number)

    def fetch_and_render() -> str:
        # Query and rendering both block (the warehouse lock; a big PR renders for tens of ms): one thread.
        rows = fetch_pr_rows(services.warehouse, upstream_repo, pr_number)
        view = build_pr_view(rows, now=now, silence_hours=settings.silence_hours,
                             public_url=settings.public_url, upstream_repo=upstream_repo, pr_number=pr_number,
                             policy=services.pr_policy())  # the bot's rules: the dry run shows what it posts
        return render_pr_page(view, dry_run=None if settings.github_enabled else dry_run_output(view))

    try:
        return HTMLResponse(await asyncio.to_thread(fetch_and_render))
    except WarehouseError:
        log.exception("event=pr_page_query_failed upstream_repo=%s pr=%s", upstream_repo, pr_number)
        return PlainTextResponse("the warehouse is unavailable; try again shortly", status_code=503)
