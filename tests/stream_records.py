"""Builders for job records and DynamoDB stream records (Lambda event shape) shared by replicator tests."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeSerializer

from sql.records import JobRecord

TABLE = "oot-results"
REGION_ARN = "arn:aws:dynamodb:us-east-1:123456789012"
_SERIALIZER = TypeSerializer()
BASE_TIME = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def job(key: str = "acme/npu/d1/ci/test/1", **changes: Any) -> JobRecord:
    """A complete in-progress record; ``changes`` override fields."""
    fields: dict[str, Any] = {
        "key": key, "downstream_repo": "acme/npu", "event_type": "pull_request", "delivery_id": "d1",
        "upstream_repo": "pytorch/pytorch", "pr_number": 4242, "head_sha": "a" * 40, "workflow_name": "ci",
        "job_name": "test", "check_run_id": "1", "run_attempt": 1, "status": "in_progress",
        "received_at": BASE_TIME, "downstream_level": "L3", "started_at": BASE_TIME - timedelta(minutes=1),
        "queue_time_s": 1.5,
    }
    fields.update(changes)
    return JobRecord(**fields)


def completed(record: JobRecord, conclusion: str = "success", **changes: Any) -> JobRecord:
    return dataclasses.replace(record, status="completed", conclusion=conclusion,
                               completed_at=record.received_at + timedelta(minutes=5),
                               received_at=record.received_at + timedelta(minutes=5),
                               execution_time_s=300.25, tests_passed=10, tests_failed=0, tests_skipped=1,
                               tests_total=11, **changes)


def item(record: JobRecord, version: int, **extra: Any) -> dict[str, Any]:
    """The DynamoDB item (plain values) the store holds after ``version`` writes ending with ``record``."""
    values = record.present_fields()
    values["version"] = version
    values.update(extra)
    return values


def wire(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values -> DynamoDB wire form (floats through Decimal, as the store writes them)."""
    return {name: _wire_value(value) for name, value in values.items()}


def _wire_value(value: Any) -> dict[str, Any]:
    if isinstance(value, Decimal) and not value.is_finite():
        return {"N": str(value)}  # boto3 refuses to write these; a hand-made record can still carry them
    return _SERIALIZER.serialize(Decimal(str(value)) if isinstance(value, float) else value)


def stream_record(event: str, *, new: dict[str, Any] | None = None, old: dict[str, Any] | None = None,
                  seq: int | str = 1, table: str | None = TABLE, key: str | None = None,
                  raw_new: dict[str, Any] | None = None) -> dict[str, Any]:
    """One record as a Lambda DynamoDB event carries it (``table=None``: no ``eventSourceARN``)."""
    image = new if new is not None else old
    key = key if key is not None else (image or {}).get("key", "")
    section: dict[str, Any] = {"Keys": {"key": {"S": key}}, "SequenceNumber": str(seq),
                               "SizeBytes": 100, "StreamViewType": "NEW_AND_OLD_IMAGES",
                               "ApproximateCreationDateTime": 1_800_000_000}
    if new is not None:
        section["NewImage"] = wire(new)
    if raw_new is not None:
        section["NewImage"] = raw_new
    if old is not None:
        section["OldImage"] = wire(old)
    record: dict[str, Any] = {"eventID": f"ev-{seq}", "eventName": event, "eventVersion": "1.1",
                              "eventSource": "aws:dynamodb", "awsRegion": "us-east-1", "dynamodb": section}
    if table is not None:
        record["eventSourceARN"] = f"{REGION_ARN}:table/{table}/stream/2026-11-27T00:00:00.000"
    return record


def lifecycle(record: JobRecord, first_seq: int = 100) -> list[dict[str, Any]]:
    """in_progress (v1) then completed (v2) for ``record``, as two stream records."""
    first = item(record, 1)
    done = item(completed(record), 2, first_received_at=first["first_received_at"])
    return [stream_record("INSERT", new=first, seq=first_seq),
            stream_record("MODIFY", new=done, old=first, seq=first_seq + 1)]


# ---- what the warehouse shows: one row per key, via FINAL and via argMax, tombstones hidden ----

LATEST_FINAL = """
SELECT key, status, conclusion, run_attempt, version AS top_version
FROM {table:Identifier} FINAL
WHERE deleted = 0
ORDER BY key
"""

LATEST_ARGMAX = """
SELECT key, argMax(status, version) AS status, argMax(conclusion, version) AS conclusion,
       argMax(run_attempt, version) AS run_attempt, max(version) AS top_version
FROM {table:Identifier}
GROUP BY key
HAVING argMax(deleted, version) = 0
ORDER BY key
"""


def latest(warehouse: Any, table: str = "oot_job_results") -> list[tuple[str, str, str, int, int]]:
    """The visible state, asserting that the FINAL and the argMax reading agree."""
    final = [tuple(row.values()) for row in warehouse.query(LATEST_FINAL, {"table": table})]
    argmax = [tuple(row.values()) for row in warehouse.query(LATEST_ARGMAX, {"table": table})]
    assert final == argmax
    return final


def dead_letters(warehouse: Any) -> list[dict[str, Any]]:
    return warehouse.query("SELECT source_table, event_id, sequence, reason, raw FROM oot_dead_letters "
                           "ORDER BY sequence")
