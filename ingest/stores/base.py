"""The store interface every write path goes through."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Protocol

from sql.records import JobRecord, PrRef

OnChange = Callable[[PrRef], None]
"""Told, after a write is durable, which PR (with the head SHA the result concerned) changed."""


class Outcome(enum.StrEnum):
    STORED = "stored"
    STALE = "stale"


@dataclasses.dataclass(frozen=True, slots=True)
class UpsertResult:
    outcome: Outcome
    key: str
    status: str  # the record's status after the write ("in_progress"/"completed")
    version: int


class StoreError(RuntimeError):
    """The store failed; the relay should retry (HTTP 500). The message is for logs only."""


class ResultStore(Protocol):
    name: str  # "dynamodb" or "embedded", shown by /healthz

    async def start(self) -> None: ...

    async def upsert(self, record: JobRecord) -> UpsertResult:
        """Write the record's present fields; refuse (STALE) to move completed back to in_progress."""
        ...

    async def flushed(self) -> bool:
        """Return once every write accepted so far is readable in the warehouse (False: gave up waiting)."""
        ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...
