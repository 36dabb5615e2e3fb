"""The record -> row mapping shared by the embedded store and the replicator, and the schema it targets."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from sql.records import COLUMN_NAMES, COLUMNS, JOB_RESULTS_TABLE, RowConversionError, item_to_row
from sql.warehouse import Warehouse


def _item(**overrides: object) -> dict[str, object]:
    item: dict[str, object] = {
        "key": "o/r/d1/wf/job/1", "downstream_repo": "o/r", "event_type": "pull_request",
        "delivery_id": "d1", "upstream_repo": "pytorch/pytorch", "pr_number": Decimal(5), "head_sha": "abc",
        "workflow_name": "wf", "job_name": "job", "check_run_id": "1", "run_attempt": Decimal(2),
        "status": "completed", "conclusion": "success", "started_at": "2026-11-20T10:00:00Z",
        "queue_time_s": Decimal("4.5"), "tests_passed": Decimal(10),
        "first_received_at": "2026-11-20T10:00:01.000Z", "received_at": "2026-11-20T10:00:02.000Z",
        "version": Decimal(3),
    }
    item.update(overrides)
    return item


def test_schema_columns_match_record_columns(warehouse: Warehouse) -> None:
    rows = warehouse.query(
        "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String} ORDER BY position",
        {"db": warehouse.database, "t": JOB_RESULTS_TABLE})
    assert [(r["name"], r["type"]) for r in rows] == [(n, t.replace(", ", ", ")) for n, t in COLUMNS]


def test_item_to_row_converts_decimals_times_and_defaults() -> None:
    row = dict(zip(COLUMN_NAMES, item_to_row(_item()), strict=True))
    assert row["pr_number"] == 5 and type(row["pr_number"]) is int
    assert row["queue_time_s"] == 4.5
    assert row["started_at"] == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert row["completed_at"] is None and row["tests_failed"] is None
    assert row["artifact_url"] == "" and row["deleted"] == 0 and row["version"] == 3


def test_tombstone_row_overrides_version_and_sets_deleted() -> None:
    row = dict(zip(COLUMN_NAMES, item_to_row(_item(), deleted=True, version=4), strict=True))
    assert (row["deleted"], row["version"]) == (1, 4)


@pytest.mark.parametrize(("field", "value"), [
    ("pr_number", Decimal("NaN")), ("tests_passed", Decimal(2) ** 70), ("queue_time_s", Decimal("Infinity")),
    ("started_at", "yesterday"), ("job_name", b"bytes"), ("key", None), ("run_attempt", Decimal("1.5")),
])
def test_item_to_row_rejects_poison(field: str, value: object) -> None:
    with pytest.raises(RowConversionError):
        item_to_row(_item(**{field: value}))


def test_rows_insert_and_collapse_to_latest_version(warehouse: Warehouse) -> None:
    warehouse.insert_job_rows([item_to_row(_item(version=Decimal(1), status="in_progress", conclusion=None)),
                               item_to_row(_item())])
    rows = warehouse.query(f"SELECT status, version FROM {JOB_RESULTS_TABLE} FINAL")
    assert rows == [{"status": "completed", "version": 3}]


def test_inserts_are_synchronous_and_readable_at_once(warehouse: Warehouse) -> None:
    # ClickHouse 26.x defaults to asynchronous inserts; the session must turn them off explicitly.
    settings = warehouse.query("SELECT getSetting('async_insert') AS a, getSetting('wait_for_async_insert') AS w")
    assert settings == [{"a": False, "w": True}]
    for version in range(1, 6):
        warehouse.insert_job_rows([item_to_row(_item(version=Decimal(version)))])
        assert warehouse.query(f"SELECT max(version) AS v FROM {JOB_RESULTS_TABLE}") == [{"v": version}]
