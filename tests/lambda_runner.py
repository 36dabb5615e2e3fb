"""A stand-in for AWS Lambda's DynamoDB Streams event source mapping, run as a process of its own.

There is no Lambda runtime here, so this plays the part of the service that polls the table's stream and
invokes ``replicator.lambda_handler.handler``, with the behaviour the replicator relies on (AWS Lambda
developer guide, "Using AWS Lambda with Amazon DynamoDB" and "Reporting batch item failures"):

- **one poller per shard**, parents before children; each shard is read in order and has at most one
  invocation in flight (ParallelizationFactor 1), shards run side by side;
- each shard is polled **four times a second** (Lambda's base rate for stream event sources);
- a **batch** is invoked once it holds ``BatchSize`` records, or ``MaximumBatchingWindowInSeconds`` after
  its first record was read (0, the default: as soon as a poll returns records);
- the event is what Lambda delivers: ``{"Records": [...]}``, every record as GetRecords returned it plus
  ``eventSourceARN``, with the JSON Lambda sends (``ApproximateCreationDateTime`` in epoch seconds, binary
  values in base64): the event goes through ``json.dumps``/``json.loads`` before the handler sees it;
- **retries**: an exception (a function error) retries the whole batch; with ReportBatchItemFailures the
  answer ``{"batchItemFailures": [{"itemIdentifier": <sequence number>}]}`` checkpoints the records before
  the lowest reported sequence number and retries from it; an empty, null or unknown identifier retries
  the whole batch; an empty or null list (or no answer) is success. Retries back off exponentially and go on
  until they succeed (MaximumRetryAttempts -1, the default) or ``max_retries`` is reached, then the batch is
  skipped, as Lambda discards it (or sends it to an on-failure destination).

Not reproduced: Lambda's function timeout (``context.get_remaining_time_in_millis`` counts down, nothing
kills a slow invocation), the 6 MB payload cap, record-age limits, bisecting, tumbling windows.

    python -m tests.lambda_runner --table oot-results [--batch-size 100 --window 0]

The handler reads its configuration from the environment (``OOT_HUD_*``, ``AWS_*``), as in a Lambda.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import importlib
import json
import logging
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("lambda_runner")

Function = Callable[[dict[str, Any], Any], Any]


@dataclasses.dataclass(frozen=True)
class MappingConfig:
    """The event source mapping's settings (Lambda's names in the comments)."""

    batch_size: int = 100  # BatchSize: Lambda's default for DynamoDB streams
    batching_window_s: float = 0.0  # MaximumBatchingWindowInSeconds
    poll_interval_s: float = 0.25  # Lambda reads each shard four times a second
    starting_position: str = "TRIM_HORIZON"  # StartingPosition (TRIM_HORIZON or LATEST)
    report_batch_item_failures: bool = True  # FunctionResponseTypes: ["ReportBatchItemFailures"]
    max_retries: int = -1  # MaximumRetryAttempts: -1 = until the records expire
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    function_timeout_s: float = 300.0  # reported through the context only
    refresh_s: float = 10.0  # how often the shard list is read again


@dataclasses.dataclass
class MappingStats:
    invocations: int = 0
    records: int = 0  # records delivered in successful invocations' durable part
    function_errors: int = 0
    partial_failures: int = 0
    skipped_batches: int = 0
    batch_sizes: list[int] = dataclasses.field(default_factory=list)


class Context:
    """What Lambda's Python runtime passes as ``context`` (the attributes handlers commonly read)."""

    def __init__(self, function_name: str, timeout_s: float) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self.memory_limit_in_mb = "512"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def lambda_record(record: Mapping[str, Any], stream_arn: str) -> dict[str, Any]:
    """A GetRecords record (as boto3 returns it) as Lambda puts it in the event: ``eventSourceARN`` added,
    timestamps as epoch seconds and binary values as base64, i.e. what ``json.loads`` of Lambda's payload gives."""
    return json.loads(json.dumps({**record, "eventSourceARN": stream_arn}, default=_json_value))


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return int(value.timestamp())
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"not JSON: {type(value).__name__}")


def resume_index(response: Any, batch: Sequence[Mapping[str, Any]]) -> int | None:
    """Where the shard resumes after ``response`` with ReportBatchItemFailures: None when the batch succeeded,
    else the index of the first record to deliver again (0: the whole batch)."""
    if response is None or not isinstance(response, Mapping):
        return None
    failures = response.get("batchItemFailures")
    if not failures:
        return None
    sequences = [str(record.get("dynamodb", {}).get("SequenceNumber")) for record in batch]
    lowest: int | None = None
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not identifier or identifier not in sequences:
            return 0  # empty, null or unknown identifier: the whole batch failed
        index = sequences.index(identifier)
        lowest = index if lowest is None else min(lowest, index)
    return lowest


