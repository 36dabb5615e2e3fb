"""``BotState`` in this process's memory: the embedded single process, and tests of several writers.

The same semantics as the DynamoDB implementation (expiries compared on every read and write, fencing
tokens, conditional clears), so tests can run many "instances" in one process: ``view(clock)`` is another
handle on the same data with its own clocks (clock skew between instances).
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence

from bot.clock import Clock, RealClock
from sql.bot_state import (
    DELIVERY_TTL_SECONDS,
    MARK_TTL_SECONDS,
    ONCE_TTL_SECONDS,
    PR_TTL_SECONDS,
    Announcement,
    Busy,
    Lease,
    LeaseLost,
    Mark,
    PrMemo,
    Watermark,
    WriteTurn,
)
from sql.records import PrRef

DEDUPE_SIZE = 10_000  # delivery ids remembered (the oldest are forgotten first)

PrKey = tuple[str, int]


@dataclasses.dataclass
class _Pr:
    memo: PrMemo = dataclasses.field(default_factory=PrMemo)
    token: int = 0
    owner: str | None = None
    lease_expires: float = 0.0
    expires_at: float = 0.0  # the memo's: PR_TTL_SECONDS after the last record


@dataclasses.dataclass
class _Data:
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    marks: dict[PrKey, tuple[Mark, float]] = dataclasses.field(default_factory=dict)
    prs: dict[PrKey, _Pr] = dataclasses.field(default_factory=dict)
    once: dict[tuple[str, int, str], tuple[str, float]] = dataclasses.field(default_factory=dict)
    deliveries: OrderedDict[str, float] = dataclasses.field(default_factory=OrderedDict)
    pace: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)  # installation: (next, blocked)


def _key(pr: PrRef) -> PrKey:
    return (pr.upstream_repo, pr.pr_number)


class MemoryBotState:
    """All of ``BotState`` in dicts behind one lock; expiries by this handle's wall clock."""

    def __init__(self, clock: Clock | None = None, *, dedupe_size: int = DEDUPE_SIZE,
                 _data: _Data | None = None) -> None:
        self._clock = clock or RealClock()
        self._data = _data or _Data()
        self._dedupe_size = dedupe_size

    def view(self, clock: Clock) -> MemoryBotState:
        """Another instance's handle on the same state (its own clocks)."""
        return MemoryBotState(clock, dedupe_size=self._dedupe_size, _data=self._data)

    # --- marks -------------------------------------------------------------------------------------
    def announce(self, pr: PrRef, *, watermark: Watermark | None = None, refresh_check: bool = False) -> str:
        token = secrets.token_hex(8)
        now = self._clock.wall()
        with self._data.lock:
            old = self._live_mark(_key(pr), now)
            refresh = refresh_check or (old is not None and old.refresh_check)
            # An announcement without a watermark (a webhook) keeps the replicator's: still worth checking.
            kept = watermark or (old.watermark if old is not None else None)
            mark = Mark(pr.upstream_repo, pr.pr_number, token, kept, refresh)
            self._data.marks[_key(pr)] = (mark, now + MARK_TTL_SECONDS)
        return token

    def announce_all(self, announcements: Sequence[Announcement]) -> int:
        written = 0
        for announcement in announcements:
            if announcement.pr.pr_number > 0:
                self.announce(announcement.pr, watermark=announcement.watermark)
                written += 1
        return written

    def pending(self) -> list[Mark]:
        now = self._clock.wall()
        with self._data.lock:
            return [mark for mark, expires in self._data.marks.values() if expires > now]

    def mark_of(self, pr: PrRef) -> Mark | None:
        with self._data.lock:
            return self._live_mark(_key(pr), self._clock.wall())

    def clear(self, mark: Mark) -> Mark | None:
        key = (mark.upstream_repo, mark.pr_number)
        with self._data.lock:
            current = self._live_mark(key, self._clock.wall())
            if current is not None and current.token != mark.token:
                return current
            self._data.marks.pop(key, None)
            return None

    def _live_mark(self, key: PrKey, now: float) -> Mark | None:
        found = self._data.marks.get(key)
        return found[0] if found is not None and found[1] > now else None

    # --- leases ------------------------------------------------------------------------------------
    def acquire(self, pr: PrRef, owner: str, seconds: float) -> Lease | Busy:
        sent = self._clock.monotonic()
        now = self._clock.wall()
        with self._data.lock:
            item = self._data.prs.setdefault(_key(pr), _Pr())
            if item.owner is not None and item.lease_expires >= now:
                return Busy(item.owner, item.lease_expires - now)
            if item.expires_at <= now:
                item.memo = PrMemo()  # the last record expired: as if DynamoDB's TTL had deleted it
            item.token += 1
            item.owner, item.lease_expires = owner, now + seconds
            return Lease(pr.upstream_repo, pr.pr_number, owner, item.token, item.lease_expires, sent + seconds,
                         item.memo)

    def renew(self, lease: Lease, seconds: float) -> Lease:
        sent = self._clock.monotonic()
        now = self._clock.wall()
        with self._data.lock:
            item = self._current(lease)
            item.owner, item.lease_expires = lease.owner, now + seconds
            return dataclasses.replace(lease, expires_at=item.lease_expires, deadline=sent + seconds)

    def record(self, lease: Lease, memo: PrMemo, *, release: bool = False) -> None:
        now = self._clock.wall()
        with self._data.lock:
            item = self._current(lease)
            item.memo = memo
            item.expires_at = now + PR_TTL_SECONDS
            if release:
                item.owner = None

    def release(self, lease: Lease) -> None:
        with self._data.lock:
            item = self._data.prs.get((lease.upstream_repo, lease.pr_number))
            if item is not None and item.token == lease.token:
                item.owner = None

    def _current(self, lease: Lease) -> _Pr:
        item = self._data.prs.get((lease.upstream_repo, lease.pr_number))
        if item is None or item.token != lease.token:
            raise LeaseLost(f"{lease.upstream_repo}#{lease.pr_number}: lease {lease.token} was taken over")
        return item

    # --- small shared records ----------------------------------------------------------------------
    def set_once(self, pr: PrRef, name: str, value: str = "", *, ttl_seconds: float = ONCE_TTL_SECONDS) -> bool:
        now = self._clock.wall()
        key = (pr.upstream_repo, pr.pr_number, name)
        with self._data.lock:
            found = self._data.once.get(key)
            if found is not None and found[1] > now:
                return False
            self._data.once[key] = (value, now + ttl_seconds)
            return True

    def get_once(self, pr: PrRef, name: str) -> str | None:
        with self._data.lock:
            found = self._data.once.get((pr.upstream_repo, pr.pr_number, name))
        return found[0] if found is not None and found[1] > self._clock.wall() else None

    def first_delivery(self, delivery_id: str, *, ttl_seconds: float = DELIVERY_TTL_SECONDS) -> bool:
        now = self._clock.wall()
        seen = self._data.deliveries
        with self._data.lock:
            # Oldest first: drop what expired, and beyond the bound the oldest (memory stays bounded).
            while seen and (len(seen) >= self._dedupe_size or next(iter(seen.values())) <= now):
                seen.popitem(last=False)
            if delivery_id in seen:
                return False
            seen[delivery_id] = now + ttl_seconds
            return True

    # --- pacing ------------------------------------------------------------------------------------
    def reserve_write(self, installation: int, interval: float) -> WriteTurn:
        now = self._clock.wall()
        with self._data.lock:
            next_at, blocked = self._data.pace.get(installation, (now, 0.0))
            at = max(now, next_at, blocked)
            self._data.pace[installation] = (at + interval, blocked)
            return WriteTurn(at, blocked)

    def block_writes(self, installation: int, until: float) -> None:
        with self._data.lock:
            next_at, blocked = self._data.pace.get(installation, (until, 0.0))
            self._data.pace[installation] = (max(next_at, until), max(blocked, until))
