"""What webhook handlers may use: the bot's warehouse bookkeeping and the writer's triggers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from bot.pr_state import PrState
from policy.pr_policy import DEFAULT_POLICY, PrPolicy
from sql.bot_state import BotState
from sql.records import PrRef


class AllowlistWatch(Protocol):
    """The allowlist source, as the ``push`` handler sees it (``oot_hud.allowlist_source.AllowlistSource``)."""

    def watched_path(self, repo: str, branch: str, default_branch: str) -> str | None: ...

    def changed(self, repo: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class HandlerContext:
    state: PrState
    mark_dirty: Callable[[PrRef], None]
    refresh: Callable[[PrRef], None]
    check_run_name: str
    app_id: int | None = None
    allowlist: AllowlistWatch | None = None
    # Shared with every instance when several run: leases, the PR's GitHub ids, set-once records.
    bot_state: BotState | None = None
    # The deployment's PR rules as of now (the L3 label prefix: which label changes re-render a PR).
    policy: Callable[[], PrPolicy] = lambda: DEFAULT_POLICY
