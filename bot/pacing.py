"""Per-installation pacing of content-creating GitHub calls, and the waits GitHub asks for."""

from __future__ import annotations

import asyncio

from bot.clock import Clock

# GitHub's guidance for content-creating requests: about one a second; secondary limits ~80/min.
DEFAULT_PACE_SECONDS = 1.0
BACKOFF_START_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 15 * 60.0


class Pacer:
    """One installation's write gate: a FIFO of writers, one slot every ``interval`` seconds, and a
    block until a moment GitHub named (``retry-after``/``x-ratelimit-reset``) or an exponential backoff."""

    def __init__(self, interval: float, clock: Clock) -> None:
        self.interval = interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._next_slot = float("-inf")
        self._blocked_until = float("-inf")
        self._strikes = 0
        self.slots_granted = 0

    async def slot(self) -> None:
        """Wait for this installation's next write slot (callers queue in arrival order)."""
        async with self._lock:
            while (wait := max(self._next_slot, self._blocked_until) - self._clock.monotonic()) > 0:
                await self._clock.sleep(wait)
            self._next_slot = self._clock.monotonic() + self.interval
            self.slots_granted += 1

    def block_for(self, seconds: float | None) -> float:
        """GitHub said "slow down": block every writer of this installation. ``None`` = no hint given,
        exponential backoff from a minute. Returns the wait applied."""
        if seconds is None:
            seconds = min(BACKOFF_START_SECONDS * 2**self._strikes, BACKOFF_MAX_SECONDS)
            self._strikes += 1
        self._blocked_until = max(self._blocked_until, self._clock.monotonic() + max(0.0, seconds))
        return seconds

    def succeeded(self) -> None:
        self._strikes = 0

    @property
    def blocked_for(self) -> float:
        return max(0.0, self._blocked_until - self._clock.monotonic())
