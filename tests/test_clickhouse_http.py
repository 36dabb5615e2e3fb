"""clickhouse-connect's real HTTP client against the loopback ClickHouse HTTP server in front of chDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest

from replicator.pipeline import Replicator
from replicator.sink import RetryPolicy
from sql.records import JOB_RESULTS_TABLE, PrRef
from sql.warehouse import Warehouse
from tests.clickhouse_http import ClickHouseHttpServer
from tests.stream_records import TABLE, completed, item, job, latest, lifecycle, stream_record


@pytest.fixture
def http_server(engine_dir: Path, warehouse: Warehouse) -> Iterator[ClickHouseHttpServer]:
    with ClickHouseHttpServer(str(engine_dir)) as server:
        yield server


def test_client_handshake_query_parameters_and_insert(http_server: ClickHouseHttpServer,
                                                      warehouse: Warehouse) -> None:
    client = clickhouse_connect.get_client(interface="http", host="127.0.0.1", port=http_server.port,
                                           database=warehouse.database)
    try:
        assert client.ping()
        assert client.command("SELECT 40 + 2") == 42
        client.command("CREATE TABLE t (id UInt32, name String) ENGINE = MergeTree ORDER BY id")
        client.insert("t", [[1, "it's"], [2, "two\nlines"]], column_names=["id", "name"],
                      settings={"async_insert": 0})
        result = client.query("SELECT id, name FROM t WHERE name != {skip:String} ORDER BY id",
                              parameters={"skip": "nothing"})
        assert result.result_rows == [(1, "it's"), (2, "two\nlines")]
    finally:
        client.close()
    # The rows are in the engine itself, not in some copy: the embedded client sees them.
    assert warehouse.query("SELECT count() AS n FROM t")[0]["n"] == 2
    assert any(query.startswith("INSERT INTO") for query in http_server.requests)


def test_replicator_end_to_end_over_http(http_server: ClickHouseHttpServer, warehouse: Warehouse) -> None:
    remote = Warehouse.connect(url=f"{http_server.url}/{warehouse.database}", data_dir=None)
    try:
        assert remote.kind == "clickhouse" and remote.ping()
        announced: list[PrRef] = []
        replicator = Replicator.for_warehouse(remote, {TABLE: JOB_RESULTS_TABLE}, on_change=announced.append,
                                              retry=RetryPolicy(attempts=2, base_delay=0, sleep=lambda _: None))
        batch = [*lifecycle(job("k1"), 100), *lifecycle(job("k2", run_attempt=2), 200),
                 stream_record("REMOVE", old=item(completed(job("k2", run_attempt=2)), 2), seq=300),
                 stream_record("INSERT", new=item(job("k3"), 1), seq=400, table="unknown")]
        result = replicator.process(batch)
        assert result.ok and (result.landed, result.dead_lettered) == (2, 1)
        assert latest(remote) == latest(warehouse) == [("k1", "completed", "success", 1, 2)]
        assert remote.query("SELECT reason FROM oot_dead_letters") == [{"reason": "no route for table 'unknown'"}]
        assert announced == [PrRef("pytorch/pytorch", 4242, "a" * 40)]

        http_server.down = True  # a warehouse outage over HTTP: the batch fails, nothing is lost
        again = [stream_record("INSERT", new=item(job("k4"), 1), seq=500)]
        failed = replicator.process(again)
        assert (failed.ok, failed.first_failed_sequence) == (False, "500")
        http_server.down = False
        assert replicator.process(again).ok
        assert [row[0] for row in latest(warehouse)] == ["k1", "k4"]
    finally:
        remote.close()
