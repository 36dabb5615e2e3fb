"""``push`` events: a push to the branch the allowlist is read from that touches its file refreshes it."""

from __future__ import annotations

from typing import Any

from bot.context import HandlerContext
from bot.logfmt import get_logger
from bot.router import Delivery, Router

log = get_logger("oot_hud.bot.handlers.push")

# GitHub lists at most this many commits in a push payload; a longer push may touch the file unseen.
MAX_LISTED_COMMITS = 2048


def touches(payload: dict[str, Any], path: str) -> bool:
    """Whether a push payload's commits add, modify or remove ``path`` (or may, when the list is cut)."""
    commits = payload.get("commits")
    if not isinstance(commits, list):
        commits = []
    head = payload.get("head_commit")
    if isinstance(head, dict):
        commits = [*commits, head]
    if len(commits) >= MAX_LISTED_COMMITS:
        return True
    return any(path in (commit.get(field) or ()) for commit in commits if isinstance(commit, dict)
               for field in ("added", "modified", "removed"))


def router(ctx: HandlerContext) -> Router:
    routes = Router()

    @routes.register("push")
    async def push(delivery: Delivery) -> None:
        if ctx.allowlist is None:
            return
        payload = delivery.payload
        repository: Any = payload.get("repository") or {}
        ref: Any = payload.get("ref")
        if not isinstance(repository, dict) or not isinstance(ref, str) or not ref.startswith("refs/heads/"):
            return
        repo, default_branch = repository.get("full_name"), repository.get("default_branch")
        if not isinstance(repo, str) or not isinstance(default_branch, str):
            return
        path = ctx.allowlist.watched_path(repo, ref.removeprefix("refs/heads/"), default_branch)
        if path is None or not touches(payload, path):
            return
        log.info("allowlist changed upstream", extra={**delivery.log_fields(), "repo": repo, "path": path,
                                                      "after": str(payload.get("after") or "")[:40]})
        ctx.allowlist.changed(repo)

    return routes
