"""What the bot keeps beyond one process, and the interface it asks for it through (``BotState``).

Per PR: a write lease with a fencing token, the ids (and body hashes) of its sticky comment and check run,
"changed" marks the writers claim, and small set-once records ("notified backend X on head H"). Beside
them: webhook delivery ids for de-duplication, and per installation the pace of content-creating GitHub
calls (the next free turn, and GitHub's "slow down" block), so N instances together keep one pace. The
embedded single process keeps all of it in memory (``bot.memory_state.MemoryBotState``); any number of
``serve`` instances share a DynamoDB table (``ingest.stores.dynamo_bot_state.DynamoBotState``). The types
live here, at the bottom, because the replicator (which announces) and both implementations use them
without importing ``bot/``.

Every method blocks (DynamoDB calls through boto3): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Protocol

from sql.records import PrRef

DELIVERY_TTL_SECONDS = 24 * 3600.0  # GitHub redelivers for days, but by hand; automatic retries are quick
ONCE_TTL_SECONDS = 90 * 24 * 3600.0  # set-once records outlive any PR's active life
MARK_TTL_SECONDS = 24 * 3600.0  # a mark nobody claimed for a day (no writer running) is dropped
PR_TTL_SECONDS = 90 * 24 * 3600.0  # a PR's ids, counted from its last write
PACE_TTL_SECONDS = 24 * 3600.0  # an installation's pacing item, counted from its last turn or block


@dataclasses.dataclass(frozen=True, slots=True)
class Watermark:
    """A row the warehouse must show before a render counts as including the change: (key, version).

    The replicator inserts a batch's rows for a table in one INSERT, so once this row is visible the rest
    of that insert is too."""

    key: str
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Announcement:
    """"Results changed for this PR", as the replicator tells it after its warehouse insert landed."""

    pr: PrRef
    watermark: Watermark | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Mark:
    """A PR waiting for a render. ``token`` is new with every announcement, so a writer clears the mark only
    if nothing was announced since it looked (``BotState.clear``)."""

    upstream_repo: str
    pr_number: int
    token: str
    watermark: Watermark | None = None
    refresh_check: bool = False  # a human re-requested the check run: send it even if unchanged

    @property
    def pr(self) -> PrRef:
        return PrRef(self.upstream_repo, self.pr_number)


@dataclasses.dataclass(frozen=True, slots=True)
class PrMemo:
    """What a writer knows about a PR's objects on GitHub. Bodies are kept as SHA-256 hex digests only."""

    comment_id: int | None = None
    comment_hash: str | None = None  # the body GitHub holds
    source_hash: str | None = None  # the rendered body that produced it (differs after a 422 fallback)
    check_sha: str | None = None  # the head SHA of the current check run
    check_run_id: int | None = None
    check_hash: str | None = None  # the check-run payload GitHub holds (None: unknown, send it)


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    """The right to write one PR on GitHub, until ``deadline`` on the holder's monotonic clock.

    ``token`` grows with every grant for the PR (a fencing token): a write to the shared state carrying an
    older token than the PR's current one is refused (``LeaseLost``). ``expires_at`` is the holder's wall
    clock plus the lease length, which other instances compare with their own wall clocks; ``deadline`` is
    counted from just before the request that granted or renewed the lease was sent, so it never overstates
    what the holder has. ``memo`` is the PR's state as the grant found it."""

    upstream_repo: str
    pr_number: int
    owner: str
    token: int
    expires_at: float
    deadline: float
    memo: PrMemo = PrMemo()

    @property
    def pr(self) -> PrRef:
        return PrRef(self.upstream_repo, self.pr_number)

    def remaining(self, monotonic_now: float) -> float:
        return self.deadline - monotonic_now


@dataclasses.dataclass(frozen=True, slots=True)
class Busy:
    """Another writer holds the PR; its lease ends in about ``expires_in`` s by this instance's wall clock."""

    owner: str
    expires_in: float


@dataclasses.dataclass(frozen=True, slots=True)
class WriteTurn:
    """An installation's turn for one content-creating GitHub call: at ``at`` (wall clock, epoch seconds).
    ``blocked_until``: the end of GitHub's last "slow down" known to the state (turns never precede it)."""

    at: float
    blocked_until: float = 0.0


class LeaseLost(Exception):
    """The lease was taken over (its token is no longer the PR's): stop writing this PR."""


class BotState(Protocol):
    """The bot's shared state. Implementations compare every expiry themselves (DynamoDB's TTL deletes
    lazily, days late; moto never does): an expired item counts as absent in every read and write."""

    # --- "changed" marks ----------------------------------------------------------------------------
    def announce(self, pr: PrRef, *, watermark: Watermark | None = None, refresh_check: bool = False) -> str:
        """Mark the PR changed (a new token; the watermark replaces the previous one). Returns the token."""
        ...

    def announce_all(self, announcements: Sequence[Announcement]) -> int:
        """Mark several PRs changed (the replicator, once per batch); trunk results are skipped. Returns how
        many marks were written."""
        ...

    def pending(self) -> list[Mark]:
        """Every PR marked and not yet cleared (writers poll this)."""
        ...

    def mark_of(self, pr: PrRef) -> Mark | None:
        """The PR's mark now (a consistent read), or None: what a render about to start answers."""
        ...

    def clear(self, mark: Mark) -> Mark | None:
        """Remove the mark if its token is still ``mark.token`` (or it is gone already): None. When a newer
        announcement came, the mark stays and is returned (one request: the writer loops on it)."""
        ...

    # --- per-PR write leases ------------------------------------------------------------------------
    def acquire(self, pr: PrRef, owner: str, seconds: float) -> Lease | Busy:
        """Take the PR's lease if nobody holds an unexpired one (with a new, higher token)."""
        ...

    def renew(self, lease: Lease, seconds: float) -> Lease:
        """Extend a lease still carrying the PR's current token; ``LeaseLost`` otherwise."""
        ...

    def record(self, lease: Lease, memo: PrMemo, *, release: bool = False) -> None:
        """Store the PR's memo, fenced by the lease's token (``LeaseLost`` if it is no longer current);
        ``release`` also gives the lease up in the same write."""
        ...

    def release(self, lease: Lease) -> None:
        """Give the lease up (nothing happens when it was already taken over)."""
        ...

    # --- small shared records -----------------------------------------------------------------------
    def set_once(self, pr: PrRef, name: str, value: str = "", *, ttl_seconds: float = ONCE_TTL_SECONDS) -> bool:
        """Record ``name`` for the PR unless it is already recorded (and unexpired): True the first time.
        For "done once per PR" facts such as "notified backend X on head H"."""
        ...

    def get_once(self, pr: PrRef, name: str) -> str | None:
        """The value ``set_once`` recorded under ``name`` for the PR, or None."""
        ...

    def first_delivery(self, delivery_id: str, *, ttl_seconds: float = DELIVERY_TTL_SECONDS) -> bool:
        """True the first time a webhook delivery id is seen within ``ttl_seconds`` (and remembers it)."""
        ...

    # --- pacing of content-creating GitHub calls, per installation, across instances ---------------
    def reserve_write(self, installation: int, interval: float) -> WriteTurn:
        """The installation's next turn: now when no turn was given in the last ``interval`` s and no block is
        on, else ``interval`` after the last turn given (to any instance) or at the block's end."""
        ...

    def block_writes(self, installation: int, until: float) -> None:
        """GitHub said "slow down" until ``until`` (wall clock): no turn is given before then, to any instance
        (turns given earlier stand). A shorter block than one in force changes nothing."""
        ...
