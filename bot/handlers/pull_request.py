"""``pull_request`` events: record the PR's head/state/base/title/author/labels in ``oot_pr_heads``, mark the PR
dirty when the comment or check may change."""

from __future__ import annotations

import asyncio
from typing import Any

from bot.context import HandlerContext
from bot.logfmt import get_logger
from bot.pr_state import PrHead, when
from bot.router import Delivery, Router
from sql.records import PrRef

log = get_logger("oot_hud.bot.handlers.pull_request")

HEAD_ACTIONS = ("opened", "reopened", "synchronize", "closed")
MAX_TITLE = 256  # GitHub's own limit on a PR title
MAX_LOGIN = 39
MAX_LABEL = 50  # GitHub's own limit on a label name
MAX_LABELS = 100  # GitHub's own limit on labels per PR


def head_from_payload(delivery: Delivery) -> PrHead | None:
    """The PR head a ``pull_request`` payload describes, or None when the payload lacks its parts."""
    payload = delivery.payload
    pr: Any = payload.get("pull_request")
    repo: Any = (payload.get("repository") or {}).get("full_name")
    if not isinstance(pr, dict) or not isinstance(repo, str):
        return None
    number = pr.get("number", payload.get("number"))
    sha = (pr.get("head") or {}).get("sha")
    if not isinstance(number, int) or number <= 0 or not isinstance(sha, str) or not sha:
        return None
    return PrHead(upstream_repo=repo, pr_number=number, head_sha=sha, state=str(pr.get("state") or "open"),
                  base_ref=str((pr.get("base") or {}).get("ref") or ""),
                  installation_id=delivery.installation_id or 0, updated_at=when(pr.get("updated_at")),
                  title=_text(pr.get("title"), MAX_TITLE), author=_text((pr.get("user") or {}).get("login"), MAX_LOGIN),
                  labels=_labels(pr.get("labels")))


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _labels(value: Any) -> tuple[str, ...]:
    """The label names of ``pull_request.labels``, in GitHub's order, bounded; anything malformed is skipped."""
    if not isinstance(value, list):
        return ()
    names = (_text(item.get("name"), MAX_LABEL) for item in value[:MAX_LABELS] if isinstance(item, dict))
    return tuple(dict.fromkeys(name for name in names if name))


def l3_label_changed(delivery: Delivery, prefix: str) -> bool:
    """Whether a ``labeled``/``unlabeled`` event concerns an L3 label (``ciflow/crcr/<device>``): only those
    change the comment (its "add the label" / "waiting for" lines)."""
    label: Any = delivery.payload.get("label")
    name = label.get("name") if isinstance(label, dict) else None
    return isinstance(name, str) and name.startswith(prefix)


def router(ctx: HandlerContext) -> Router:
    routes = Router()

    async def record(delivery: Delivery, *, dirty: bool = True) -> None:
        head = head_from_payload(delivery)
        if head is None:
            log.warning("pull_request payload without a usable PR", extra=delivery.log_fields())
            return
        await asyncio.to_thread(ctx.state.record_head, head)
        if dirty:
            ctx.mark_dirty(PrRef(head.upstream_repo, head.pr_number, head.head_sha))
        log.info("PR head recorded", extra={**delivery.log_fields(), "pr": f"{head.upstream_repo}#{head.pr_number}",
                                            "head_sha": head.head_sha, "state": head.state})

    for action in HEAD_ACTIONS:
        routes.add("pull_request", action, record)

    @routes.register("pull_request", "edited")
    async def edited(delivery: Delivery) -> None:
        changes = delivery.payload.get("changes")
        if isinstance(changes, dict) and "base" in changes:
            await record(delivery)
        elif isinstance(changes, dict) and "title" in changes:
            await record(delivery, dirty=False)  # the pages show it; the comment and check do not

    @routes.register("pull_request", "labeled")
    @routes.register("pull_request", "unlabeled")
    async def labels_changed(delivery: Delivery) -> None:
        await record(delivery, dirty=l3_label_changed(delivery, ctx.policy().label_prefix))

    return routes
