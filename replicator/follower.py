"""The long-running DynamoDB stream follower: every shard, parents first, durable checkpoints, reconcile on loss.

One thread polls every readable shard in turn (a results table has a handful of live shards; GetRecords
allows 5 calls a second per shard, far above what one poller issues). A batch is checkpointed only after
the replicator reports it durable, so a crash re-delivers at most the last batch: at-least-once in, and
the warehouse's ReplacingMergeTree(version) makes the replay invisible.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from replicator.checkpoints import CheckpointStore, ShardCheckpoint

log = logging.getLogger("replicator.follower")

# DynamoDB Streams error codes the follower handles by name (botocore ClientError codes).
EXPIRED = "ExpiredIteratorException"  # iterators live 15 minutes
TRIMMED = "TrimmedDataAccessException"  # the position is older than the stream keeps (24 h)
NOT_FOUND = "ResourceNotFoundException"  # the shard (or stream) is gone
THROTTLED = frozenset({"LimitExceededException", "ProvisionedThroughputExceededException", "ThrottlingException"})


class BatchProcessor(Protocol):
    """``replicator.pipeline.Replicator``: ``process`` returns a result whose ``failed_index`` is None
    when every record is durable, else the index of the first record to deliver again."""

    def process(self, records: Sequence[Mapping[str, Any]], *, source_table: str | None = None) -> Any: ...


@dataclasses.dataclass(frozen=True)
class FollowerConfig:
    batch_limit: int = 1000  # GetRecords' maximum
    idle_initial_s: float = 0.25
    # An idle shard is read at least once a second: a result reaches its PR's comment within seconds
    # (docs/bot.md); far below the iterator lifetime (15 min) and GetRecords' 5 calls/s per shard.
    idle_max_s: float = 1.0
    idle_factor: float = 2.0
    refresh_s: float = 60.0  # DescribeStream this often even if no shard closed (new shards appear)


@dataclasses.dataclass(frozen=True, slots=True)
class ShardInfo:
    shard_id: str
    parent_id: str | None
    closed: bool  # DescribeStream reports an ending sequence number


@dataclasses.dataclass
class FollowerStats:
    polls: int = 0
    records: int = 0
    batches: int = 0
    failed_batches: int = 0
    expired_iterators: int = 0
    trimmed: int = 0
    reconciles: int = 0
    shards_finished: int = 0
    idle_waits: int = 0
    last_idle_wait_s: float = 0.0


class StreamFollower:
    """Follows one table's stream into the warehouse through ``processor`` until ``stop`` is set."""

    def __init__(self, streams: Any, stream_arn: str, table_name: str, processor: BatchProcessor,
                 checkpoints: CheckpointStore, reconcile: Callable[[], object], *,
                 stop: threading.Event | None = None, config: FollowerConfig | None = None,
                 sleep: Callable[[float], object] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.streams = streams
        self.stream_arn = stream_arn
        self.table_name = table_name
        self.processor = processor
        self.store = checkpoints
        self.reconcile = reconcile
        self.stop = stop or threading.Event()
        self.config = config or FollowerConfig()
        # Waiting on the stop event makes a stop request end the wait at once.
        self._sleep = sleep or self.stop.wait
        self._clock = clock
        self.stats = FollowerStats()
        self._shards: dict[str, ShardInfo] = {}
        self._checkpoints: dict[str, ShardCheckpoint] = {}
        self._iterators: dict[str, str] = {}
        self._lost: set[str] = set()  # shards whose unread records are gone: reset them after a reconcile
        self._reconcile_due = False
        self._refresh_at: float | None = None  # None: describe the stream on the next poll
        self._idle_delay = 0.0
        self._started = False

    # ---- the loop ----

    def run(self) -> None:
        """Poll until ``stop`` is set; back off exponentially while there is nothing (or nothing durable)."""
        log.info("following stream=%s table=%s", self.stream_arn, self.table_name)
        while not self.stop.is_set():
            if self.poll_once():
                self._idle_delay = 0.0
                continue
            self._idle_delay = (self.config.idle_initial_s if self._idle_delay == 0.0
                                else min(self.config.idle_max_s, self._idle_delay * self.config.idle_factor))
            self.stats.idle_waits += 1
            self.stats.last_idle_wait_s = self._idle_delay
            self._sleep(self._idle_delay)
        log.info("follower stopped stream=%s", self.stream_arn)

    def poll_once(self) -> bool:
        """One pass over the readable shards. True if it made progress (records landed or a shard finished)."""
        if not self._started:
            self._start()
        if self._reconcile_due and not self._run_reconcile():
            return False
        if self._refresh_at is None or self._clock() >= self._refresh_at:
            self._refresh()
        progressed = False
        for shard_id in self.readable_shards():
            if self.stop.is_set():
                break
            progressed = self._poll_shard(shard_id) or progressed
        if self._reconcile_due:  # found in this pass: reconcile now rather than after an idle wait
            progressed = self._run_reconcile() or progressed
        return progressed

    def readable_shards(self) -> list[str]:
        """Unfinished shards whose parent is finished or no longer listed (children only after parents)."""
        ready = []
        for shard_id, info in sorted(self._shards.items()):
            if self._checkpoints.get(shard_id, ShardCheckpoint()).done or shard_id in self._lost:
                continue
            parent = info.parent_id
            if parent and parent in self._shards and not self._checkpoints.get(parent, ShardCheckpoint()).done:
                continue
            ready.append(shard_id)
        return ready

    # ---- start-up, shard discovery ----

    def _start(self) -> None:
        self._checkpoints, previous_arn = self.store.load(self.stream_arn)
        self._started = True
        if previous_arn is not None and previous_arn != self.stream_arn:
            # The table's stream was replaced (disabled and re-enabled): changes in between were never
            # streamed, and the old stream's checkpoints mean nothing here.
            log.warning("stream changed from %s to %s: reconciling", previous_arn, self.stream_arn)
            self._reconcile_due = True

    def _refresh(self) -> None:
        """DescribeStream, all pages. A failure keeps the last known shards and retries next time."""
        shards: dict[str, ShardInfo] = {}
        start: str | None = None
        try:
            while True:
                arguments: dict[str, Any] = {"StreamArn": self.stream_arn}
                if start:
                    arguments["ExclusiveStartShardId"] = start
                description = self.streams.describe_stream(**arguments)["StreamDescription"]
                for shard in description.get("Shards", []):
                    ending = (shard.get("SequenceNumberRange") or {}).get("EndingSequenceNumber")
                    shards[shard["ShardId"]] = ShardInfo(shard["ShardId"], shard.get("ParentShardId"),
                                                         ending is not None)
                start = description.get("LastEvaluatedShardId")
                if not start:
                    break
        except Exception as exc:  # botocore raises several types; all mean "try again later"
            log.warning("describe_stream failed stream=%s error=%s", self.stream_arn, _code(exc))
            self._refresh_at = self._clock() + min(self.config.refresh_s, self.config.idle_max_s)
            return
        self._refresh_at = self._clock() + self.config.refresh_s
        self._shards = shards
        for shard_id, checkpoint in list(self._checkpoints.items()):
            if shard_id in shards:
                continue
            if checkpoint.done:
                del self._checkpoints[shard_id]  # finished and trimmed away: forget it
            elif shard_id not in self._lost:
                # We stopped part-way through a shard that has since been trimmed: its rest is lost.
                self._data_lost(shard_id, "shard no longer in the stream")

    # ---- one shard ----

    def _poll_shard(self, shard_id: str, *, retry: bool = True) -> bool:
        iterator = self._iterators.get(shard_id) or self._acquire(shard_id)
        if iterator is None:
            return False
        self.stats.polls += 1
        try:
            response = self.streams.get_records(ShardIterator=iterator, Limit=self.config.batch_limit)
        except Exception as exc:
            self._iterators.pop(shard_id, None)
            code = _code(exc)
            if code == EXPIRED:
                self.stats.expired_iterators += 1
                log.info("iterator expired shard=%s: re-acquiring from the checkpoint", shard_id)
                return self._poll_shard(shard_id, retry=False) if retry else False
            if code in (TRIMMED, NOT_FOUND):
                self._data_lost(shard_id, code)
            elif code in THROTTLED:
                log.info("throttled shard=%s", shard_id)
            else:
                log.error("get_records failed shard=%s error=%s", shard_id, code)
            return False
        records = response.get("Records") or []
        if records:
            if not self._deliver(shard_id, records):
                return False
        following = response.get("NextShardIterator")
        if following is None:
            self._finish(shard_id)
            return True
        self._iterators[shard_id] = following
        return bool(records)

    def _acquire(self, shard_id: str) -> str | None:
        """An iterator after the checkpoint, or at the oldest record for a shard never read."""
        checkpoint = self._checkpoints.get(shard_id, ShardCheckpoint())
        arguments: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard_id}
        if checkpoint.sequence:
            arguments.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=checkpoint.sequence)
        else:
            arguments["ShardIteratorType"] = "TRIM_HORIZON"
        try:
            iterator = self.streams.get_shard_iterator(**arguments).get("ShardIterator")
        except Exception as exc:
            code = _code(exc)
            if code in (TRIMMED, NOT_FOUND):
                self._data_lost(shard_id, code)
            else:
                log.error("get_shard_iterator failed shard=%s error=%s", shard_id, code)
            return None
        if iterator is None:  # a closed shard with nothing after the position
            self._finish(shard_id)
            return None
        self._iterators[shard_id] = iterator
        return iterator

    def _deliver(self, shard_id: str, records: Sequence[Mapping[str, Any]]) -> bool:
        """Hand a batch to the replicator; checkpoint what is durable. False if part of it must come again."""
        self.stats.batches += 1
        result = self.processor.process(records, source_table=self.table_name)
        failed = getattr(result, "failed_index", None)
        if failed is None:
            self.stats.records += len(records)
            self._checkpoint(shard_id, _sequence(records[-1]))
            return True
        self.stats.failed_batches += 1
        self.stats.records += failed
        if failed > 0:
            self._checkpoint(shard_id, _sequence(records[failed - 1]))
        # Re-read from the checkpoint: the first failed record is delivered again after the back-off.
        self._iterators.pop(shard_id, None)
        log.warning("batch failed shard=%s records=%d failed_index=%d", shard_id, len(records), failed)
        return False

    def _checkpoint(self, shard_id: str, sequence: str, *, done: bool = False) -> None:
        self._checkpoints[shard_id] = ShardCheckpoint(sequence or None, done)
        self.store.save(self.stream_arn, self._checkpoints)

    def _finish(self, shard_id: str) -> None:
        """A closed shard read to its end: children may start, and the next poll looks for them."""
        self._iterators.pop(shard_id, None)
        current = self._checkpoints.get(shard_id, ShardCheckpoint())
        self._checkpoint(shard_id, current.sequence or "", done=True)
        self.stats.shards_finished += 1
        self._refresh_at = None
        log.info("shard finished shard=%s", shard_id)

    # ---- data loss: fall back to a reconcile ----

    def _data_lost(self, shard_id: str, reason: str) -> None:
        """Records between our position and what the stream still holds are gone: reconcile, then resume."""
        self.stats.trimmed += 1
        self._lost.add(shard_id)
        self._iterators.pop(shard_id, None)
        self._reconcile_due = True
        log.warning("stream data lost shard=%s reason=%s: a reconcile will follow", shard_id, reason)

    def _run_reconcile(self) -> bool:
        """Reconcile; only then reset lost shards to the oldest record still kept. False if it failed.

        Checkpoints change only after the reconcile succeeded, so a crash before it repeats the detection
        (and the reconcile) on restart instead of silently skipping the lost records.
        """
        try:
            self.reconcile()
        except Exception:
            log.exception("reconcile failed; the follower will retry it")
            return False
        self.stats.reconciles += 1
        self._reconcile_due = False
        for shard_id in self._lost:
            self._checkpoints.pop(shard_id, None)  # no checkpoint: TRIM_HORIZON if the shard still exists
        self._lost.clear()
        self.store.save(self.stream_arn, self._checkpoints)
        self._refresh_at = None
        return True


def _code(exc: BaseException) -> str:
    """A botocore ClientError's code, else the exception's type name (never its message: it may echo input)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def _sequence(record: Mapping[str, Any]) -> str:
    section = record.get("dynamodb")
    value = section.get("SequenceNumber") if isinstance(section, Mapping) else None
    return str(value) if value is not None else ""
