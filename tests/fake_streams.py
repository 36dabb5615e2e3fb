"""A small in-memory DynamoDB Streams client for what moto cannot produce: closed shards, splits, expired
iterators and trimmed data. It speaks the three calls the follower makes, with botocore's error shape."""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from typing import Any

from botocore.exceptions import ClientError

STREAM_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/fake-results/stream/2026-11-27T00:00:00.000"


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"fake {code}"}}, operation)


@dataclasses.dataclass
class FakeShard:
    shard_id: str
    parent_id: str | None = None
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    closed: bool = False
    trimmed_through: int = 0  # records with a sequence number <= this are gone

    def after(self, sequence: int, limit: int) -> list[dict[str, Any]]:
        # Records are appended in sequence order: bisect keeps big streams (the benchmark) cheap.
        start = bisect.bisect_right(self.records, sequence, key=lambda r: int(r["dynamodb"]["SequenceNumber"]))
        return self.records[start:start + limit]


@dataclasses.dataclass
class _Iterator:
    shard_id: str
    after: int  # the iterator reads records with a greater sequence number
    generation: int


class FakeStreams:
    """Shards, records and iterators in memory. ``page_size`` forces DescribeStream pagination."""

    def __init__(self, stream_arn: str = STREAM_ARN, *, page_size: int = 100) -> None:
        self.stream_arn = stream_arn
        self.page_size = page_size
        self.shards: dict[str, FakeShard] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._sequence = itertools.count(100)
        self._iterators: dict[str, _Iterator] = {}
        self._tokens = itertools.count(1)
        self._generation = 0

    # ---- test controls ----

    def add_shard(self, shard_id: str, parent_id: str | None = None) -> FakeShard:
        self.shards[shard_id] = FakeShard(shard_id, parent_id)
        return self.shards[shard_id]

    def put(self, shard_id: str, key: str = "k", version: int = 1) -> str:
        """Append a MODIFY record; returns its sequence number."""
        sequence = str(next(self._sequence))
        self.shards[shard_id].records.append({
            "eventID": f"e{sequence}", "eventName": "MODIFY",
            "dynamodb": {"Keys": {"key": {"S": key}}, "NewImage": {"key": {"S": key}, "version": {"N": str(version)}},
                         "SequenceNumber": sequence, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        })
        return sequence

    def close(self, shard_id: str) -> None:
        self.shards[shard_id].closed = True

    def split(self, parent_id: str, children: tuple[str, str]) -> None:
        """Close ``parent_id`` and open two children, as DynamoDB does when a partition splits."""
        self.close(parent_id)
        for child in children:
            self.add_shard(child, parent_id)

    def trim(self, shard_id: str, through_sequence: str) -> None:
        shard = self.shards[shard_id]
        shard.trimmed_through = int(through_sequence)
        shard.records = [r for r in shard.records if int(r["dynamodb"]["SequenceNumber"]) > shard.trimmed_through]

    def remove_shard(self, shard_id: str) -> None:
        del self.shards[shard_id]

    def expire_iterators(self) -> None:
        self._generation += 1

    def count(self, operation: str) -> int:
        return sum(1 for name, _ in self.calls if name == operation)

    # ---- the client API ----

    def describe_stream(self, *, StreamArn: str, ExclusiveStartShardId: str | None = None,
                        Limit: int | None = None) -> dict[str, Any]:
        self.calls.append(("describe_stream", {"ExclusiveStartShardId": ExclusiveStartShardId}))
        self._check_arn(StreamArn, "DescribeStream")
        ids = list(self.shards)  # creation order, like DynamoDB
        start = ids.index(ExclusiveStartShardId) + 1 if ExclusiveStartShardId else 0
        page = ids[start:start + (Limit or self.page_size)]
        shards = []
        for shard_id in page:
            shard = self.shards[shard_id]
            numbers: dict[str, str] = {"StartingSequenceNumber": str(shard.trimmed_through + 1)}
            if shard.closed:
                numbers["EndingSequenceNumber"] = shard.records[-1]["dynamodb"]["SequenceNumber"] \
                    if shard.records else str(shard.trimmed_through)
            entry: dict[str, Any] = {"ShardId": shard_id, "SequenceNumberRange": numbers}
            if shard.parent_id:
                entry["ParentShardId"] = shard.parent_id
            shards.append(entry)
        description: dict[str, Any] = {"StreamArn": self.stream_arn, "StreamStatus": "ENABLED", "Shards": shards}
        if start + len(page) < len(ids):
            description["LastEvaluatedShardId"] = page[-1]
        return {"StreamDescription": description}

    def get_shard_iterator(self, *, StreamArn: str, ShardId: str, ShardIteratorType: str,
                           SequenceNumber: str | None = None) -> dict[str, Any]:
        self.calls.append(("get_shard_iterator", {"ShardId": ShardId, "ShardIteratorType": ShardIteratorType,
                                                  "SequenceNumber": SequenceNumber}))
        self._check_arn(StreamArn, "GetShardIterator")
        shard = self.shards.get(ShardId)
        if shard is None:
            raise client_error("ResourceNotFoundException", "GetShardIterator")
        if ShardIteratorType == "TRIM_HORIZON":
            position = shard.trimmed_through
        elif ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            assert SequenceNumber is not None
            if int(SequenceNumber) < shard.trimmed_through:
                raise client_error("TrimmedDataAccessException", "GetShardIterator")
            position = int(SequenceNumber)
        else:
            raise AssertionError(f"the follower should not ask for {ShardIteratorType}")
        return {"ShardIterator": self._token(ShardId, position)}

    def get_records(self, *, ShardIterator: str, Limit: int = 1000) -> dict[str, Any]:
        self.calls.append(("get_records", {"ShardIterator": ShardIterator}))
        state = self._iterators.get(ShardIterator)
        if state is None:
            raise client_error("ValidationException", "GetRecords")
        if state.generation != self._generation:
            raise client_error("ExpiredIteratorException", "GetRecords")
        shard = self.shards.get(state.shard_id)
        if shard is None:
            raise client_error("ResourceNotFoundException", "GetRecords")
        if state.after < shard.trimmed_through:
            raise client_error("TrimmedDataAccessException", "GetRecords")
        batch = shard.after(state.after, Limit)
        position = int(batch[-1]["dynamodb"]["SequenceNumber"]) if batch else state.after
        exhausted = not shard.after(position, 1)
        following = None if shard.closed and exhausted else self._token(shard.shard_id, position)
        return {"Records": [dict(record) for record in batch], "NextShardIterator": following}

    def _token(self, shard_id: str, after: int) -> str:
        token = f"it-{next(self._tokens)}"
        self._iterators[token] = _Iterator(shard_id, after, self._generation)
        return token

    def _check_arn(self, arn: str, operation: str) -> None:
        if arn != self.stream_arn:
            raise client_error("ResourceNotFoundException", operation)
