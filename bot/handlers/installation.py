"""``installation`` / ``installation_repositories`` events: which installation serves which repository."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.context import HandlerContext
from bot.logfmt import get_logger
from bot.router import Delivery, Router

log = get_logger("oot_hud.bot.handlers.installation")

ADDED_ACTIONS = ("created", "new_permissions_accepted", "unsuspend")
REMOVED_ACTIONS = ("deleted", "suspend")


def _names(repos: Any) -> list[str]:
    if not isinstance(repos, list):
        return []
    return [r["full_name"] for r in repos if isinstance(r, dict) and isinstance(r.get("full_name"), str)]


def _account(payload: dict[str, Any]) -> str:
    account = (payload.get("installation") or {}).get("account") or {}
    return str(account.get("login") or "") if isinstance(account, dict) else ""


def router(ctx: HandlerContext) -> Router:
    routes = Router()

    async def store(delivery: Delivery, repos: list[str], *, removed: bool) -> None:
        installation_id = delivery.installation_id
        if installation_id is None or not repos:
            return
        await asyncio.to_thread(ctx.state.set_installation, repos, installation_id,
                                _account(delivery.payload), removed=removed)
        log.info("installation repositories updated",
                 extra={**delivery.log_fields(), "repositories": len(repos), "removed": removed})

    async def installation(delivery: Delivery) -> None:
        removed = delivery.action in REMOVED_ACTIONS
        await store(delivery, _names(delivery.payload.get("repositories")), removed=removed)

    for action in ADDED_ACTIONS + REMOVED_ACTIONS:
        routes.add("installation", action, installation)

    @routes.register("installation_repositories", "added")
    async def added(delivery: Delivery) -> None:
        await store(delivery, _names(delivery.payload.get("repositories_added")), removed=False)

    @routes.register("installation_repositories", "removed")
    async def removed(delivery: Delivery) -> None:
        await store(delivery, _names(delivery.payload.get("repositories_removed")), removed=True)

    return routes
