"""Time for the bot: a monotonic clock, the wall clock and sleep, injectable so tests never wait."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The process clocks and ``asyncio.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """Virtual time: ``sleep`` advances both clocks at once and records how long it was asked to wait."""

    def __init__(self, start_wall: float = 1_800_000_000.0) -> None:
        self._offset = 0.0
        self._start_wall = start_wall
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._offset

    def wall(self) -> float:
        return self._start_wall + self._offset

    def advance(self, seconds: float) -> None:
        self._offset += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        # Let other tasks run, as a real sleep would.
        await asyncio.sleep(0)
