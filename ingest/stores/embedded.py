"""The embedded result store: job records straight into the warehouse table, with group commit.

Concurrent upserts are gathered for a short window and merged together: one batched read of the current
state of keys the store does not hold, the merge rules applied in arrival order. Groups run one at a time,
so the state and the merge never race; this store must be the table's only writer (true for the embedded
deployment, where the server owns the data directory).

With a journal (what ``oot-hud serve`` uses), a group is appended to the journal with one write and
answered; the warehouse inserts follow in batches, at most one per ``flush_interval_ms`` under load, so an
insert's fixed cost (a new part, the summary's materialized view, merges) is shared by many results and no
caller waits for it. Readers that need every accepted write call ``flushed()`` first, which also cuts the
interval short (reads are rare next to writes). Without a journal
(tests, tools) each group is inserted before its callers are answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingest.merge import merge
from ingest.stores.base import OnChange, Outcome, StoreError, UpsertResult
from ingest.stores.journal import Journal, Segment, read_items
from ingest.stores.known_keys import KnownKeys
from sql.records import JOB_RESULTS_TABLE, JobRecord, PrRef, RowConversionError, format_time, item_to_row
from sql.warehouse import Warehouse, quote_identifier

log = logging.getLogger("ingest.stores.embedded")

DEFAULT_COMMIT_WINDOW_MS = 0.0  # classic group commit: a group forms while the previous one syncs
DEFAULT_FLUSH_INTERVAL_MS = 500.0
DEFAULT_CACHE_SIZE = 10_000  # recent items (~1-2 KB each): most in_progress -> completed pairs skip the read
MAX_GROUP = 2_000  # writes per group; a bigger backlog is taken as several groups
FLUSHED_WAIT_S = 10.0  # a reader waits at most this long for the journal to drain, then reads what is there
RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 5.0)  # a failed flush is retried for as long as the store runs

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


@dataclass
class _Accepted:
    """A merged group: what to answer, and the new state of every key it changed."""

    outcomes: list[UpsertResult | StoreError]
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, list[Any]] = field(default_factory=dict)
    prs: dict[PrRef, None] = field(default_factory=dict)


class EmbeddedStore:
    """``ResultStore`` on the warehouse table itself; announces changed PRs once they are in the warehouse."""

    name = "embedded"

    def __init__(self, warehouse: Warehouse, *, on_change: OnChange | None = None,
                 commit_window_ms: float = DEFAULT_COMMIT_WINDOW_MS, cache_size: int = DEFAULT_CACHE_SIZE,
                 max_group: int = MAX_GROUP, journal: Journal | None = None,
                 flush_interval_ms: float = DEFAULT_FLUSH_INTERVAL_MS) -> None:
        self._warehouse = warehouse
        self._on_change = on_change
        self._window_s = max(0.0, commit_window_ms) / 1000.0
        self._cache_size = max(0, cache_size)
        self._max_group = max(1, max_group)
        self._journal = journal
        self._interval_s = max(0.0, flush_interval_ms) / 1000.0
        self._cache: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._pending: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self._known: KnownKeys | None = None  # None until start(): then every unknown key is read
        # Journal mode: journaled, waiting for the next insert / in the insert running now (newest item per key).
        self._queued = _Accepted([])
        self._inserting = _Accepted([])
        self._flusher: asyncio.Task[None] | None = None
        self._last_flush = float("-inf")
        self._accepted_groups = 0
        self._flushed_groups = 0
        self._flushed_changed: asyncio.Condition | None = None
        self._reader_waiting = asyncio.Event()  # a reader is waiting: flush now, not after the interval
        self._reader_target = 0  # ... for the groups accepted up to this one
        self._journal_lock = asyncio.Lock()  # one group's append, or the flusher's rotate, at a time
        self.groups_committed = 0  # for tests and the benchmark: how many inserts the writes took

    async def start(self) -> None:
        """Insert what a previous process journaled but did not flush, then load the stored keys' digests."""
        self._closed = False
        await asyncio.to_thread(self._recover)

    def load_known_keys(self) -> None:
        """Blocking part of ``start`` (for callers without a running loop)."""
        self._known = KnownKeys.load(self._warehouse)

    def _recover(self) -> None:
        if self._journal is not None:
            replay_journal(self._journal, self._warehouse)
        self.load_known_keys()

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
            # they are whoever arrived while the previous group was being merged or written.
            await asyncio.sleep(self._window_s)
        while self._pending:
            group, self._pending = self._pending[:self._max_group], self._pending[self._max_group:]
            started = time.perf_counter()
            try:
                accepted = await self._commit([p.record for p in group])
            except Exception as exc:  # one failure answers the whole group with a retryable error
                error = _as_store_error(exc)
                accepted = _Accepted([error for _ in group])
            log.debug("event=group_committed size=%d ms=%.1f waiting=%d", len(group),
                      (time.perf_counter() - started) * 1000, len(self._pending))
            for pending, outcome in zip(group, accepted.outcomes, strict=True):
                if pending.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)
            if self._journal is None:
                self._announce(accepted.prs)

    async def _commit(self, records: list[JobRecord]) -> _Accepted:
        """Merge a group; then journal it (and queue its insert), or insert it before answering."""
        accepted = await self._merge(records)
        if not accepted.items:
            return accepted
        if self._known is not None:
            self._known.add(accepted.items)  # before the write: a failed insert may still have landed in part
        if self._journal is None:
            await asyncio.to_thread(self._insert, list(accepted.rows.values()))
            self.groups_committed += 1
            for key, item in accepted.items.items():
                self._remember(key, item)
            return accepted
        data = self._journal.encode(accepted.items.values())
        async with self._journal_lock:  # the flusher rotates only between groups (see _flush_loop)
            # Write and fdatasync in a worker thread: the event loop keeps reading the next group's requests
            # meanwhile (classic group commit: whoever arrives during one sync forms the next group).
            await asyncio.to_thread(self._journal.append_encoded, data)
            self._queued.items.update(accepted.items)
            self._queued.rows.update(accepted.rows)
            self._queued.prs.update(accepted.prs)
            self._accepted_groups += 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop(), name="embedded-store-flush")
        return accepted

    async def _merge(self, records: list[JobRecord]) -> _Accepted:
        """Apply the merge rules in arrival order to the keys' current state (read only when unknown)."""
        keys = list(dict.fromkeys(record.key for record in records))
        current: dict[str, dict[str, Any] | None] = {key: self._state(key) for key in keys}
        known = self._known
        to_read = {key for key in keys if current[key] is None and (known is None or known.may_exist(key))}
        if to_read:
            current.update(await asyncio.to_thread(self._load, [r for r in records if r.key in to_read]))
        accepted = _Accepted([])
        for record in records:
            merged = merge(current[record.key], record)
            if merged.outcome is Outcome.STORED:
                current[record.key] = merged.item
                accepted.items[record.key] = merged.item
            accepted.outcomes.append(UpsertResult(merged.outcome, record.key, merged.status, merged.version))
        poisoned: dict[str, StoreError] = {}
        for key, item in accepted.items.items():
            try:
                accepted.rows[key] = item_to_row(item)
            except RowConversionError as exc:  # extraction should make this impossible; never lose the rest
                poisoned[key] = StoreError(f"cannot convert the record to a row: {exc}")
                log.error("event=store_row_rejected dynamoKey=%s error=%s", key, poisoned[key])
        for key in poisoned:
            del accepted.items[key]
        for record, outcome in zip(records, accepted.outcomes, strict=True):
            if record.key in poisoned:
                continue
            if isinstance(outcome, UpsertResult) and outcome.outcome is Outcome.STORED:
                accepted.prs[record.pr] = None
        if poisoned:
            accepted.outcomes = [poisoned.get(r.key, outcome) for r, outcome in
                                 zip(records, accepted.outcomes, strict=True)]
        return accepted

    async def _flush_loop(self) -> None:
        """Insert the journaled groups in batches, at most one insert per interval, retrying until it lands."""
        loop = asyncio.get_running_loop()
        assert self._journal is not None
        while self._queued.items:
            wait = self._last_flush + self._interval_s - loop.time()
            if wait > 0 and not self._closed and not self._reader_waiting.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._reader_waiting.wait(), wait)
            async with self._journal_lock:
                # Atomic with respect to groups: the closed segments hold exactly the groups in this batch.
                batch = self._inserting = self._queued
                self._queued = _Accepted([])
                upto = self._accepted_groups
                segments = self._journal.rotate()
            self._last_flush = loop.time()
            await self._insert_until_it_lands(list(batch.rows.values()))
            self.groups_committed += 1
            for key, item in batch.items.items():
                self._remember(key, item)
            self._inserting = _Accepted([])
            if segments:  # unlink can wait on a busy file system: not on the event loop
                await asyncio.to_thread(self._discard, segments)
            self._announce(batch.prs)  # before waking readers: once settled, the listeners have heard
            await self._mark_flushed(upto)

    def _discard(self, segments: list[Segment]) -> None:
        assert self._journal is not None
        for segment in segments:
            try:
                self._journal.discard(segment)
            except OSError:  # the rows are in: a leftover segment only costs a harmless replay
                log.exception("event=journal_discard_failed segment=%s", segment.path.name)

    async def _insert_until_it_lands(self, rows: list[list[Any]]) -> None:
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self._insert, rows)
                return
            except Exception as exc:  # the rows are journaled: keep them and try again
                delay = RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S) - 1)]
                log.error("event=flush_failed rows=%d retry_in_s=%.1f error=%s", len(rows), delay, exc)
                attempt += 1
                await asyncio.sleep(delay)

    async def _mark_flushed(self, upto: int) -> None:
        self._flushed_groups = upto
        if upto >= self._reader_target:
            self._reader_waiting.clear()
        if self._flushed_changed is not None:
            async with self._flushed_changed:
                self._flushed_changed.notify_all()

    async def flushed(self) -> bool:
        """Wait until every write accepted before this call is in the warehouse (False: gave up waiting)."""
        target = self._accepted_groups
        if self._flushed_groups >= target:
            return True
        if self._flushed_changed is None:
            self._flushed_changed = asyncio.Condition()
        self._reader_target = max(self._reader_target, target)
        self._reader_waiting.set()
        condition = self._flushed_changed
        try:
            async with condition:
                await asyncio.wait_for(condition.wait_for(lambda: self._flushed_groups >= target), FLUSHED_WAIT_S)
        except TimeoutError:
            log.warning("event=flush_wait_timed_out waited_s=%.1f", FLUSHED_WAIT_S)
            return False
        return True

    def _insert(self, rows: list[list[Any]]) -> None:
        self._warehouse.insert_job_rows(rows)

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

    def _state(self, key: str) -> dict[str, Any] | None:
        # Not yet in the warehouse (newest first): kept out of the LRU, which could evict them before their insert.
        item = self._queued.items.get(key) or self._inserting.items.get(key)
        if item is not None:
            return item
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
        """Refuse new writes, finish the group in flight (its callers are still waiting), then flush."""
        self._closed = True
        drainer = self._drainer
        if drainer is not None and not drainer.done() and drainer.get_loop() is asyncio.get_running_loop():
            try:
                await drainer
            except Exception:
                log.exception("event=store_close_failed")
        if self._journal is None:
            return
        try:
            await asyncio.wait_for(self._flush_remaining(), FLUSHED_WAIT_S)
        except Exception:  # the journal keeps whatever did not land; the next start inserts it
            log.exception("event=store_close_flush_failed")
        self._journal.close()

    async def _flush_remaining(self) -> None:
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            await flusher
        if self._queued.items:
            await self._flush_loop()


