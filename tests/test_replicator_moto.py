"""DynamoDB (moto server mode, streams on) -> stream records -> replicator -> embedded warehouse."""

from __future__ import annotations

from typing import Any

import pytest

from replicator.pipeline import Replicator
from sql.records import JOB_RESULTS_TABLE, PrRef
from sql.warehouse import Warehouse
from tests.stream_records import completed, job, latest

PR = PrRef("pytorch/pytorch", 4242, "a" * 40)
FIRST = "acme/npu/d1/ci/test/1"
FAILED = "acme/npu/d1/ci/test/2"
RERUN = "acme/npu/d1/ci/test/3"
REMOVED = "acme/npu/d1/ci/other/3"


@pytest.fixture(scope="module")
def streams_client(moto_endpoint: str) -> Any:
    import boto3

    return boto3.client("dynamodbstreams", endpoint_url=moto_endpoint, region_name="us-east-1")


def read_stream(dynamodb: Any, streams: Any, table: str) -> list[dict[str, Any]]:
    """Every record of every shard of the table's stream, from the trim horizon, in shard order."""
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(page["Records"])
            if not page["Records"]:
                break
            iterator = page.get("NextShardIterator")
    return records


async def write_history(store: Any, dynamodb: Any) -> None:
    """in_progress then completed; a failed attempt and its re-run (its own record); a removed job."""
    await store.upsert(job(FIRST))
    await store.upsert(completed(job(FIRST)))
    await store.upsert(job(FIRST))  # a late in_progress after completed: refused, nothing moves back
    await store.upsert(job(FAILED, check_run_id="2"))
    await store.upsert(completed(job(FAILED, check_run_id="2"), conclusion="failure"))
    await store.upsert(job(RERUN, check_run_id="3", run_attempt=2))
    await store.upsert(completed(job(RERUN, check_run_id="3", run_attempt=2)))
    await store.upsert(job(REMOVED, job_name="other"))
    dynamodb.delete_item(TableName=store.table_name, Key={"key": {"S": REMOVED}})


async def test_stream_to_warehouse_shows_exactly_the_latest_state(
        dynamo_store: Any, dynamodb_client: Any, streams_client: Any, warehouse: Warehouse) -> None:
    await write_history(dynamo_store, dynamodb_client)
    records = read_stream(dynamodb_client, streams_client, dynamo_store.table_name)
    assert {r["eventName"] for r in records} == {"INSERT", "MODIFY", "REMOVE"}
    announced: list[PrRef] = []
    replicator = Replicator.for_warehouse(warehouse, {dynamo_store.table_name: JOB_RESULTS_TABLE},
                                          on_change=announced.append)
    result = replicator.process(records, source_table=dynamo_store.table_name)
    assert result.ok and result.dead_lettered == 0
    assert announced == [PR]
    expected = [(FIRST, "completed", "success", 1, 2), (FAILED, "completed", "failure", 1, 2),
                (RERUN, "completed", "success", 2, 2)]
    assert latest(warehouse) == expected  # FINAL and argMax agree (checked inside latest)

    # At least once: the whole stream again, then every record alone in reverse order.
    assert replicator.process(records, source_table=dynamo_store.table_name).ok
    for record in reversed(records):
        assert replicator.process([record], source_table=dynamo_store.table_name).ok
    assert latest(warehouse) == expected
    rows = warehouse.query("SELECT version, deleted FROM oot_job_results WHERE key = {k:String} ORDER BY version",
                           {"k": REMOVED})
    assert rows[-1] == {"version": 2, "deleted": 1}  # the tombstone, one above the removed item's version


async def test_a_later_stream_continues_from_the_warehouse_state(
        dynamo_store: Any, dynamodb_client: Any, streams_client: Any, warehouse: Warehouse) -> None:
    table = dynamo_store.table_name
    replicator = Replicator.for_warehouse(warehouse, {table: JOB_RESULTS_TABLE})
    await dynamo_store.upsert(job(FIRST))
    first_read = read_stream(dynamodb_client, streams_client, table)
    assert replicator.process(first_read, source_table=table).ok
    assert latest(warehouse) == [(FIRST, "in_progress", "", 1, 1)]
    await dynamo_store.upsert(completed(job(FIRST)))
    second_read = read_stream(dynamodb_client, streams_client, table)
    assert replicator.process(second_read[len(first_read):], source_table=table).ok
    assert latest(warehouse) == [(FIRST, "completed", "success", 1, 2)]
