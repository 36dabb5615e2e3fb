"""``check_run`` events: a re-requested ``OOT Backends`` run is refreshed on its PR(s)."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.context import HandlerContext
from bot.logfmt import get_logger
from bot.router import Delivery, Router
from sql.records import PrRef

log = get_logger("oot_hud.bot.handlers.check_run")


def router(ctx: HandlerContext) -> Router:
    routes = Router()

    @routes.register("check_run", "rerequested")
    async def rerequested(delivery: Delivery) -> None:
        run: Any = delivery.payload.get("check_run")
        repo: Any = (delivery.payload.get("repository") or {}).get("full_name")
        if not isinstance(run, dict) or not isinstance(repo, str):
            return
        if run.get("name") != ctx.check_run_name:
            return
        app_id = (run.get("app") or {}).get("id")
        if ctx.app_id is not None and app_id is not None and app_id != ctx.app_id:
            return  # another App's check run
        sha = str(run.get("head_sha") or "")
        numbers = [pr.get("number") for pr in run.get("pull_requests") or [] if isinstance(pr, dict)]
        numbers = [n for n in numbers if isinstance(n, int) and n > 0]
        if not numbers and sha:
            # Fork PRs: GitHub leaves pull_requests empty; map the SHA to the PR ourselves.
            numbers = await asyncio.to_thread(ctx.state.prs_for_sha, repo, sha)
        if not numbers:
            log.info("re-requested check run matches no known PR", extra={**delivery.log_fields(), "head_sha": sha})
        for number in numbers:
            ctx.refresh(PrRef(repo, number, sha))
            log.info("check run refresh", extra={**delivery.log_fields(), "pr": f"{repo}#{number}"})

    return routes