# What the journal needs of the embedded engine's tables (a ClickHouse server keeps its own settings):
# - fsync_after_insert, fsync_part_directory: a journal segment is deleted once its rows are inserted, and
#   from then on the parts are the only copy, so an insert must be on stable storage when it returns
#   (ClickHouse's default leaves new parts in the page cache). Merged parts are not fsynced; their source
#   parts stay on disk for old_parts_lifetime (8 minutes), ClickHouse's own guard for a power cut.
# - vertical merges from the first row: the tables are wide (~40 columns) and their parts small, so the
#   default (horizontal below 131,072 rows) reads every column of every merged part at once; vertical merges
#   held the server's RSS ~50 MiB lower after 100,000 results (docs/ingest.md).
# - outdated parts removed one by one: above concurrent_part_removal_threshold (100) a cleanup round starts a
#   pool of up to 128 threads that stay for good, and a part a flush makes 100+ outdated parts a round under
#   steady ingest (docs/soak.md); one by one costs milliseconds on one local disk.
EMBEDDED_TABLE_SETTINGS = ("fsync_after_insert = 1, fsync_part_directory = 1, "
                           "vertical_merge_algorithm_min_rows_to_activate = 1, "
                           "vertical_merge_algorithm_min_columns_to_activate = 1, "
                           "concurrent_part_removal_threshold = 1000000")
