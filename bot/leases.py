"""This instance's side of the shared PR state: claim a PR's write lease, keep it while writing, finish.

Why a writer never overlaps another on GitHub (GitHub has no conditional writes, so the lease is the only
guard): a holder starts a GitHub write only while its lease has at least ``write_bound`` seconds left by
its own monotonic clock, counted from before the request that granted it was sent; ``write_bound`` is the
longest a GitHub call may take (its timeout) plus the largest wall-clock skew between instances we allow.
Another instance takes an unreleased lease over when *its* wall clock passes the holder's
``expires_at``; with clocks at most ``skew`` apart that is no earlier than the holder's own deadline minus
``skew``, by which time the holder's last call has ended. Beyond that bound the fencing token still keeps
the shared state right (a superseded holder cannot record), but two writes could then reach GitHub at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import socket

from bot.clock import Clock
from bot.logfmt import get_logger
from sql.bot_state import BotState, Busy, Lease, LeaseLost, Mark, PrMemo
from sql.records import PrRef

log = get_logger("oot_hud.bot.leases")

DEFAULT_LEASE_SECONDS = 30.0
DEFAULT_SKEW_SECONDS = 2.0
DEFAULT_POLL_SECONDS = 1.0


def instance_name() -> str:
    """Who holds a lease: host, process and a random part (a restarted process is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclasses.dataclass(frozen=True)
class LeaseConfig:
    seconds: float = DEFAULT_LEASE_SECONDS
    write_bound: float = 15.0 + DEFAULT_SKEW_SECONDS  # GitHub call timeout + the clock skew allowed
    poll: float = DEFAULT_POLL_SECONDS  # how often the marks are read

    def __post_init__(self) -> None:
        if self.seconds <= self.write_bound:
            raise ValueError(f"the lease ({self.seconds} s) must outlast one GitHub call plus the clock skew "
                             f"({self.write_bound} s)")

    @property
    def keep_above(self) -> float:
        """Renew while idle (debouncing) once less than this is left: half-way between expiry and the bound."""
        return self.write_bound + (self.seconds - self.write_bound) / 2


class Leases:
    """Claims, keeps and finishes leases on ``state`` for ``owner``; every call runs in a thread."""

    def __init__(self, state: BotState, clock: Clock, config: LeaseConfig | None = None,
                 owner: str | None = None) -> None:
        self.state = state
        self.clock = clock
        self.config = config or LeaseConfig()
        self.owner = owner or instance_name()

    async def claim(self, pr: PrRef) -> Lease | Busy:
        found = await asyncio.to_thread(self.state.acquire, pr, self.owner, self.config.seconds)
        if isinstance(found, Lease):
            log.debug("lease acquired", extra={"pr": _label(pr), "token": found.token})
        return found

    async def keep(self, lease: Lease, need: float) -> Lease:
        """The lease with at least ``need`` seconds left (renewed if less); ``LeaseLost`` if taken over."""
        if lease.remaining(self.clock.monotonic()) >= need:
            return lease
        renewed = await asyncio.to_thread(self.state.renew, lease, self.config.seconds)
        if renewed.remaining(self.clock.monotonic()) < need:
            # The renewal itself took too long (DynamoDB slow): do not start a write on what is left.
            raise LeaseLost(f"{_label(lease.pr)}: renewed lease has too little time left")
        return renewed

    async def before_write(self, lease: Lease) -> Lease:
        return await self.keep(lease, self.config.write_bound)

    async def finish(self, lease: Lease, memo: PrMemo, mark: Mark | None, *, clear: bool) -> Mark | None:
        """Record the PR's memo and give the lease up (one fenced write); then, if ``clear``, remove the
        mark this render answered. Returns a newer mark that must be rendered too, else None."""
        await asyncio.to_thread(self.state.record, lease, memo, release=True)
        if not clear or mark is None:
            return None
        return await asyncio.to_thread(self.state.clear, mark)

    async def release(self, lease: Lease) -> None:
        await asyncio.to_thread(self.state.release, lease)


def _label(pr: PrRef) -> str:
    return f"{pr.upstream_repo}#{pr.pr_number}"