class ShardPoller:
    """One shard: read in order, batch, invoke, retry; at most one invocation in flight."""

    def __init__(self, mapping: EventSourceMapping, shard_id: str, position: str | None = None) -> None:
        self.mapping = mapping
        self.shard_id = shard_id
        self.finished = False
        self.checkpoint = position  # the last record delivered durably (Lambda's checkpoint)
        self._position = position  # the last record read into the batch
        self._iterator: str | None = None
        self._closed = False  # the shard ended (no NextShardIterator)
        self._buffer: list[dict[str, Any]] = []
        self._window_start: float | None = None
        self._attempts = 0

    def run(self) -> None:
        config = self.mapping.config
        stop = self.mapping.stop
        while not stop.is_set() and not self.finished:
            got = self._read()
            if self._batch_ready():
                self._invoke()
                continue
            if got:
                continue  # a batching window: read on while the shard has more
            wait = config.poll_interval_s
            if self._window_start is not None:
                wait = min(wait, max(0.0, self._window_start + config.batching_window_s - time.monotonic()))
            stop.wait(wait)

    def _read(self) -> bool:
        """One GetRecords for what the batch has room for; False when the shard had nothing more now."""
        config = self.mapping.config
        room = config.batch_size - len(self._buffer)
        if room <= 0 or self._closed:
            return False
        streams = self.mapping.streams
        try:
            if self._iterator is None:
                arguments: dict[str, Any] = {"StreamArn": self.mapping.stream_arn, "ShardId": self.shard_id}
                if self._position:
                    arguments.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=self._position)
                else:
                    arguments["ShardIteratorType"] = config.starting_position
                self._iterator = streams.get_shard_iterator(**arguments).get("ShardIterator")
                if self._iterator is None:
                    self._close()
                    return False
            response = streams.get_records(ShardIterator=self._iterator, Limit=min(room, 1000))
        except Exception as exc:  # expired iterator, throttling, a blip: read again from the last position
            log.warning("stream read failed shard=%s error=%s", self.shard_id, type(exc).__name__)
            self._iterator = None
            return False
        records = response.get("Records") or []
        if records:
            if self._window_start is None:
                self._window_start = time.monotonic()
            self._buffer += [lambda_record(record, self.mapping.stream_arn) for record in records]
            self._position = _sequence(self._buffer[-1])
        following = response.get("NextShardIterator")
        if following is None:
            self._close()
            return False
        self._iterator = following
        return bool(records)

    def _close(self) -> None:
        self._iterator = None
        self._closed = True
        if not self._buffer:
            self.finished = True

    def _batch_ready(self) -> bool:
        if not self._buffer:
            return False
        config = self.mapping.config
        if len(self._buffer) >= config.batch_size or self._closed or config.batching_window_s <= 0:
            return True
        assert self._window_start is not None
        return time.monotonic() - self._window_start >= config.batching_window_s

    def _invoke(self) -> None:
        mapping = self.mapping
        config = mapping.config
        batch = self._buffer
        event = json.loads(json.dumps({"Records": batch}))
        mapping.stats.invocations += 1
        mapping.stats.batch_sizes.append(len(batch))
        try:
            response = mapping.function(event, Context(mapping.function_name, config.function_timeout_s))
            json.dumps(response)  # Lambda serialises the answer; a non-JSON answer is a function error
        except Exception:
            log.exception("function error shard=%s records=%d", self.shard_id, len(batch))
            mapping.stats.function_errors += 1
            self._retry(0)
            return
        resume = resume_index(response, batch) if config.report_batch_item_failures else None
        if resume is None:
            mapping.stats.records += len(batch)
            self._durable(len(batch))
            return
        mapping.stats.partial_failures += 1
        mapping.stats.records += resume
        log.warning("batch item failure shard=%s records=%d resume_at=%d", self.shard_id, len(batch), resume)
        self._durable(resume, reset=False)
        self._retry(0)

    def _durable(self, count: int, *, reset: bool = True) -> None:
        """The first ``count`` records of the batch are done with: checkpoint after them."""
        if count:
            self.checkpoint = _sequence(self._buffer[count - 1])
            self.mapping.checkpoints[self.shard_id] = self.checkpoint
        self._buffer = self._buffer[count:]
        self._window_start = time.monotonic() if self._buffer else None
        if reset:
            self._attempts = 0
        if self._closed and not self._buffer:
            self.finished = True

    def _retry(self, resume: int) -> None:
        """Deliver the batch from ``resume`` on again after a back-off (or skip it once retries ran out)."""
        config = self.mapping.config
        self._buffer = self._buffer[resume:]
        self._attempts += 1
        if 0 <= config.max_retries < self._attempts:
            log.error("retries exhausted shard=%s: %d records skipped", self.shard_id, len(self._buffer))
            self.mapping.stats.skipped_batches += 1
            self._durable(len(self._buffer))
            return
        self.mapping.stop.wait(min(config.retry_initial_s * 2 ** (self._attempts - 1), config.retry_max_s))


