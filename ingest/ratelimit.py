"""Per-downstream-repo rate limit: a token bucket per ``verified_repo``, refusals say when to retry."""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol

PRUNE_EVERY = 1024  # decisions between sweeps of idle buckets, so memory follows active repos only


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0  # whole seconds (the Retry-After header), at least 1 when refused


class Limiter(Protocol):
    """What the ingest route asks: may ``key`` (a downstream repository) post one more result now?"""

    per_minute: int

    async def admit(self, key: str) -> Decision: ...


@dataclasses.dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``per_minute`` accepted requests per key, with bursts up to ``per_minute`` (a one-minute bucket)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self._rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._decisions = 0

    async def admit(self, key: str) -> Decision:
        """``Limiter``: this process's own count (one instance, or the embedded default)."""
        return self.check(key)

    def check(self, key: str) -> Decision:
        """Take one token for ``key`` or say how long until one is available."""
        now = self._clock()
        with self._lock:
            self._decisions += 1
            if self._decisions % PRUNE_EVERY == 0:
                self._prune(now)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
            else:
                bucket.tokens = min(float(self.per_minute), bucket.tokens + (now - bucket.updated) * self._rate)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return Decision(True)
            wait = (1.0 - bucket.tokens) / self._rate
            return Decision(False, max(1, math.ceil(wait)))

    def _prune(self, now: float) -> None:
        # A bucket idle long enough to be full again is the same as no bucket.
        full_after = 60.0
        for key in [k for k, b in self._buckets.items() if now - b.updated >= full_after]:
            del self._buckets[key]