_MERGE_TREE_TABLES_SQL = ("SELECT name FROM system.tables WHERE database = currentDatabase() "
                          "AND engine LIKE '%MergeTree' ORDER BY name")


def prepare_tables(warehouse: Warehouse) -> None:
    """Give every MergeTree table of the database ``EMBEDDED_TABLE_SETTINGS`` (idempotent, metadata only)."""
    for row in warehouse.query(_MERGE_TREE_TABLES_SQL):
        warehouse.command(f"ALTER TABLE {quote_identifier(row['name'])} MODIFY SETTING {EMBEDDED_TABLE_SETTINGS}")


def replay_journal(journal: Journal, warehouse: Warehouse) -> int:
    """Insert every journaled item (newest version per key), then delete the segments; returns the count.

    First makes the tables' inserts durable (``prepare_tables``): every insert after this, the replay's
    own included, is on stable storage before its segment is deleted.
    """
    prepare_tables(warehouse)
    segments = journal.segments()
    newest: dict[str, dict[str, Any]] = {}
    for segment in segments:
        for item in read_items(segment):
            key = item.get("key")
            if isinstance(key, str) and item.get("version", 0) >= newest.get(key, {}).get("version", 0):
                newest[key] = item
    rows = []
    for key, item in newest.items():
        try:
            rows.append(item_to_row(item))
        except RowConversionError as exc:
            log.error("event=journal_item_rejected dynamoKey=%s error=%s", key, exc)
    for start in range(0, len(rows), MAX_GROUP):
        warehouse.insert_job_rows(rows[start:start + MAX_GROUP])
    for segment in segments:
        journal.discard(segment)
    if rows:
        log.info("event=journal_replayed segments=%d rows=%d", len(segments), len(rows))
    return len(rows)


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
