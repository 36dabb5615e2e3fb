"""Writes rows and dead letters into the warehouse: explicit columns, bounded retries with backoff."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sql.records import COLUMN_NAMES, DEAD_LETTER_TABLE

log = logging.getLogger("replicator.sink")

DEAD_LETTER_COLUMNS: tuple[str, ...] = ("received_at", "source_table", "event_id", "sequence", "reason", "raw")
MAX_RAW_CHARS = 256 * 1024  # a dead letter is for a human to read and replay, not a blob store


class SinkUnavailable(RuntimeError):
    """The warehouse did not take a write after every retry; the caller reports the batch as failed."""


class Inserter(Protocol):
    """The one method the sink needs from ``sql.warehouse.Warehouse`` (tests inject failing ones)."""

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str], *,
               column_oriented: bool = False) -> None: ...


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries per write, sleeping ``base_delay * 2**n`` (capped) between them.

    ``timeout`` bounds one attempt: a warehouse that hangs counts as a failed attempt (the abandoned call
    may still land later, which is harmless: rows are idempotent by (key, version)).
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    timeout: float | None = None
    sleep: Callable[[float], None] = time.sleep

    def delay(self, failures: int) -> float:
        return min(self.max_delay, self.base_delay * 2 ** (failures - 1))


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    source_table: str
    event_id: str
    sequence: str
    reason: str
    raw: str

    def row(self, now: datetime) -> list[Any]:
        return [now, self.source_table, self.event_id, self.sequence, self.reason[:1000], self.raw[:MAX_RAW_CHARS]]


class WarehouseSink:
    """Inserts through ``Warehouse.insert`` (values travel as data, never inside SQL text)."""

    def __init__(self, warehouse: Inserter, *, retry: RetryPolicy | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.warehouse = warehouse
        self.retry = retry or RetryPolicy()
        self._clock = clock

    def write_rows(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert job rows (``COLUMN_NAMES`` order) into ``table``; raises ``SinkUnavailable``."""
        self._with_retries(table, rows, COLUMN_NAMES)

    def write_columns(self, table: str, columns: Sequence[Sequence[Any]]) -> None:
        """``write_rows`` for data already in columns (one sequence per ``COLUMN_NAMES`` entry)."""
        self._with_retries(table, columns, COLUMN_NAMES, column_oriented=True)

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        now = self._clock()
        self._with_retries(DEAD_LETTER_TABLE, [letter.row(now) for letter in letters], DEAD_LETTER_COLUMNS)

    def _with_retries(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], *,
                      column_oriented: bool = False) -> None:
        if not rows:
            return
        count = len(rows[0]) if column_oriented else len(rows)
        policy = self.retry
        for attempt in range(1, policy.attempts + 1):
            try:
                self._attempt(table, rows, columns, column_oriented)
                return
            except Exception as exc:  # the warehouse raises many types; every one is worth a retry here
                # The driver's message names the host and the ClickHouse error, never credentials.
                log.warning("insert failed table=%s rows=%d attempt=%d/%d error=%s: %.200s", table, count,
                            attempt, policy.attempts, type(exc).__name__, exc)
                if attempt == policy.attempts:
                    raise SinkUnavailable(f"insert into {table} failed {attempt} times: "
                                          f"{type(exc).__name__}") from exc
                policy.sleep(policy.delay(attempt))

    def _attempt(self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str],
                 column_oriented: bool) -> None:
        timeout = self.retry.timeout
        if timeout is None:
            self.warehouse.insert(table, rows, columns, column_oriented=column_oriented)
            return
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                self.warehouse.insert(table, rows, columns, column_oriented=column_oriented)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=run, name="replicator-insert", daemon=True)
        worker.start()
        worker.join(timeout)
        if not outcome:
            raise TimeoutError(f"insert into {table} took longer than {timeout}s")
        if outcome[0] is not None:
            raise outcome[0]
