"""One batch of DynamoDB stream records -> warehouse rows, dead letters and "PR changed" announcements.

Public API (the Lambda handler, the long-running follower and reconcile all call this; keep it stable)::

    from replicator.pipeline import Replicator, BatchResult
    from replicator.sink import RetryPolicy, WarehouseSink

    replicator = Replicator(
        WarehouseSink(warehouse, retry=RetryPolicy(attempts=4, base_delay=0.25, timeout=30.0)),
        routes={"oot-results": "oot_job_results"},  # DynamoDB table name -> ClickHouse table
        on_change=services.announce,                # Callable[[PrRef], None], optional
        on_changes=bot_state.announce_all,          # Callable[[Sequence[Announcement]], object], optional
    )
    # or: Replicator.for_warehouse(warehouse, routes, on_change=..., retry=RetryPolicy(...))

    result = replicator.process(records, source_table="oot-results")
    if result.ok:
        checkpoint(records[-1]["dynamodb"]["SequenceNumber"])
    else:
        # Records before result.failed_index are durable (landed, skipped or dead-lettered);
        # re-deliver from records[result.failed_index] (its sequence: result.first_failed_sequence).
        ...

``records`` are dicts in the Lambda event shape (``eventName``, ``dynamodb.Keys/NewImage/OldImage/
SequenceNumber``, ``eventSourceARN``). GetRecords records have the same shape without ``eventSourceARN``:
pass ``source_table``. Processing never raises for bad data (poison goes to ``oot_dead_letters``) nor for
a warehouse outage (the result names the first record that did not land); re-delivering any suffix or the
whole batch is safe because rows are idempotent by (key, version) in a ReplacingMergeTree.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from replicator.announce import announce_changes, announce_prs
from replicator.columns import ColumnBatch, convert_columns
from replicator.convert import Change, PoisonRecord, convert_record, raw_json, sequence_number, source_table_of
from replicator.sink import DeadLetter, RetryPolicy, SinkUnavailable, WarehouseSink
from sql.bot_state import Announcement, Watermark
from sql.records import PrRef

log = logging.getLogger("replicator.pipeline")

OnChange = Callable[[PrRef], None]
OnChanges = Callable[[Sequence[Announcement]], object]
"""Told once per batch, after its rows landed, which PRs changed and the row a render must see (the bot's
shared marks: ``BotState.announce_all``). A failure is logged; the rows stay landed."""
MAX_ROWS_PER_INSERT = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class BatchResult:
    """What became of a batch. ``failed_index`` is None when every record is durable."""

    records: int
    landed: int = 0  # rows inserted (after keeping only the newest version of a key within the batch)
    skipped: int = 0  # images without a version
    dead_lettered: int = 0
    failed_index: int | None = None
    first_failed_sequence: str | None = None
    announced: tuple[PrRef, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failed_index is None


@dataclasses.dataclass
class _Write:
    """One insert: the records it carries (by batch index) and what to insert."""

    indexes: list[int]
    table: str | None = None  # None: the dead-letter table
    rows: Sequence[Sequence[Any]] = ()
    columns: list[list[Any]] | None = None  # instead of rows: the fast path's driver columns, inserted as they are
    prs: Callable[[], Iterable[PrRef]] = tuple  # the PRs of ``rows``, computed only for a subscriber
    announcements: Callable[[], Iterable[Announcement]] = tuple  # the same with watermarks (pull requests only)
    letters: list[DeadLetter] = dataclasses.field(default_factory=list)

    @property
    def row_count(self) -> int:
        return len(self.columns[0]) if self.columns is not None else len(self.rows)


class Replicator:
    """Converts, inserts, dead-letters and announces; stateless between batches."""

    def __init__(self, sink: WarehouseSink, routes: Mapping[str, str], *, on_change: OnChange | None = None,
                 max_rows_per_insert: int = MAX_ROWS_PER_INSERT, on_changes: OnChanges | None = None) -> None:
        if not routes:
            raise ValueError("the replicator needs at least one route (DynamoDB table -> warehouse table)")
        self.sink = sink
        self.routes = dict(routes)
        self.on_change = on_change
        self.on_changes = on_changes
        self.max_rows_per_insert = max_rows_per_insert

    @classmethod
    def for_warehouse(cls, warehouse: Any, routes: Mapping[str, str], *, on_change: OnChange | None = None,
                      retry: RetryPolicy | None = None, on_changes: OnChanges | None = None) -> Replicator:
        return cls(WarehouseSink(warehouse, retry=retry), routes, on_change=on_change, on_changes=on_changes)

    def process(self, records: Sequence[Mapping[str, Any]], *, source_table: str | None = None) -> BatchResult:
        """Replicate ``records`` (in shard order). Never raises for poison data or a warehouse outage."""
        writes, skipped, letters = self._plan(records, source_table)
        landed = 0
        changed: list[_Write] = []
        for position, write in enumerate(writes):
            try:
                if write.table is None:
                    self.sink.write_dead_letters(write.letters)
                elif write.columns is not None:
                    self.sink.write_columns(write.table, write.columns)
                else:
                    self.sink.write_rows(write.table, write.rows)
            except SinkUnavailable as exc:
                failed = min(index for later in writes[position:] for index in later.indexes)
                self._mark_changes(changed)  # what landed; the rest is announced when it lands
                announced = self._announce(changed)
                sequence = sequence_number(records[failed]) if isinstance(records[failed], Mapping) else ""
                log.error("batch failed records=%d first_failed_sequence=%s error=%s", len(records), sequence, exc)
                return BatchResult(len(records), landed, skipped, letters, failed, sequence, announced)
            if write.table is not None:
                landed += write.row_count
                changed.append(write)
        if not self._mark_changes(changed):
            # Every row landed but the bot was not told: deliver the batch again (the rows are idempotent).
            sequence = sequence_number(records[0]) if isinstance(records[0], Mapping) else ""
            return BatchResult(len(records), landed, skipped, letters, 0, sequence, ())
        announced = self._announce(changed)
        log.info("batch replicated records=%d landed=%d skipped=%d dead_lettered=%d", len(records), landed,
                 skipped, letters)
        return BatchResult(len(records), landed, skipped, letters, None, None, announced)

    def _plan(self, records: Sequence[Mapping[str, Any]], source_table: str | None) -> tuple[list[_Write], int, int]:
        """Convert every record; group rows per destination table (newest version of each key wins).

        Plain INSERT/MODIFY records take the columnar fast path (``replicator.columns``); the rest, and
        every record of a table whose batch repeats a key, go through ``convert_record`` one by one.
        """
        batches, rest = convert_columns(records, self.routes, source_table)
        dead = _Write(indexes=[])
        skipped = 0
        exact: dict[str, list[tuple[int, Change]]] = {}
        for index in rest:
            record = records[index]
            if not isinstance(record, Mapping):
                dead.indexes.append(index)
                dead.letters.append(DeadLetter(source_table or "", "", "", "record is not an object",
                                               raw_json({"record": record})))
                continue
            try:
                change = convert_record(record, self.routes, source_table)
            except PoisonRecord as exc:
                dead.indexes.append(index)
                dead.letters.append(_dead_letter(record, exc.reason, source_table))
                continue
            except Exception as exc:  # a record shape nobody foresaw is poison too, never a stalled shard
                dead.indexes.append(index)
                dead.letters.append(_dead_letter(record, f"unexpected {type(exc).__name__}", source_table))
                continue
            if change is None:
                skipped += 1
                continue
            exact.setdefault(change.table, []).append((index, change))
        fast = {batch.table: batch for batch in batches}
        first_index = {table: changes[0][0] for table, changes in exact.items()}
        for batch in batches:
            first_index[batch.table] = min(batch.indexes[0], first_index.get(batch.table, batch.indexes[0]))
        writes: list[_Write] = []
        for table in sorted(first_index, key=first_index.__getitem__):  # tables in first-seen order
            batch, changes = fast.get(table), exact.get(table, [])
            if batch is not None and not changes and len(set(batch.keys)) == len(batch.keys):
                writes.extend(self._column_chunks(batch))
                continue
            if batch is not None:  # a key repeats, or some records took the exact path: merge in batch order
                changes.extend(zip(batch.indexes, [Change(table, list(row)) for row in batch.rows()], strict=True))
                changes.sort(key=itemgetter(0))
            writes.extend(self._chunks(table, changes))
        if dead.letters:
            writes.append(dead)
        return writes, skipped, len(dead.letters)

    def _column_chunks(self, batch: ColumnBatch) -> list[_Write]:
        """Inserts of at most ``max_rows_per_insert`` rows from a batch without repeated keys."""
        size = self.max_rows_per_insert
        parts = [batch] if len(batch.indexes) <= size else [
            batch.slice(start, start + size) for start in range(0, len(batch.indexes), size)]
        return [_Write(indexes=part.indexes, table=part.table, columns=part.driver_columns, prs=part.prs,
                       announcements=part.announcements) for part in parts]

    def _chunks(self, table: str, changes: Sequence[tuple[int, Change]]) -> list[_Write]:
        """The newest version of each key (the later record on a tie), in inserts of ``max_rows_per_insert``.

        Keys stay in first-seen order. A chunk carries the indexes of every record of its keys (superseded
        versions included): once the newest version of a key has landed, the older records are durable too.
        """
        newest: dict[str, Change] = {}
        key_indexes: dict[str, list[int]] = {}
        for index, change in changes:
            key_indexes.setdefault(change.key, []).append(index)
            current = newest.get(change.key)
            if current is None or change.version >= current.version:
                newest[change.key] = change
        keys = list(newest)
        chunks = []
        for start in range(0, len(keys), self.max_rows_per_insert):
            part = [newest[key] for key in keys[start:start + self.max_rows_per_insert]]
            chunks.append(_Write(indexes=[i for change in part for i in key_indexes[change.key]], table=table,
                                 rows=[change.row for change in part],
                                 prs=lambda part=part: [change.pr for change in part],
                                 announcements=lambda part=part: _announcements(part)))
        return chunks

    def _announce(self, written: Sequence[_Write]) -> tuple[PrRef, ...]:
        if self.on_change is None:
            return ()
        return announce_prs((pr for write in written for pr in write.prs()), self.on_change)


    def _mark_changes(self, written: Sequence[_Write]) -> bool:
        if self.on_changes is None or not written:
            return True
        return announce_changes([a for write in written for a in write.announcements()], self.on_changes)


def _announcements(changes: Sequence[Change]) -> list[Announcement]:
    last = {(c.pr.upstream_repo, c.pr.pr_number): Watermark(c.key, int(c.version)) for c in changes
            if c.pr.pr_number > 0}
    return [Announcement(PrRef(repo, number), mark) for (repo, number), mark in last.items()]


def _dead_letter(record: Mapping[str, Any], reason: str, source_table: str | None) -> DeadLetter:
    event_id = record.get("eventID")
    return DeadLetter(source_table=source_table_of(record) or source_table or "",
                      event_id=str(event_id) if event_id is not None else "",
                      sequence=sequence_number(record), reason=reason, raw=raw_json(record))
