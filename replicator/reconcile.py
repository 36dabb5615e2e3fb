"""Scan a DynamoDB table and re-send every item the warehouse lacks or holds an older version of.

For outages longer than a stream keeps data (24 h) and for the follower's "records were lost" case. Each
scan page costs one warehouse query (``key IN {keys:Array(String)}``) and at most one replicator batch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from replicator.pipeline import Replicator

log = logging.getLogger("replicator.reconcile")

PAGE_SIZE = 500

# The newest version the warehouse holds per key, tombstones included (a tombstone is newer than its item).
_VERSIONS_SQL = """
SELECT key, max(version) AS version
FROM {table:Identifier}
WHERE key IN {keys:Array(String)}
GROUP BY key
"""


class ReconcileError(RuntimeError):
    """A batch of re-sent items did not land; nothing was skipped, run the reconcile again."""


@dataclasses.dataclass
class ReconcileResult:
    scanned: int = 0
    up_to_date: int = 0
    missing: int = 0  # in DynamoDB, not in the warehouse at all
    behind: int = 0  # the warehouse holds an older version
    resent: int = 0  # rows that landed
    skipped: int = 0  # items without a version (a partial write)
    dead_lettered: int = 0
    pages: int = 0


def reconcile(dynamodb: Any, warehouse: Any, replicator: Replicator, source_table: str, *,
              page_size: int = PAGE_SIZE,
              on_page: Callable[[ReconcileResult], None] | None = None) -> ReconcileResult:
    """Scan ``source_table`` (paginated) and replicate items newer than the warehouse's; counts out.

    ``dynamodb`` is a boto3 DynamoDB client, ``warehouse`` offers ``query(sql, params)``. Raises
    ``ReconcileError`` when the warehouse does not take a batch.
    """
    destination = replicator.routes.get(source_table)
    if destination is None:
        raise ValueError(f"no route for table {source_table!r}")
    result = ReconcileResult()
    arguments: dict[str, Any] = {"TableName": source_table, "Limit": page_size}
    while True:
        page = dynamodb.scan(**arguments)
        items = page.get("Items", [])
        result.pages += 1
        result.scanned += len(items)
        _reconcile_page(items, warehouse, replicator, source_table, destination, result)
        if on_page is not None:
            on_page(result)
        last = page.get("LastEvaluatedKey")
        if not last:
            break
        arguments["ExclusiveStartKey"] = last
    log.info("reconcile done table=%s %s", source_table,
             " ".join(f"{k}={v}" for k, v in dataclasses.asdict(result).items()))
    return result


def _reconcile_page(items: list[Mapping[str, Any]], warehouse: Any, replicator: Replicator, source_table: str,
                    destination: str, result: ReconcileResult) -> None:
    keys = [item["key"]["S"] for item in items if isinstance(item.get("key"), Mapping) and "S" in item["key"]]
    stored: dict[str, int] = {}
    if keys:
        rows = warehouse.query(_VERSIONS_SQL, {"table": destination, "keys": keys})
        stored = {row["key"]: int(row["version"]) for row in rows}
    records = []
    for item in items:
        key = item.get("key", {}).get("S") if isinstance(item.get("key"), Mapping) else None
        version = _wire_int(item.get("version"))
        if key is not None and version is not None and key in stored and stored[key] >= version:
            result.up_to_date += 1
            continue
        if key is not None and version is not None:
            if key in stored:
                result.behind += 1
            else:
                result.missing += 1
        # Everything else (no version, odd key) goes through the pipeline too: skipped or dead-lettered.
        records.append({"eventName": "MODIFY", "eventID": "reconcile",
                        "dynamodb": {"Keys": {"key": item.get("key")}, "NewImage": dict(item),
                                     "SequenceNumber": ""}})
    if not records:
        return
    batch = replicator.process(records, source_table=source_table)
    result.resent += batch.landed
    result.skipped += batch.skipped
    result.dead_lettered += batch.dead_lettered
    if not batch.ok:
        raise ReconcileError(f"the warehouse did not take re-sent items of {source_table}; run reconcile again")


def _wire_int(value: Any) -> int | None:
    if not isinstance(value, Mapping) or "N" not in value:
        return None
    try:
        return int(value["N"])
    except ValueError:
        return None
