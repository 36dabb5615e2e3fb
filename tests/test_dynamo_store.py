"""The DynamoDB store against moto's server mode over loopback HTTP: partial writes, first-only fields,
versions, the no-regression condition, concurrency, table creation and its CLI command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer

from ingest.dynamo_schema import STREAM_VIEW, create_table
from ingest.stores.base import Outcome, StoreError
from ingest.stores.dynamo import DynamoStore, build_update
from oot_hud.cli import main as cli_main
from sql.records import JobRecord, format_time

T0 = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
_deserializer = TypeDeserializer()


def record(status: str = "in_progress", *, key: str = "acme/torch-acme/d-1/acme-ci/test-linux/581",
           at: datetime = T0, **fields: Any) -> JobRecord:
    base: dict[str, Any] = dict(
        key=key, downstream_repo="acme-accel/torch-acme", event_type="pull_request", delivery_id="d-1",
        upstream_repo="pytorch/pytorch", pr_number=170001, head_sha="3f2a9c1d", workflow_name="acme-ci",
        job_name="test-linux", check_run_id="581", run_attempt=1, status=status, received_at=at,
        downstream_level="L4")
    base.update(fields)
    return JobRecord(**base)


def in_progress(**fields: Any) -> JobRecord:
    return record("in_progress", started_at=T0 - timedelta(minutes=5), queue_time_s=12.5, **fields)


def completed(**fields: Any) -> JobRecord:
    fields.setdefault("at", T0 + timedelta(minutes=40))
    return record("completed", conclusion="success", completed_at=T0 + timedelta(minutes=40),
                  execution_time_s=2499.6, tests_passed=1203, tests_failed=0, tests_skipped=17,
                  tests_total=1220, **fields)


def stored(client: Any, table: str, key: str = record().key) -> dict[str, Any]:
    item = client.get_item(TableName=table, Key={"key": {"S": key}}, ConsistentRead=True).get("Item")
    assert item is not None, f"no item {key}"
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


# ---- the expression itself ----

def test_update_aliases_every_attribute_name_and_uses_decimals() -> None:
    arguments = build_update(in_progress())
    expression = arguments["UpdateExpression"] + " " + arguments["ConditionExpression"]
    names = arguments["ExpressionAttributeNames"]
    # No raw attribute name appears in the expressions: "status" is reserved, "key" is the hash key.
    for attribute in ("status", "started_at", "queue_time_s", "received_at", "version"):
        assert attribute in names.values()
        assert f" {attribute} " not in f" {expression} "
    assert "key" not in names.values()  # the hash key is the Key, never SET
    assert "#version :one" in arguments["UpdateExpression"] and arguments["UpdateExpression"].count("ADD") == 1
    floats = [v for v in arguments["ExpressionAttributeValues"].values() if isinstance(v, float)]
    assert floats == []
    assert Decimal("12.5") in arguments["ExpressionAttributeValues"].values()
    for name in ("first_received_at", "started_at", "queue_time_s"):
        alias = next(a for a, n in names.items() if n == name)
        assert f"{alias} = if_not_exists({alias}, " in arguments["UpdateExpression"]
    assert arguments["ReturnValues"] == "ALL_NEW"


def test_a_completed_write_carries_no_condition_and_absent_fields_are_not_named() -> None:
    arguments = build_update(completed())
    assert "ConditionExpression" not in arguments
    names = set(arguments["ExpressionAttributeNames"].values())
    assert {"started_at", "queue_time_s", "ref", "run_id"}.isdisjoint(names)
    assert {"conclusion", "completed_at", "tests_total", "first_received_at"} <= names


# ---- against moto ----

async def test_completed_callback_keeps_what_only_in_progress_carried(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str) -> None:
    first = await dynamo_store.upsert(in_progress())
    assert (first.outcome, first.status, first.version) == (Outcome.STORED, "in_progress", 1)
    second = await dynamo_store.upsert(completed())
    assert (second.outcome, second.status, second.version) == (Outcome.STORED, "completed", 2)
    item = stored(dynamodb_client, dynamo_table)
    assert item["started_at"] == "2026-11-20T09:55:00.000Z"  # not erased by the completed callback
    assert item["queue_time_s"] == Decimal("12.5")
    assert item["conclusion"] == "success" and item["tests_total"] == 1220
    assert item["execution_time_s"] == Decimal("2499.6")
    assert item["first_received_at"] == "2026-11-20T10:00:00.000Z"
    assert item["received_at"] == "2026-11-20T10:40:00.000Z"
    assert "ref" not in item and "run_id" not in item  # never carried, never written (not even as null)


async def test_relay_fixtures_through_extraction(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str) -> None:
    from ingest.extract import extract
    from tests.conftest import relay_payload

    started = extract(relay_payload("01_pr_in_progress"), received_at=T0)
    done = extract(relay_payload("02_pr_completed_success"), received_at=T0 + timedelta(minutes=45))
    assert started.key == done.key and done.started_at is None and done.queue_time_s is None
    assert (await dynamo_store.upsert(done)).status == "completed"  # the completed callback overtook
    late = await dynamo_store.upsert(started)
    assert (late.outcome, late.status, late.version) == (Outcome.STALE, "completed", 1)
    item = stored(dynamodb_client, dynamo_table, done.key)
    assert item["execution_time_s"] == Decimal("2499.6") and item["tests_total"] == 1220
    assert "started_at" not in item  # the refused in_progress wrote nothing
    assert item["first_received_at"] == "2026-11-20T10:45:00.000Z"
    # In order (the re-run's attempt 2): the completed callback keeps what only in_progress carried.
    rerun = extract(relay_payload("05_pr_rerun_attempt2_in_progress"), received_at=T0)
    rerun_done = extract(relay_payload("06_pr_rerun_attempt2_success"), received_at=T0 + timedelta(hours=1))
    assert rerun.key == rerun_done.key != done.key
    assert [(await dynamo_store.upsert(r)).version for r in (rerun, rerun_done)] == [1, 2]
    item = stored(dynamodb_client, dynamo_table, rerun.key)
    assert item["status"] == "completed" and item["run_attempt"] == 2
    assert item["started_at"] == format_time(rerun.started_at)
    assert item["queue_time_s"] == Decimal(str(rerun.queue_time_s))


async def test_first_only_fields_keep_their_first_value(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str) -> None:
    await dynamo_store.upsert(in_progress())
    later = record("in_progress", at=T0 + timedelta(minutes=1), started_at=T0, queue_time_s=99.0,
                   workflow_url="https://example.invalid/run/2")
    result = await dynamo_store.upsert(later)
    assert (result.outcome, result.version) == (Outcome.STORED, 2)
    item = stored(dynamodb_client, dynamo_table)
    assert item["started_at"] == "2026-11-20T09:55:00.000Z"
    assert item["queue_time_s"] == Decimal("12.5")
    assert item["first_received_at"] == "2026-11-20T10:00:00.000Z"
    assert item["received_at"] == "2026-11-20T10:01:00.000Z"  # ordinary fields take the newest value
    assert item["workflow_url"] == "https://example.invalid/run/2"


async def test_every_accepted_write_bumps_the_version(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str) -> None:
    versions = [(await dynamo_store.upsert(in_progress())).version for _ in range(3)]
    versions += [(await dynamo_store.upsert(completed())).version for _ in range(2)]  # same callback twice
    assert versions == [1, 2, 3, 4, 5]
    assert stored(dynamodb_client, dynamo_table)["version"] == 5


async def test_in_progress_after_completed_is_stale_and_changes_nothing(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str) -> None:
    await dynamo_store.upsert(in_progress())
    await dynamo_store.upsert(completed())
    before = stored(dynamodb_client, dynamo_table)
    late = record("in_progress", at=T0 + timedelta(hours=1), started_at=T0, workflow_url="https://x.invalid")
    result = await dynamo_store.upsert(late)
    assert (result.outcome, result.status, result.version) == (Outcome.STALE, "completed", 2)
    assert stored(dynamodb_client, dynamo_table) == before


async def test_completed_before_in_progress(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str) -> None:
    first = await dynamo_store.upsert(completed())
    assert (first.outcome, first.status, first.version) == (Outcome.STORED, "completed", 1)
    late = await dynamo_store.upsert(in_progress())
    assert (late.outcome, late.status, late.version) == (Outcome.STALE, "completed", 1)
    item = stored(dynamodb_client, dynamo_table)
    assert item["status"] == "completed" and item["version"] == 1
    assert "started_at" not in item  # the refused write wrote nothing at all


async def test_fifty_concurrent_upserts_of_different_keys(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str) -> None:
    keys = [f"acme/torch-acme/d-{i}/acme-ci/test-linux/{i}" for i in range(50)]
    results = await asyncio.gather(*(dynamo_store.upsert(
        record("completed" if i % 2 else "in_progress", key=key, conclusion="success" if i % 2 else None))
        for i, key in enumerate(keys)))
    assert all(r.outcome == Outcome.STORED and r.version == 1 for r in results)
    assert [r.key for r in results] == keys
    for i, key in enumerate(keys):
        item = stored(dynamodb_client, dynamo_table, key)
        assert item["status"] == ("completed" if i % 2 else "in_progress") and item["version"] == 1


async def test_fifty_concurrent_upserts_of_one_key(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str) -> None:
    # asyncio.to_thread runs each UpdateItem on its own worker thread: real concurrent HTTP requests.
    writes = [completed() if i % 10 == 7 else in_progress() for i in range(50)]
    results = await asyncio.gather(*(dynamo_store.upsert(w) for w in writes))
    accepted = [r for r in results if r.outcome == Outcome.STORED]
    stale = [r for r in results if r.outcome == Outcome.STALE]
    item = stored(dynamodb_client, dynamo_table)
    assert item["status"] == "completed"
    assert item["version"] == len(accepted)  # each accepted write counted exactly once
    assert sorted(r.version for r in accepted) == list(range(1, len(accepted) + 1))  # each returned once
    assert all(r.status == "completed" for r in stale)
    assert len(accepted) + len(stale) == 50
    # Every completed write is accepted; an in_progress write is refused only once a completed one landed.
    assert sum(1 for w in writes if w.status == "completed") <= len(accepted)
    assert item["started_at"] == "2026-11-20T09:55:00.000Z" or "started_at" not in item


async def test_other_failures_raise_store_error_without_details(dynamodb_client: Any) -> None:
    store = DynamoStore(dynamodb_client, f"missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StoreError) as caught:
        await store.upsert(in_progress())
    assert "ResourceNotFoundException" in str(caught.value)
    assert "testing" not in str(caught.value)  # the (dummy) credentials never reach a message
    assert await store.ping() is False


async def test_from_environment_follows_boto3_variables(dynamo_table: str, moto_endpoint: str) -> None:
    assert os.environ["AWS_ENDPOINT_URL_DYNAMODB"] == moto_endpoint
    store = DynamoStore.from_environment(dynamo_table)
    assert store.name == "dynamodb"
    await store.start()
    assert await store.ping() is True
    assert (await store.upsert(in_progress())).version == 1
    await store.close()


# ---- table creation ----

def test_create_table_is_idempotent_with_streams_on(dynamodb_client: Any) -> None:
    name = f"oot-created-{uuid.uuid4().hex[:8]}"
    assert create_table(dynamodb_client, name) is True
    assert create_table(dynamodb_client, name) is False
    table = dynamodb_client.describe_table(TableName=name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "key", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": STREAM_VIEW}
    assert table["LatestStreamArn"]


def test_create_table_turns_on_a_missing_stream(dynamodb_client: Any) -> None:
    name = f"oot-nostream-{uuid.uuid4().hex[:8]}"
    dynamodb_client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                                 AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
                                 KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}])
    assert create_table(dynamodb_client, name) is False
    spec = dynamodb_client.describe_table(TableName=name)["Table"]["StreamSpecification"]
    assert spec == {"StreamEnabled": True, "StreamViewType": STREAM_VIEW}


def test_cli_create_table(moto_endpoint: str, dynamodb_client: Any, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"oot-cli-{uuid.uuid4().hex[:8]}"
    assert cli_main(["dynamo", "create-table", "--table", name]) == 0
    out = capsys.readouterr().out
    assert f"table {name} created" in out and f"state table {name}-state created" in out
    assert cli_main(["dynamo", "create-table", "--table", name]) == 0
    assert "already exists" in capsys.readouterr().out
    # The default table comes from the settings.
    other = f"oot-cli-env-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("OOT_HUD_DYNAMO_TABLE", other)
    assert cli_main(["dynamo", "create-table"]) == 0
    described = dynamodb_client.describe_table(TableName=other)["Table"]
    assert described["StreamSpecification"]["StreamViewType"] == STREAM_VIEW
    monkeypatch.delenv("OOT_HUD_DYNAMO_TABLE")
    assert cli_main(["dynamo", "create-table"]) == 2


def test_cli_create_table_as_a_process(moto_endpoint: str, dynamodb_client: Any) -> None:
    name = f"oot-proc-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "OOT_HUD_DYNAMO_TABLE": name}
    done = subprocess.run([sys.executable, "-m", "oot_hud", "dynamo", "create-table"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert f"table {name} created" in done.stdout
    assert dynamodb_client.describe_table(TableName=name)["Table"]["StreamSpecification"]["StreamEnabled"]
