"""Post on-call notices: claim each (backend, head) once in the shared bot state, then one comment for the
ones this round claimed. At most once: a claim whose comment fails is not retried (docs/bot.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from bot.logfmt import get_logger
from renderers.oncall import OncallNotice
from sql.bot_state import BotState
from sql.records import PrRef

log = get_logger("oot_hud.bot.oncall")

# (installation, repo, number, body) -> posts one new comment, paced and retried like the writer's writes.
PostComment = Callable[[int, str, int, str], Awaitable[object]]
# The comment for the notices claimed in this round.
RenderNotice = Callable[[tuple[OncallNotice, ...]], str]


async def notify(state: BotState, post: PostComment, installation: int, pr: PrRef,
                 notices: tuple[OncallNotice, ...], render: RenderNotice) -> tuple[OncallNotice, ...]:
    """Claim every notice not yet sent (any instance), post one comment for the claimed ones; returns them."""
    claimed = []
    for notice in notices:
        if await asyncio.to_thread(state.set_once, pr, notice.key, notice.head_sha):
            claimed.append(notice)
    if not claimed:
        return ()
    body = render(tuple(claimed))
    try:
        await post(installation, pr.upstream_repo, pr.pr_number, body)
    except Exception as exc:
        # Claimed and not sent: never retried, so a flapping GitHub cannot turn into repeated mentions.
        log.error("on-call notice not posted", extra={"pr": f"{pr.upstream_repo}#{pr.pr_number}",
                                                      "backends": len(claimed), "error": str(exc)})
        return ()
    log.info("on-calls notified", extra={"pr": f"{pr.upstream_repo}#{pr.pr_number}",
                                         "backends": ",".join(n.repo for n in claimed)})
    return tuple(claimed)
