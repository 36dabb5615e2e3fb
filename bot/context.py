"""What webhook handlers may use: the bot's warehouse bookkeeping and the writer's triggers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from bot.pr_state import PrState
from sql.records import PrRef


@dataclasses.dataclass(frozen=True)
class HandlerContext:
    state: PrState
    mark_dirty: Callable[[PrRef], None]
    refresh: Callable[[PrRef], None]
    check_run_name: str
    app_id: int | None = None