def _sequence(record: Mapping[str, Any]) -> str:
    return str(record.get("dynamodb", {}).get("SequenceNumber", ""))


class EventSourceMapping:
    """Polls every shard of ``stream_arn`` (children once their parent is read) and invokes ``function``."""

    def __init__(self, streams: Any, stream_arn: str, function: Function, config: MappingConfig | None = None,
                 *, function_name: str = "oot-hud-replicator", stop: threading.Event | None = None) -> None:
        self.streams = streams
        self.stream_arn = stream_arn
        self.function = function
        self.function_name = function_name
        self.config = config or MappingConfig()
        self.stop = stop or threading.Event()
        self.stats = MappingStats()
        self.checkpoints: dict[str, str] = {}  # shard -> the last sequence number delivered durably
        self._pollers: dict[str, tuple[ShardPoller, threading.Thread]] = {}
        self._done: set[str] = set()
        self._refresh = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self._start_ready_shards()
            self._refresh.wait(self.config.refresh_s)
            self._refresh.clear()
            for shard_id, (poller, _) in self._pollers.items():
                if poller.finished:
                    self._done.add(shard_id)
        for _, thread in self._pollers.values():
            thread.join(30)

    def _start_ready_shards(self) -> None:
        try:
            shards = self._shards()
        except Exception as exc:  # try again at the next refresh
            log.warning("describe_stream failed: %s", type(exc).__name__)
            return
        listed = {shard["ShardId"] for shard in shards}
        for shard in shards:
            shard_id, parent = shard["ShardId"], shard.get("ParentShardId")
            if shard_id in self._pollers or (parent in listed and parent not in self._done):
                continue
            poller = ShardPoller(self, shard_id, self.checkpoints.get(shard_id))
            thread = threading.Thread(target=self._run_poller, args=(poller,), name=f"shard-{shard_id}", daemon=True)
            self._pollers[shard_id] = (poller, thread)
            thread.start()

    def _run_poller(self, poller: ShardPoller) -> None:
        try:
            poller.run()
        except Exception:  # restarted from its checkpoint at the next refresh, as Lambda resumes a shard
            log.exception("poller crashed shard=%s", poller.shard_id)
            self._pollers.pop(poller.shard_id, None)
        finally:
            self._refresh.set()

    def _shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        start: str | None = None
        while True:
            arguments: dict[str, Any] = {"StreamArn": self.stream_arn}
            if start:
                arguments["ExclusiveStartShardId"] = start
            description = self.streams.describe_stream(**arguments)["StreamDescription"]
            shards += description.get("Shards", [])
            start = description.get("LastEvaluatedShardId")
            if not start:
                return shards


def load_function(path: str) -> Function:
    """``module:attribute`` (Lambda's ``Handler`` setting, with a colon)."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute or "handler")  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", required=True, help="the DynamoDB table whose stream is the event source")
    parser.add_argument("--handler", default="replicator.lambda_handler:handler")
    parser.add_argument("--batch-size", type=int, default=MappingConfig.batch_size)
    parser.add_argument("--window", type=float, default=MappingConfig.batching_window_s,
                        help="MaximumBatchingWindowInSeconds")
    parser.add_argument("--starting-position", default=MappingConfig.starting_position,
                        choices=("TRIM_HORIZON", "LATEST"))
    parser.add_argument("--max-retries", type=int, default=MappingConfig.max_retries)
    parser.add_argument("--stats", type=Path, default=None, help="write the mapping's counters here as JSON on exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    import boto3

    arn = boto3.client("dynamodb").describe_table(TableName=args.table)["Table"].get("LatestStreamArn")
    if not arn:
        print(f"lambda_runner: table {args.table} has no stream", file=sys.stderr)
        return 2
    config = MappingConfig(batch_size=args.batch_size, batching_window_s=args.window,
                           starting_position=args.starting_position, max_retries=args.max_retries)
    mapping = EventSourceMapping(boto3.client("dynamodbstreams"), arn, load_function(args.handler), config)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: mapping.stop.set())
    print(f"event source mapping: {arn} -> {args.handler} batch_size={config.batch_size} "
          f"window={config.batching_window_s}s", flush=True)
    mapping.run()
    if args.stats is not None:
        args.stats.write_text(json.dumps(dataclasses.asdict(mapping.stats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
