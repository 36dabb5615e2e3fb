"""AWS Lambda entry point for a DynamoDB stream event source, answering with a partial batch response.

Configure the event source mapping with ``FunctionResponseTypes: ["ReportBatchItemFailures"]``. A transient
warehouse failure answers the lowest sequence number that did not land, so the shard retries from there
(and only from there); poison records are dead-lettered in the warehouse and never block the shard.

This module is the Lambda's composition root: ``handler`` builds the replicator once per container from
``OOT_HUD_*`` variables (through ``oot_hud.settings``, lazily); ``handle`` is the pure-logic part.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from replicator.convert import sequence_number
from replicator.pipeline import Replicator
from replicator.sink import RetryPolicy
from sql.records import PrRef

log = logging.getLogger("replicator.lambda")

_replicator: Replicator | None = None
_build_lock = threading.Lock()


def handler(event: Mapping[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    """Lambda entry point: ``{"batchItemFailures": [...]}``, empty when the whole batch is durable."""
    records = _records(event)
    if not records:
        return {"batchItemFailures": []}
    try:
        replicator = _cached_replicator()
    except Exception as exc:  # the warehouse is unreachable on a cold start: retry the batch later
        log.error("replicator unavailable error=%s: %.200s", type(exc).__name__, exc)
        return _failure(sequence_number(records[0]) if isinstance(records[0], Mapping) else "")
    return handle(event, replicator)


def handle(event: Mapping[str, Any], replicator: Replicator) -> dict[str, list[dict[str, str]]]:
    """Replicate a DynamoDB stream event's records and report where the shard must resume."""
    records = _records(event)
    if not records:
        return {"batchItemFailures": []}
    result = replicator.process(records)
    if result.ok:
        return {"batchItemFailures": []}
    # An empty identifier (a record without a sequence number) makes Lambda retry the whole batch: safe.
    return _failure(result.first_failed_sequence or "")


def build_replicator() -> Replicator:
    """The replicator this container uses, from ``OOT_HUD_*`` variables (the Lambda's composition root)."""
    from oot_hud.services import open_warehouse, replicator_announcer
    from oot_hud.settings import Settings

    settings = Settings()
    if settings.embedded:
        raise RuntimeError("the Lambda replicator needs OOT_HUD_CLICKHOUSE_URL (a ClickHouse server)")
    routes = settings.replication_routes()
    if not routes:
        raise RuntimeError("set OOT_HUD_REPLICATOR_ROUTES or OOT_HUD_DYNAMO_TABLE")
    retry = RetryPolicy(attempts=settings.replicator_insert_attempts, timeout=settings.replicator_insert_timeout_s)
    # No bot runs inside the Lambda: changed PRs are marked in the bot's state table, where the instances'
    # writers find them within a second.
    return Replicator.for_warehouse(open_warehouse(settings), routes, on_change=_log_change, retry=retry,
                                    on_changes=replicator_announcer(settings))


def reset() -> None:
    """Forget this container's replicator (tests; a new configuration)."""
    global _replicator
    with _build_lock:
        if _replicator is not None:
            close = getattr(_replicator.sink.warehouse, "close", None)
            if close is not None:
                close()
        _replicator = None


def _cached_replicator() -> Replicator:
    global _replicator
    with _build_lock:
        if _replicator is None:
            _replicator = build_replicator()
        return _replicator


def _records(event: Mapping[str, Any]) -> list[Any]:
    records = event.get("Records") if isinstance(event, Mapping) else None
    return records if isinstance(records, list) else []


def _failure(sequence: str) -> dict[str, list[dict[str, str]]]:
    return {"batchItemFailures": [{"itemIdentifier": sequence}]}


def _log_change(pr: PrRef) -> None:
    log.info("pr changed upstream_repo=%s pr_number=%d head_sha=%s", pr.upstream_repo, pr.pr_number, pr.head_sha)
