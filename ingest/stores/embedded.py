"""The embedded result store: job records straight into the warehouse table, with group commit.

A single-row insert into the embedded engine costs milliseconds, so concurrent upserts are gathered for a
short window and written together: one batched read of the current state of keys not in the cache, the
merge rules applied in arrival order, ONE insert for the group, and only then are the callers answered.
Groups run one at a time, so the cache and the merge never race; this store must be the table's only
writer (true for the embedded deployment, where the server owns the data directory).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ingest.merge import merge
from ingest.stores.base import OnChange, Outcome, StoreError, UpsertResult
from ingest.stores.known_keys import KnownKeys
from sql.records import JOB_RESULTS_TABLE, JobRecord, PrRef, RowConversionError, format_time, item_to_row
from sql.warehouse import Warehouse, WarehouseError

log = logging.getLogger("ingest.stores.embedded")

DEFAULT_COMMIT_WINDOW_MS = 5.0
DEFAULT_CACHE_SIZE = 10_000  # recent items (~1-2 KB each): most in_progress -> completed pairs skip the read
MAX_GROUP = 2_000  # writes per insert; a bigger backlog is written as several groups

# The newest version of each key, tombstones included (FINAL would hide a tombstone, and a key written
# again after one must continue from its version, or the tombstone would win the ReplacingMergeTree).
# LIMIT 1 BY instead of FINAL is also ~8x cheaper here. The conditions on the ORDER BY prefix (upstream repo,
# PR, downstream repo) let the primary index skip almost the whole table; a key's row lives under that
# prefix by the table's own definition (ReplacingMergeTree collapses rows by the whole sorting key).
_LOAD_SQL = (f"SELECT * FROM {JOB_RESULTS_TABLE} "  # noqa: S608 - a constant table name, values bound
             "WHERE upstream_repo IN {upstream:Array(String)} AND pr_number IN {prs:Array(UInt64)} "
             "AND downstream_repo IN {downstream:Array(String)} AND key IN {keys:Array(String)} "
             "ORDER BY version DESC LIMIT 1 BY key")


class _Pending:
    __slots__ = ("future", "record")

    def __init__(self, record: JobRecord, future: asyncio.Future[UpsertResult]) -> None:
        self.record = record
        self.future = future


class EmbeddedStore:
    """``ResultStore`` on the warehouse table itself; announces changed PRs after each durable commit."""

    name = "embedded"

    def __init__(self, warehouse: Warehouse, *, on_change: OnChange | None = None,
                 commit_window_ms: float = DEFAULT_COMMIT_WINDOW_MS, cache_size: int = DEFAULT_CACHE_SIZE,
                 max_group: int = MAX_GROUP) -> None:
        self._warehouse = warehouse
        self._on_change = on_change
        self._window_s = max(0.0, commit_window_ms) / 1000.0
        self._cache_size = max(0, cache_size)
        self._max_group = max(1, max_group)
        self._cache: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._pending: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self._known: KnownKeys | None = None  # None until start(): then every unknown key is read
        self.groups_committed = 0  # for tests and the benchmark: how well writes were grouped

    async def start(self) -> None:
        """Load the digests of the stored keys, so writes of new keys skip the state read."""
        self._closed = False
        await asyncio.to_thread(self.load_known_keys)

    def load_known_keys(self) -> None:
        """Blocking part of ``start`` (for callers without a running loop)."""
        self._known = KnownKeys.load(self._warehouse)

    async def upsert(self, record: JobRecord) -> UpsertResult:
        if self._closed:
            raise StoreError("the embedded store is closed")
        future: asyncio.Future[UpsertResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(record, future))
        if self._drainer is None or self._drainer.done():
            # A task of its own, so a caller that disconnects cannot cancel the group's commit.
            self._drainer = asyncio.create_task(self._drain(), name="embedded-store-commit")
        return await future

    async def _drain(self) -> None:
        if self._window_s:
            # Starting from idle: let concurrent writers join the group. Later groups need no window:
            # they are whoever arrived while the previous group was being written.
            await asyncio.sleep(self._window_s)
        while self._pending:
            group, self._pending = self._pending[:self._max_group], self._pending[self._max_group:]
            started = time.perf_counter()
            try:
                outcomes = await asyncio.to_thread(self._commit, [p.record for p in group])
            except Exception as exc:  # one failure answers the whole group with a retryable error
                outcomes = [_as_store_error(exc) for _ in group]
            log.debug("event=group_committed size=%d ms=%.1f waiting=%d", len(group),
                      (time.perf_counter() - started) * 1000, len(self._pending))
            changed: dict[PrRef, None] = {}
            for pending, outcome in zip(group, outcomes, strict=True):
                if pending.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)
                    if outcome.outcome is Outcome.STORED:
                        changed[pending.record.pr] = None
            self._announce(changed)

    def _commit(self, records: list[JobRecord]) -> list[UpsertResult | StoreError]:
        """Merge a group in arrival order and insert one row per changed key (runs in a worker thread)."""
        keys = list(dict.fromkeys(record.key for record in records))
        current: dict[str, dict[str, Any] | None] = {key: self._cached(key) for key in keys}
        known = self._known
        to_read = {key for key in keys if current[key] is None and (known is None or known.may_exist(key))}
        if to_read:
            current.update(self._load([r for r in records if r.key in to_read]))
        results: list[UpsertResult | StoreError] = []
        changed: set[str] = set()
        for record in records:
            merged = merge(current[record.key], record)
            if merged.outcome is Outcome.STORED:
                current[record.key] = merged.item
                changed.add(record.key)
            results.append(UpsertResult(merged.outcome, record.key, merged.status, merged.version))
        rows, poisoned = [], {}
        for key in changed:
            try:
                rows.append(item_to_row(current[key] or {}))
            except RowConversionError as exc:  # extraction should make this impossible; never lose the rest
                poisoned[key] = StoreError(f"cannot convert the record to a row: {exc}")
        if known is not None:
            known.add(changed)  # before the insert: a failed one may still have landed in part
        try:
            self._warehouse.insert_job_rows(rows)
        except WarehouseError:
            # Part of the insert may have landed (one part per partition): forget these keys so the next
            # write reads their state from the warehouse instead of trusting the cache.
            for key in keys:
                self._cache.pop(key, None)
            raise
        self.groups_committed += 1
        for key in keys:
            if key not in poisoned and current[key] is not None:
                self._remember(key, current[key])
        if poisoned:
            for key, error in poisoned.items():
                log.error("event=store_row_rejected dynamoKey=%s error=%s", key, error)
            return [poisoned.get(r.key, result) if isinstance(result, UpsertResult) else result
                    for r, result in zip(records, results, strict=True)]
        return results

    def _load(self, records: list[JobRecord]) -> dict[str, dict[str, Any] | None]:
        """The stored state of these records' keys (one read; absent keys map to None)."""
        found: dict[str, dict[str, Any] | None] = {record.key: None for record in records}
        parameters = {"keys": list(found),
                      "upstream": sorted({r.upstream_repo for r in records}),
                      "prs": sorted({r.pr_number for r in records}),
                      "downstream": sorted({r.downstream_repo for r in records})}
        for row in self._warehouse.query(_LOAD_SQL, parameters):
            # A deleted record starts afresh, but above its tombstone's version.
            found[row["key"]] = {"version": row["version"]} if row.get("deleted") else row_to_item(row)
        return found

    def _cached(self, key: str) -> dict[str, Any] | None:
        item = self._cache.get(key)
        if item is not None:
            self._cache.move_to_end(key)
        return item

    def _remember(self, key: str, item: dict[str, Any]) -> None:
        if not self._cache_size:
            return
        self._cache[key] = item
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _announce(self, changed: Iterable[PrRef]) -> None:
        if self._on_change is None:
            return
        for pr in changed:
            try:
                self._on_change(pr)
            except Exception:  # a listener's failure must not fail a write that is already durable
                log.exception("event=on_change_failed upstream_repo=%s pr_number=%s", pr.upstream_repo,
                              pr.pr_number)

    async def ping(self) -> bool:
        return await asyncio.to_thread(self._warehouse.ping)

    async def close(self) -> None:
        """Refuse new writes and finish the group in flight (its callers are still waiting)."""
        self._closed = True
        drainer = self._drainer
        if drainer is not None and not drainer.done():
            try:
                if drainer.get_loop() is asyncio.get_running_loop():
                    await drainer
            except Exception:
                log.exception("event=store_close_failed")


def row_to_item(row: Mapping[str, Any]) -> dict[str, Any]:
    """A warehouse row -> the item form ``merge``/``item_to_row`` use (ISO time strings; NULL = absent)."""
    item: dict[str, Any] = {}
    for name, value in row.items():
        if name == "deleted" or value is None:
            continue
        if isinstance(value, datetime):
            value = format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
        item[name] = value
    return item


def _as_store_error(exc: BaseException) -> StoreError:
    error = StoreError(f"{type(exc).__name__}: {exc}")  # for the log only; the relay sees a generic 500
    error.__cause__ = exc
    return error
