"""Reconcile: scan DynamoDB (moto server mode), re-send what the warehouse lacks or holds older."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.pipeline import Replicator
from replicator.reconcile import ReconcileError, ReconcileResult, reconcile
from replicator.sink import RetryPolicy
from sql.records import JOB_RESULTS_TABLE, PrRef
from sql.warehouse import Warehouse
from tests.stream_records import completed, dead_letters, job, latest
from tests.test_replicator_pipeline import FlakyWarehouse

KEYS = [f"acme/npu/d1/ci/test/{n}" for n in range(5)]


def replicator_for(target: Any, table: str, announced: list[PrRef] | None = None) -> Replicator:
    return Replicator.for_warehouse(target, {table: JOB_RESULTS_TABLE},
                                    on_change=announced.append if announced is not None else None,
                                    retry=RetryPolicy(attempts=1, sleep=lambda _: None))


async def test_reconcile_fills_gaps_and_catches_up_older_versions(
        dynamo_store: Any, dynamodb_client: Any, warehouse: Warehouse) -> None:
    table = dynamo_store.table_name
    for key in KEYS:
        await dynamo_store.upsert(job(key))
    announced: list[PrRef] = []
    pages: list[int] = []
    first = reconcile(dynamodb_client, warehouse, replicator_for(warehouse, table, announced), table,
                      page_size=2, on_page=lambda r: pages.append(r.scanned))
    assert first == ReconcileResult(scanned=5, missing=5, resent=5, pages=3)
    assert pages == [2, 4, 5]  # paginated scan
    assert announced == [PrRef("pytorch/pytorch", 4242, "a" * 40)] * 3  # deduplicated within each page
    assert all(row[1] == "in_progress" for row in latest(warehouse))

    # Two records move on in DynamoDB while the replicator is away.
    await dynamo_store.upsert(completed(job(KEYS[1])))
    await dynamo_store.upsert(completed(job(KEYS[3]), conclusion="failure"))
    second = reconcile(dynamodb_client, warehouse, replicator_for(warehouse, table), table, page_size=2)
    assert (second.scanned, second.up_to_date, second.behind, second.resent) == (5, 3, 2, 2)
    state = {row[0]: row[1:] for row in latest(warehouse)}
    assert state[KEYS[1]] == ("completed", "success", 1, 2)
    assert state[KEYS[3]] == ("completed", "failure", 1, 2)
    assert state[KEYS[0]] == ("in_progress", "", 1, 1)

    third = reconcile(dynamodb_client, warehouse, replicator_for(warehouse, table), table)
    assert (third.up_to_date, third.resent) == (5, 0)  # idempotent


async def test_tombstoned_keys_are_not_resurrected(dynamo_store: Any, dynamodb_client: Any,
                                                   warehouse: Warehouse) -> None:
    table = dynamo_store.table_name
    await dynamo_store.upsert(job(KEYS[0]))
    reconcile(dynamodb_client, warehouse, replicator_for(warehouse, table), table)
    tombstone = warehouse.query(f"SELECT * FROM {JOB_RESULTS_TABLE}")[0]
    tombstone.update(version=2, deleted=1)
    warehouse.insert(JOB_RESULTS_TABLE, [list(tombstone.values())], list(tombstone))
    result = reconcile(dynamodb_client, warehouse, replicator_for(warehouse, table), table)
    assert (result.up_to_date, result.resent) == (1, 0)
    assert latest(warehouse) == []


async def test_a_failing_warehouse_raises_and_a_rerun_completes(dynamo_store: Any, dynamodb_client: Any,
                                                               warehouse: Warehouse) -> None:
    table = dynamo_store.table_name
    for key in KEYS[:3]:
        await dynamo_store.upsert(job(key))
    down = FlakyWarehouse(warehouse, fail_all=True)
    with pytest.raises(ReconcileError):
        reconcile(dynamodb_client, warehouse, replicator_for(down, table), table)
    assert latest(warehouse) == []
    down.fail_all = False
    assert reconcile(dynamodb_client, warehouse, replicator_for(down, table), table).resent == 3


async def test_foreign_and_partial_items_are_dead_lettered_or_skipped(
        dynamo_store: Any, dynamodb_client: Any, warehouse: Warehouse) -> None:
    table = dynamo_store.table_name
    await dynamo_store.upsert(job(KEYS[0]))
    dynamodb_client.put_item(TableName=table, Item={"key": {"S": "partial"}})
    dynamodb_client.put_item(TableName=table, Item={"key": {"S": "foreign"}, "version": {"N": "3"},
                                                    "blob": {"B": b"\x00"}})
    result = reconcile(dynamodb_client, warehouse, replicator_for(warehouse, table), table)
    assert (result.scanned, result.resent, result.skipped, result.dead_lettered) == (3, 1, 1, 1)
    assert [row["reason"] for row in dead_letters(warehouse)] == ["binary attribute 'blob'"]


def test_unknown_table_is_refused(warehouse: Warehouse) -> None:
    with pytest.raises(ValueError, match="no route"):
        reconcile(None, warehouse, replicator_for(warehouse, "a-table"), "another-table")


async def test_cli_replicate_reconcile(dynamo_store: Any, warehouse: Warehouse, engine_dir: Any,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from oot_hud import cli
    from tests.clickhouse_http import ClickHouseHttpServer

    table = dynamo_store.table_name
    for key in KEYS[:2]:
        await dynamo_store.upsert(job(key))
    monkeypatch.setenv("OOT_HUD_DYNAMO_TABLE", table)
    with ClickHouseHttpServer(str(engine_dir)) as server:
        monkeypatch.setenv("OOT_HUD_CLICKHOUSE_URL", f"{server.url}/{warehouse.database}")
        assert cli.main(["replicate", "--reconcile"]) == 0
        assert f"reconciled {table} into {JOB_RESULTS_TABLE}: scanned=2" in capsys.readouterr().out
        server.down = True
        assert cli.main(["replicate", "--reconcile"]) == 1
        assert "run it again" in capsys.readouterr().err
    assert [row[0] for row in latest(warehouse)] == KEYS[:2]
