"""The Lambda handler: partial batch responses, dead letters, and its per-container setup from the environment."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from replicator import lambda_handler
from replicator.pipeline import Replicator
from replicator.sink import RetryPolicy
from sql.records import JOB_RESULTS_TABLE
from sql.warehouse import Warehouse
from tests.clickhouse_http import ClickHouseHttpServer
from tests.stream_records import TABLE, dead_letters, item, job, latest, lifecycle, stream_record
from tests.test_replicator_pipeline import FlakyWarehouse

NO_FAILURES: dict[str, list[Any]] = {"batchItemFailures": []}


def replicator_on(target: Any) -> Replicator:
    return Replicator.for_warehouse(target, {TABLE: JOB_RESULTS_TABLE},
                                    retry=RetryPolicy(attempts=2, base_delay=0, sleep=lambda _: None))


def test_a_durable_batch_reports_no_failures(warehouse: Warehouse) -> None:
    event = {"Records": [*lifecycle(job("k1"), 100), *lifecycle(job("k2"), 200)]}
    assert lambda_handler.handle(event, replicator_on(warehouse)) == NO_FAILURES
    assert [row[:2] for row in latest(warehouse)] == [("k1", "completed"), ("k2", "completed")]


def test_transient_failure_reports_the_lowest_failed_sequence_and_the_retry_lands_once(
        warehouse: Warehouse) -> None:
    # Two tables routed: the first insert lands, the second fails on every attempt.
    flaky = FlakyWarehouse(warehouse, failing={2, 3})
    routes = {TABLE: JOB_RESULTS_TABLE, "staging": JOB_RESULTS_TABLE + "_staging"}
    warehouse.command(f"CREATE TABLE {JOB_RESULTS_TABLE}_staging AS {JOB_RESULTS_TABLE}")
    replicator = Replicator.for_warehouse(flaky, routes, retry=RetryPolicy(attempts=2, sleep=lambda _: None))
    staged = stream_record("INSERT", new=item(job("s1"), 1), seq=150, table="staging")
    records = [*lifecycle(job("k1"), 100), staged, *lifecycle(job("k2"), 200)]
    response = lambda_handler.handle({"Records": records}, replicator)
    assert response == {"batchItemFailures": [{"itemIdentifier": "150"}]}
    # Lambda re-delivers from sequence 150 on; the warehouse is back.
    flaky.failing.clear()
    assert lambda_handler.handle({"Records": records[2:]}, replicator) == NO_FAILURES
    assert [row[0] for row in latest(warehouse)] == ["k1", "k2"]
    assert [row[0] for row in latest(warehouse, JOB_RESULTS_TABLE + "_staging")] == ["s1"]
    assert warehouse.query(f"SELECT count() AS n FROM {JOB_RESULTS_TABLE} FINAL")[0]["n"] == 2


def test_poison_records_are_dead_lettered_and_the_rest_lands(warehouse: Warehouse) -> None:
    bad = stream_record("INSERT", new=item(job("bad"), 1, tests_total=2**70), seq=101)
    event = {"Records": [lifecycle(job("k1"), 100)[0], bad, "not a record", lifecycle(job("k1"), 100)[1]]}
    assert lambda_handler.handle(event, replicator_on(warehouse)) == NO_FAILURES
    assert [row[:2] for row in latest(warehouse)] == [("k1", "completed")]
    assert sorted(row["reason"] for row in dead_letters(warehouse)) == [
        "record is not an object", "tests_total is out of range"]


def test_events_without_records_need_nothing(warehouse: Warehouse) -> None:
    assert lambda_handler.handle({}, replicator_on(warehouse)) == NO_FAILURES
    assert lambda_handler.handler({"Records": []}, None) == NO_FAILURES


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    lambda_handler.reset()
    monkeypatch.setenv("OOT_HUD_REPLICATOR_ROUTES", f"{TABLE}={JOB_RESULTS_TABLE}")
    monkeypatch.setenv("OOT_HUD_REPLICATOR_INSERT_ATTEMPTS", "1")
    try:
        yield monkeypatch
    finally:
        lambda_handler.reset()


def test_handler_builds_its_replicator_once_from_the_environment(
        lambda_env: pytest.MonkeyPatch, engine_dir: Path, warehouse: Warehouse) -> None:
    with ClickHouseHttpServer(str(engine_dir)) as server:
        lambda_env.setenv("OOT_HUD_CLICKHOUSE_URL", f"{server.url}/{warehouse.database}")
        first, second = lifecycle(job("k1"), 100)
        assert lambda_handler.handler({"Records": [first]}, None) == NO_FAILURES
        built = lambda_handler._replicator
        assert lambda_handler.handler({"Records": [second]}, None) == NO_FAILURES
        assert lambda_handler._replicator is built  # once per container
        server.down = True
        assert lambda_handler.handler({"Records": [second]}, None) == {
            "batchItemFailures": [{"itemIdentifier": "101"}]}
    assert [row[:2] for row in latest(warehouse)] == [("k1", "completed")]


def test_unreachable_warehouse_on_cold_start_retries_the_batch(lambda_env: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lambda_env.setenv("OOT_HUD_CLICKHOUSE_URL", f"http://127.0.0.1:{port}/oot_hud")
    event = {"Records": lifecycle(job("k1"), 100)}
    assert lambda_handler.handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "100"}]}
    assert lambda_handler._replicator is None  # nothing cached: the next invocation tries again


def test_missing_configuration_is_refused(lambda_env: pytest.MonkeyPatch) -> None:
    lambda_env.delenv("OOT_HUD_CLICKHOUSE_URL", raising=False)
    with pytest.raises(RuntimeError, match="OOT_HUD_CLICKHOUSE_URL"):
        lambda_handler.build_replicator()
    lambda_env.setenv("OOT_HUD_CLICKHOUSE_URL", "http://127.0.0.1:1/oot_hud")
    lambda_env.delenv("OOT_HUD_REPLICATOR_ROUTES")
    lambda_env.delenv("OOT_HUD_DYNAMO_TABLE", raising=False)
    with pytest.raises(RuntimeError, match="OOT_HUD_REPLICATOR_ROUTES"):
        lambda_handler.build_replicator()


def test_the_lambda_marks_changed_prs_for_the_bot_after_the_rows_land(
        lambda_env: pytest.MonkeyPatch, engine_dir: Path, warehouse: Warehouse, dynamodb_client: Any) -> None:
    from ingest.dynamo_schema import create_state_table
    from ingest.stores.dynamo_bot_state import DynamoBotState
    from sql.bot_state import Watermark

    create_state_table(dynamodb_client, f"{TABLE}-state")
    lambda_env.setenv("OOT_HUD_DYNAMO_TABLE", TABLE)
    with ClickHouseHttpServer(str(engine_dir)) as server:
        lambda_env.setenv("OOT_HUD_CLICKHOUSE_URL", f"{server.url}/{warehouse.database}")
        records = lifecycle(job("k1", pr_number=7), 100)
        assert lambda_handler.handler({"Records": records}, None) == NO_FAILURES
    [mark] = DynamoBotState(dynamodb_client, f"{TABLE}-state").pending()
    assert (mark.upstream_repo, mark.pr_number, mark.watermark) == ("pytorch/pytorch", 7, Watermark("k1", 2))
