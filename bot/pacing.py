"""Per-installation pacing of content-creating GitHub calls, and the waits GitHub asks for, shared by every
instance through ``BotState`` (in memory for the single process, DynamoDB for several)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from bot.clock import Clock
from bot.logfmt import get_logger
from bot.memory_state import MemoryBotState
from sql.bot_state import BotState

log = get_logger("oot_hud.bot.pacing")

# GitHub's guidance for content-creating requests: about one a second; secondary limits ~80/min.
DEFAULT_PACE_SECONDS = 1.0
BACKOFF_START_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 15 * 60.0

T = TypeVar("T")


class Pacer:
    """One installation's write gate: turns ``interval`` seconds apart across every instance sharing
    ``state``, and a block until a moment GitHub named (``retry-after``/``x-ratelimit-reset``) or an
    exponential backoff, seen by every instance. This instance's writers queue in arrival order and ask the
    shared state for one turn at a time (so a turn is never far ahead: a block set meanwhile elsewhere holds
    back at most one call per instance). If the shared state fails, pacing falls back to this process alone."""

    def __init__(self, interval: float, clock: Clock, *, state: BotState | None = None, installation: int = 0) -> None:
        self.interval = interval
        self.installation = installation
        self._clock = clock
        self._local = MemoryBotState(clock)
        self._state: BotState = state or self._local
        self._lock = asyncio.Lock()
        self._blocked_until = float("-inf")  # wall clock: the latest block this instance knows of
        self._strikes = 0
        self.slots_granted = 0

    async def slot(self) -> None:
        """Wait for this installation's next write turn (this instance's callers queue in arrival order)."""
        async with self._lock:
            while True:
                turn = await self._ask(self._state.reserve_write, self._local.reserve_write, self.installation,
                                       self.interval)
                self._blocked_until = max(self._blocked_until, turn.blocked_until)
                if (wait := turn.at - self._clock.wall()) > 0:
                    await self._clock.sleep(wait)
                if self._blocked_until <= turn.at:
                    break
                # A "slow down" reached this instance while it waited: its turn now lies inside the block.
                await self._clock.sleep(max(0.0, self._blocked_until - self._clock.wall()))
            self.slots_granted += 1

    async def block_for(self, seconds: float | None) -> float:
        """GitHub said "slow down": block every writer of this installation, on every instance. ``None`` = no
        hint given, exponential backoff from a minute (counted per instance). Returns the wait applied."""
        if seconds is None:
            seconds = min(BACKOFF_START_SECONDS * 2**self._strikes, BACKOFF_MAX_SECONDS)
            self._strikes += 1
        until = self._clock.wall() + max(0.0, seconds)
        self._blocked_until = max(self._blocked_until, until)
        self._local.block_writes(self.installation, until)
        if self._state is not self._local:
            await self._ask(self._state.block_writes, _nothing, self.installation, until)
        return seconds

    def succeeded(self) -> None:
        self._strikes = 0

    @property
    def blocked_for(self) -> float:
        """How long reads should wait: the latest block this instance knows of (no request)."""
        return max(0.0, self._blocked_until - self._clock.wall())

    async def _ask(self, call: Callable[..., T], fallback: Callable[..., T], *args: Any) -> T:
        if isinstance(self._state, MemoryBotState):
            return call(*args)
        try:
            return await asyncio.to_thread(call, *args)
        except Exception as exc:  # DynamoDB trouble must not stop the writes: pace this process alone
            log.warning("shared pacing unavailable; pacing this instance alone",
                        extra={"installation_id": self.installation, "error": str(exc)})
            return fallback(*args)


def _nothing(*_: Any) -> None:
    return None

