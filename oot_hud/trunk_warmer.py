"""Refresh the trunk-failing cache when trunk results change, so PR renders find it warm.

Every trunk insert changes the cache's fingerprint, and the first PR render after it would pay the trunk
read itself (~20-45 ms on a million rows). Trunk results are announced like PR results (PR number 0), so
this listener recomputes the set in the background right away, once per burst of announcements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sql.pr_results import trunk_failing_cache
from sql.records import PrRef
from sql.warehouse import Warehouse

log = logging.getLogger("oot_hud.trunk_warmer")


class TrunkWarmer:
    """A ``Services`` listener; ``stop`` before the warehouse closes."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self._repos: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.refreshed = 0  # for tests: how many refreshes ran

    def __call__(self, pr: PrRef) -> None:
        if pr.pr_number != 0:
            return
        self._repos.add(pr.upstream_repo)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh(), name="trunk-cache-warmer")

    async def _refresh(self) -> None:
        cache = trunk_failing_cache(self._warehouse)
        while self._repos:
            repo = self._repos.pop()
            try:
                await asyncio.to_thread(cache.failing, self._warehouse, repo)
                self.refreshed += 1
            except Exception:  # a warm cache is an optimisation: the next render reads it itself
                log.exception("event=trunk_cache_refresh_failed upstream_repo=%s", repo)

    async def idle(self) -> None:
        """Return once no refresh is pending or running."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        self._repos.clear()
        if self._task is not None and not self._task.done():
            with contextlib.suppress(Exception):
                await self._task
