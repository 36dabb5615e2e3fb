"""Fault drill: the replicator with ClickHouse down for a minute, then back.

Real parts: results written through ``DynamoStore`` into moto's DynamoDB (server mode, streams on), the stream
read over HTTP by the real ``StreamFollower`` with ``FileCheckpoints``, the real ``Replicator`` and
``WarehouseSink`` inserting over HTTP into ClickHouse's interface (``tests/clickhouse_http.py``), which answers
503 to everything for the minute. Only time is simulated: the follower's back-off and the sink's retry delays
advance a clock instead of sleeping, so the minute passes through the real retry and back-off code at once.

During the minute the follower is restarted (a new process would be the same: a new follower on the same
checkpoint file). A poison item (its version not a number) sits in the middle of the stream. When ClickHouse
is back: the follower resumes from its checkpoint, every item reaches the warehouse at its newest version,
not one (key, version) twice, the poison is dead-lettered once, and the records after it are replicated.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ingest.dynamo_schema import stream_arn
from ingest.stores.dynamo import DynamoStore
from replicator.checkpoints import FileCheckpoints
from replicator.follower import StreamFollower
from replicator.pipeline import Replicator
from replicator.sink import RetryPolicy
from sql.records import DEAD_LETTER_TABLE, JOB_RESULTS_TABLE
from sql.warehouse import Warehouse
from tests.clickhouse_http import ClickHouseHttpServer
from tests.test_follower import doubled_rows, final_state, job

OUTAGE_S = 60.0


class SimulatedTime:
    """The follower's clock and sleep, and the sink's retry sleep: a sleep advances the clock; ClickHouse is
    down from ``down_from`` for ``OUTAGE_S``; the follower is stopped once the clock reaches ``stop_at``."""

    def __init__(self, clickhouse: ClickHouseHttpServer) -> None:
        self.now = 0.0
        self.clickhouse = clickhouse
        self.down_from: float | None = None
        self.stop_at = 0.0
        self.stop = threading.Event()
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        if self.down_from is not None:
            self.clickhouse.down = self.down_from <= self.now < self.down_from + OUTAGE_S
        if self.now >= self.stop_at:
            self.stop.set()

    def run(self, follower: StreamFollower, until: float) -> None:
        self.stop_at = until
        self.stop.clear()
        follower.stop = self.stop
        follower.run()


async def test_clickhouse_down_for_a_minute_then_back(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str, streams_client: Any,
        warehouse: Warehouse, engine_dir: Path, tmp_path: Path) -> None:
    arn = stream_arn(dynamodb_client, dynamo_table)
    assert arn
    with ClickHouseHttpServer(str(engine_dir)) as clickhouse:
        remote = Warehouse.connect(url=f"{clickhouse.url}/{warehouse.database}", data_dir=None)
        time = SimulatedTime(clickhouse)
        replicator = Replicator.for_warehouse(remote, {dynamo_table: JOB_RESULTS_TABLE}, retry=RetryPolicy(
            attempts=4, base_delay=2.0, timeout=10.0, sleep=time.sleep))  # 2 + 4 + 8 s between four tries
        checkpoints = FileCheckpoints(tmp_path / "state", dynamo_table)

        def follower() -> StreamFollower:
            def no_reconcile() -> None:
                raise AssertionError("nothing was lost from the stream: no reconcile expected")

            return StreamFollower(streams_client, arn, dynamo_table, replicator, checkpoints, no_reconcile,
                                  sleep=time.sleep, clock=time.clock)

        def position() -> dict[str, Any]:
            return {shard: point.sequence for shard, point in checkpoints.load(arn)[0].items()}

        # Before the outage: ten jobs start and reach the warehouse.
        for i in range(10):
            await dynamo_store.upsert(job(f"j{i}", "in_progress", i))
        first = follower()
        time.run(first, until=5)
        assert final_state(warehouse) == {f"j{i}": ("in_progress", 1) for i in range(10)}
        before = position()

        # The outage: half the jobs finish, five start, a poison item, then more results behind it.
        time.down_from = time.now
        clickhouse.down = True
        for i in range(5):
            await dynamo_store.upsert(job(f"j{i}", "completed", 20 + i))
        for i in range(10, 15):
            await dynamo_store.upsert(job(f"j{i}", "in_progress", 30 + i))
        poison = dynamodb_client.get_item(TableName=dynamo_table, Key={"key": {"S": "j0"}})["Item"]
        poison.update({"key": {"S": "poison-1"}, "version": {"S": "not a number"}})  # a complete item but that
        dynamodb_client.put_item(TableName=dynamo_table, Item=poison)
        for i in range(5, 10):
            await dynamo_store.upsert(job(f"j{i}", "completed", 50 + i))
        time.run(first, until=time.down_from + OUTAGE_S / 2)
        assert clickhouse.down and first.stats.failed_batches >= 2, first.stats
        assert position() == before, "nothing landed, so the checkpoint must not move"

        # The follower restarts half-way through the outage; ClickHouse comes back at the minute.
        second = follower()
        time.run(second, until=time.down_from + OUTAGE_S + 5)
        assert not clickhouse.down

        # A poison item with ClickHouse up: dead-lettered at once, the record after it replicated.
        dynamodb_client.put_item(TableName=dynamo_table, Item={
            "key": {"S": "poison-2"}, "version": {"N": "1"}, "pr_number": {"S": "not a number"}})
        await dynamo_store.upsert(job("j15", "in_progress", 70))
        time.run(second, until=time.now + 3)

    expected = {f"j{i}": ("completed", 2) for i in range(10)} | {
        f"j{i}": ("in_progress", 1) for i in range(10, 16)}
    assert final_state(warehouse) == expected
    assert doubled_rows(warehouse) == 0
    letters = warehouse.query(f"SELECT raw, reason FROM {DEAD_LETTER_TABLE} ORDER BY received_at")
    assert [("poison-1" in row["raw"], "poison-2" in row["raw"]) for row in letters] == [(True, False), (False, True)]
    assert "version" in letters[0]["reason"] and "lacks" in letters[1]["reason"], letters
    assert position() != before and second.stats.records >= 12, second.stats
    assert time.slept >= OUTAGE_S  # the minute really passed through the back-off and retry delays
