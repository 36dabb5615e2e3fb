"""Fault drill: DynamoDB throttles or fails UpdateItem mid-flight. A real loopback proxy in front of moto's
server answers ``ProvisionedThroughputExceededException`` (400) or ``InternalServerError`` (500) instead of
the table; the served app (DynamoDB store, botocore's own retry policy) must give the relay a retryable 5xx
when the retries run out, and the relay's retry must then be applied exactly once. Each drill ends with
"nothing lost, nothing doubled": the table holds one item per key, with the newest state and its version.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.stores.dynamo import MAX_ATTEMPTS, DynamoStore, client_config
from oot_hud.app import create_app
from oot_hud.services import Services
from oot_hud.settings import Settings
from sql.warehouse import Warehouse
from tests.conftest import relay_payload
from tests.fault_proxy import Fault, FaultProxy, fault_proxy
from tests.servers import serve

TOKEN = "drill-relay-token-0123456789abcdef"
PATH = "/api/oot/results"
THROTTLED = Fault(400, json.dumps({
    "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    "message": "The level of configured provisioned throughput for the table was exceeded."}).encode(),
    {"Content-Type": "application/x-amz-json-1.0"})
# botocore's ``retries={"max_attempts": N}`` counts the retries after the first attempt: N + 1 calls in all.
ATTEMPTS = MAX_ATTEMPTS + 1
INTERNAL = Fault(500, json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError",
                                  "message": "Internal server error"}).encode(),
                 {"Content-Type": "application/x-amz-json-1.0"})


def _update_item(headers: Mapping[str, str]) -> bool:
    return any(key.lower() == "x-amz-target" and value.endswith(".UpdateItem") for key, value in headers.items())


def fail_next(count: int, fault: Fault) -> Any:
    """A plan: the next ``count`` UpdateItem calls get ``fault``; everything else goes through."""
    left = itertools.count(count, -1)

    def plan(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Fault | None:
        return fault if _update_item(headers) and next(left) > 0 else None

    return plan


@pytest.fixture
def proxied(moto_endpoint: str, dynamodb_client: Any, dynamo_table: str, warehouse: Warehouse,
            tmp_path: Path) -> Iterator[tuple[FaultProxy, str]]:
    """(the proxy in front of moto, the base URL of the app whose DynamoDB store talks through it)."""
    import boto3

    with fault_proxy(moto_endpoint) as proxy:
        client = boto3.client("dynamodb", endpoint_url=proxy.url, region_name="us-east-1", config=client_config())
        store = DynamoStore(client, dynamo_table)
        config = Settings(data_dir=tmp_path / "unused", relay_tokens=[TOKEN], dynamo_table=dynamo_table)
        services = Services(settings=config, warehouse=warehouse, store=store, relay_tokens=[TOKEN])
        with serve(create_app(config, services=services)) as url:
            yield proxy, url


def _items(client: Any, table: str) -> dict[str, dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    plain = TypeDeserializer().deserialize
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["key"]["S"]: {name: plain(value) for name, value in item.items()} for item in items}


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + PATH, json=body, headers={"X-OOT-Relay-Token": TOKEN}, timeout=60)


@pytest.mark.parametrize("fault", [THROTTLED, INTERNAL], ids=["throttled", "internal-error"])
def test_retries_exhausted_is_a_retryable_5xx_and_the_relay_retry_applies_once(
        proxied: tuple[FaultProxy, str], dynamodb_client: Any, dynamo_table: str, fault: Fault) -> None:
    proxy, url = proxied
    body = relay_payload("02_pr_completed_success")
    proxy.plan = fail_next(ATTEMPTS, fault)  # every attempt botocore makes for this request fails
    failed = _post(url, body)
    assert failed.status_code == 500 and failed.json() == {"ok": False, "error": "the result store failed; try again"}
    assert "Throughput" not in failed.text and "Internal" not in failed.text  # no dependency detail leaks
    assert _items(dynamodb_client, dynamo_table) == {}, "a refused write left something behind"

    retried = _post(url, body)  # the relay's retry, after DynamoDB recovered
    assert retried.status_code == 200 and retried.json()["status"] == "completed"
    items = _items(dynamodb_client, dynamo_table)
    key = retried.json()["dynamoKey"]
    assert list(items) == [key]  # nothing lost, nothing doubled
    assert (items[key]["version"], items[key]["status"]) == (1, "completed")
    assert proxy.injected == ATTEMPTS


def test_a_transient_fault_is_absorbed_by_the_store_retry(proxied: tuple[FaultProxy, str], dynamodb_client: Any,
                                                         dynamo_table: str) -> None:
    """A fault botocore's own retry absorbs: the relay sees a 200 at once, and the write counts once."""
    proxy, url = proxied
    proxy.plan = fail_next(1, THROTTLED)
    response = _post(url, relay_payload("01_pr_in_progress"))
    assert response.status_code == 200 and response.json()["status"] == "in_progress"
    [item] = _items(dynamodb_client, dynamo_table).values()
    assert (item["version"], item["status"]) == (1, "in_progress")


def test_a_burst_under_intermittent_faults_loses_and_doubles_nothing(
        proxied: tuple[FaultProxy, str], dynamodb_client: Any, dynamo_table: str) -> None:
    """12 jobs, in_progress then completed, with every third UpdateItem throttled or failed: the relay
    retries each 5xx until a 200. Every job ends completed at version 2 (one in_progress + one completed
    write applied), whatever the store's own retries absorbed."""
    proxy, url = proxied
    counter = itertools.count()

    def every_third(method: str, path: str, headers: Mapping[str, str], body: bytes) -> Fault | None:
        if not _update_item(headers):
            return None
        n = next(counter)
        return (THROTTLED if n % 2 else INTERNAL) if n % 3 == 0 else None

    proxy.plan = every_third
    keys = set()
    for status in ("01_pr_in_progress", "02_pr_completed_success"):
        for i in range(12):
            body = relay_payload(status)
            body["untrusted"]["callback_payload"]["workflow"]["check_run_id"] = f"drill-{i}"
            for _ in range(10):  # the relay's retries
                response = _post(url, body)
                if response.status_code == 200:
                    keys.add(response.json()["dynamoKey"])
                    break
                assert response.status_code == 500
            else:
                pytest.fail("the relay's retries never got through")
    items = _items(dynamodb_client, dynamo_table)
    assert set(items) == keys and len(keys) == 12
    assert {(item["status"], item["conclusion"], item["version"]) for item in items.values()} == {
        ("completed", "success", 2)}
    assert proxy.injected > 0


def test_a_lost_answer_after_the_write_keeps_one_item_with_the_newest_state(
        proxied: tuple[FaultProxy, str], dynamodb_client: Any, dynamo_table: str) -> None:
    """DynamoDB applied the UpdateItem but its answer was lost (a 500 after forwarding): botocore retries and
    the write is applied a second time. The content is the same (a write sets the callback's fields, so
    applying it twice is idempotent): one item, the newest state; only ``version`` counts both applications,
    and the warehouse keeps the highest version of that same state."""
    proxy, url = proxied
    lost = dataclasses.replace(INTERNAL, after_forwarding=True)
    proxy.plan = fail_next(1, lost)
    response = _post(url, relay_payload("02_pr_completed_success"))
    assert response.status_code == 200
    [item] = _items(dynamodb_client, dynamo_table).values()
    assert (item["status"], item["conclusion"], item["version"]) == ("completed", "success", 2)
    late = _post(url, relay_payload("01_pr_in_progress"))  # and it is still never moved backwards
    assert late.json()["status"] == "stale"
    [after] = _items(dynamodb_client, dynamo_table).values()
    assert after == item
