"""``POST /api/oot/results`` over real HTTP (uvicorn on loopback), on both stores: every Responses row,
idempotency and order, concurrency, and bad input that must be a 4xx and leave stored data untouched."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import selectors
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ingest.body import BodyTooLarge, read_capped
from ingest.routes import STORE_FAILED, IngestRoute
from ingest.stores.base import ResultStore
from ingest.stores.embedded import EmbeddedStore
from oot_hud.app import create_app
from oot_hud.services import Services
from oot_hud.settings import Settings
from sql.records import JOB_RESULTS_TABLE, format_time
from sql.warehouse import Warehouse
from tests.conftest import RELAY_FIXTURES, relay_payload
from tests.servers import serve

TOKEN = "relay-token-current-0123456789"
OLD_TOKEN = "relay-token-previous-9876543210"
PATH = "/api/oot/results"
MIB2 = 2 * 1024 * 1024
KEY_01 = "acme-accel/torch-acme/6c0e0a52-c5a1-11f0-8f21-1a2b3c4d5e6f/acme-ci/test-linux/58410000001"



@dataclass
class Harness:
    """A served app on one store, plus a way to read what that store holds."""

    kind: str
    base_url: str
    store: ResultStore
    read: Callable[[], dict[str, dict[str, Any]]]

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def state(self, key: str = KEY_01) -> dict[str, Any] | None:
        return self.read().get(key)


def _normalise(item: dict[str, Any]) -> dict[str, Any]:
    """The facts both stores hold, in one comparable form."""
    def number(value: Any) -> Any:
        return None if value is None else float(value)

    started = item.get("started_at")
    return {
        "status": item.get("status"), "version": int(item["version"]),
        "conclusion": item.get("conclusion") or None,
        "started_at": format_time(started) if hasattr(started, "astimezone") else started,
        "queue_time_s": number(item.get("queue_time_s")), "tests_total": number(item.get("tests_total")),
        "execution_time_s": number(item.get("execution_time_s")), "event_type": item.get("event_type"),
        "pr_number": int(item.get("pr_number") or 0), "head_sha": item.get("head_sha"),
        "received_at": format_time(item["received_at"]) if hasattr(item["received_at"], "astimezone")
        else item["received_at"],
    }


def _warehouse_reader(warehouse: Warehouse) -> Callable[[], dict[str, dict[str, Any]]]:
    def read() -> dict[str, dict[str, Any]]:
        rows = warehouse.query(f"SELECT * FROM {JOB_RESULTS_TABLE} FINAL")
        return {row["key"]: _normalise(row) for row in rows}
    return read


def _dynamo_reader(client: Any, table: str) -> Callable[[], dict[str, dict[str, Any]]]:
    from boto3.dynamodb.types import TypeDeserializer

    deserialise = TypeDeserializer().deserialize

    def read() -> dict[str, dict[str, Any]]:
        items = client.scan(TableName=table, ConsistentRead=True)["Items"]
        plain = [{name: deserialise(value) for name, value in item.items()} for item in items]
        return {item["key"]: _normalise(item) for item in plain}
    return read


@pytest.fixture(params=["embedded", "dynamodb"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def harness_factory(store_kind: str, request: pytest.FixtureRequest, warehouse: Warehouse,
                    tmp_path: Path) -> Iterator[Callable[..., contextlib.AbstractContextManager[Harness]]]:
    """Build a served app on the parametrised store; keyword arguments become settings."""
    store: ResultStore
    if store_kind == "dynamodb":
        store = request.getfixturevalue("dynamo_store")
        read = _dynamo_reader(request.getfixturevalue("dynamodb_client"), store.table_name)  # type: ignore[attr-defined]
    else:
        store = EmbeddedStore(warehouse, commit_window_ms=2)
        store.load_known_keys()  # what start() does, as the served app would
        read = _warehouse_reader(warehouse)

    @contextlib.contextmanager
    def build(**settings: Any) -> Iterator[Harness]:
        config = Settings(data_dir=tmp_path / "unused", relay_tokens=[TOKEN, OLD_TOKEN], **settings)
        services = Services(settings=config, warehouse=warehouse, store=store, relay_tokens=[TOKEN, OLD_TOKEN])
        with serve(create_app(config, services=services)) as url:
            yield Harness(store_kind, url, store, read)

    yield build


@pytest.fixture
async def harness(harness_factory: Callable[..., contextlib.AbstractContextManager[Harness]]
                  ) -> AsyncIterator[Harness]:
    with harness_factory() as built:
        yield built


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(base_url=harness.base_url, timeout=30, limits=limits) as http:
        yield http


def fixture_bytes(name: str) -> bytes:
    return (RELAY_FIXTURES / f"{name}.json").read_bytes()


async def post(client: httpx.AsyncClient, body: Any, *, token: str | None = TOKEN,
               header: str = "X-OOT-Relay-Token", **kwargs: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    if token is not None:
        headers[header] = token
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(PATH, content=content, headers=headers, **kwargs)


# ---- 200 stored / 200 stale ----

async def test_stored(client: httpx.AsyncClient, harness: Harness) -> None:
    response = await post(client, fixture_bytes("01_pr_in_progress"))
    assert response.status_code == 200
    assert response.json() == {"ok": True, "status": "in_progress", "dynamoKey": KEY_01}
    state = harness.state()
    assert state is not None
    assert (state["status"], state["version"], state["started_at"], state["queue_time_s"]) == (
        "in_progress", 1, "2026-11-20T10:03:11.000Z", 42.317)


async def test_completed_keeps_in_progress_facts(client: httpx.AsyncClient, harness: Harness) -> None:
    await post(client, fixture_bytes("01_pr_in_progress"))
    response = await post(client, fixture_bytes("02_pr_completed_success"))
    assert response.json() == {"ok": True, "status": "completed", "dynamoKey": KEY_01}
    state = harness.state()
    assert state is not None
    assert (state["status"], state["conclusion"], state["version"], state["tests_total"]) == (
        "completed", "success", 2, 1220.0)
    # The completed callback's nulls did not erase what the in_progress one recorded.
    assert (state["started_at"], state["queue_time_s"]) == ("2026-11-20T10:03:11.000Z", 42.317)


async def test_stale_in_progress_after_completed(client: httpx.AsyncClient, harness: Harness) -> None:
    await post(client, fixture_bytes("01_pr_in_progress"))
    await post(client, fixture_bytes("02_pr_completed_success"))
    before = harness.read()
    response = await post(client, fixture_bytes("01_pr_in_progress"))
    assert response.status_code == 200
    assert response.json() == {"ok": True, "status": "stale", "dynamoKey": KEY_01}
    assert harness.read() == before  # nothing changed, not even the version or receive time


async def test_completed_before_in_progress(client: httpx.AsyncClient, harness: Harness) -> None:
    first = await post(client, fixture_bytes("02_pr_completed_success"))
    late = await post(client, fixture_bytes("01_pr_in_progress"))
    assert (first.json()["status"], late.json()["status"]) == ("completed", "stale")
    state = harness.state()
    assert state is not None
    assert (state["status"], state["conclusion"], state["version"]) == ("completed", "success", 1)


async def test_same_callback_twice(client: httpx.AsyncClient, harness: Harness) -> None:
    for _ in range(2):
        response = await post(client, fixture_bytes("02_pr_completed_success"))
        assert response.json()["status"] == "completed"
    state = harness.state()
    assert state is not None
    assert (state["status"], state["conclusion"], state["version"], state["tests_total"]) == (
        "completed", "success", 2, 1220.0)
    assert len(harness.read()) == 1


async def test_every_good_fixture_is_stored(client: httpx.AsyncClient, harness: Harness) -> None:
    for name in sorted(p.stem for p in RELAY_FIXTURES.glob("[0-9]*.json")):
        response = await post(client, fixture_bytes(name))
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        expected = relay_payload(name)["untrusted"]["callback_payload"]["workflow"]["status"]
        if name == "12_numeric_ids_variant":
            expected = "completed"  # the same job as fixture 02, posted again
        assert (body["ok"], body["status"]) == (True, expected), name
        assert harness.state(body["dynamoKey"]) is not None, name
    assert len(harness.read()) == 9  # 13 callbacks: 4 complete an earlier one (02, 04, 06, 12)


async def test_fifty_concurrent_different_jobs(client: httpx.AsyncClient, harness: Harness) -> None:
    bodies = []
    for i in range(50):
        body = relay_payload("04_pr_other_job_failure")
        body["untrusted"]["callback_payload"]["workflow"]["check_run_id"] = f"9{i:04d}"
        bodies.append(body)
    responses = await asyncio.gather(*(post(client, body) for body in bodies))
    assert [r.status_code for r in responses] == [200] * 50
    stored = harness.read()
    assert len(stored) == 50
    assert {r.json()["dynamoKey"] for r in responses} == set(stored)
    assert all((s["status"], s["conclusion"], s["version"]) == ("completed", "failure", 1) for s in stored.values())


async def test_fifty_concurrent_posts_of_the_same_job(client: httpx.AsyncClient, harness: Harness) -> None:
    names = ["01_pr_in_progress", "02_pr_completed_success"] * 25
    responses = await asyncio.gather(*(post(client, fixture_bytes(name)) for name in names))
    assert [r.status_code for r in responses] == [200] * 50
    statuses = [r.json()["status"] for r in responses]
    accepted = sum(status != "stale" for status in statuses)
    assert statuses.count("completed") == 25  # a completed callback is never refused
    state = harness.state()
    assert state is not None
    assert (state["status"], state["conclusion"], state["tests_total"]) == ("completed", "success", 1220.0)
    assert state["version"] == accepted  # one version per accepted write, none lost, none invented
    assert len(harness.read()) == 1


# ---- 405 ----

async def test_other_methods(client: httpx.AsyncClient, harness: Harness) -> None:
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS"):
        response = await client.request(method, PATH, headers={"X-OOT-Relay-Token": TOKEN},
                                        content=fixture_bytes("01_pr_in_progress"))
        assert response.status_code == 405, method
        assert response.json() == {"ok": False, "error": "only POST is allowed on this path"}
        assert response.headers["allow"] == "POST"
    assert harness.read() == {}


# ---- 401 ----

async def test_accepted_headers_and_rotation(client: httpx.AsyncClient, harness: Harness) -> None:
    legacy = await post(client, fixture_bytes("01_pr_in_progress"), header="x-hud-internal-bot")
    previous = await post(client, fixture_bytes("03_pr_other_job_in_progress"), token=OLD_TOKEN)
    assert (legacy.status_code, previous.status_code) == (200, 200)


async def test_unauthorised(client: httpx.AsyncClient, harness: Harness,
                            caplog: pytest.LogCaptureFixture) -> None:
    ways: dict[str, dict[str, Any]] = {
        "missing": {"token": None}, "wrong": {"token": "nope"}, "prefix": {"token": TOKEN[:-1]},
        "longer": {"token": TOKEN + "x"}, "empty": {"token": ""},
        "other header": {"header": "X-Relay-Token"},
        "bearer": {"token": None, "headers": {"Authorization": f"Bearer {TOKEN}"}},
        "query": {"token": None, "params": {"token": TOKEN, "X-OOT-Relay-Token": TOKEN}},
        "cookie": {"token": None, "headers": {"Cookie": f"X-OOT-Relay-Token={TOKEN}; x-hud-internal-bot={TOKEN}"}},
    }
    with caplog.at_level(logging.INFO):
        for way, kwargs in ways.items():
            response = await post(client, fixture_bytes("01_pr_in_progress"), **kwargs)
            assert response.status_code == 401, way
            assert response.json() == {"ok": False, "error": "missing or wrong relay token (X-OOT-Relay-Token)"}
    assert harness.read() == {}
    assert TOKEN not in server_log(caplog)


def server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the server logged (the test's own HTTP client logs its request URLs)."""
    return "\n".join(record.getMessage() for record in caplog.records if not record.name.startswith("httpx"))


async def test_unauthorised_body_is_not_read(harness: Harness) -> None:
    """A client without a token announcing 100 MB is answered 401 at once, without sending the body."""
    status, _, body = await asyncio.to_thread(raw_request, harness.port, content_length=100 * 1024 * 1024,
                                              token=None)
    assert (status, body["ok"]) == (401, False)


# ---- 413 ----

def padded(size: int) -> bytes:
    body = fixture_bytes("01_pr_in_progress").rstrip()
    return body + b" " * (size - len(body))  # trailing whitespace is valid JSON


async def test_exactly_two_mib_is_accepted(client: httpx.AsyncClient, harness: Harness) -> None:
    body = padded(MIB2)
    assert len(body) == MIB2
    response = await post(client, body)
    assert response.status_code == 200, response.text
    assert harness.state() is not None


async def test_one_byte_more_is_413(harness: Harness) -> None:
    status, _, body = await asyncio.to_thread(raw_request, harness.port, content_length=MIB2 + 1,
                                              payload=padded(MIB2 + 1))
    assert status == 413
    assert body == {"ok": False, "error": "Content-Length announces more than 2097152 bytes, the most this "
                    "endpoint accepts"}
    assert harness.read() == {}


async def test_chunked_one_byte_more_is_413(harness: Harness) -> None:
    status, _, body = await asyncio.to_thread(raw_request, harness.port, payload=padded(MIB2 + 1))
    assert status == 413
    assert body == {"ok": False, "error": "the body streams more than 2097152 bytes, the most this endpoint "
                    "accepts"}
    assert harness.read() == {}


def raw_request(port: int, *, content_length: int | None = None, payload: bytes = b"", stream_bytes: int = 0,
                token: str | None = TOKEN) -> tuple[int, int, Any]:
    """Send a POST by hand: ``payload`` (chunked unless ``content_length``), then ``stream_bytes`` more of
    filler, stopping as soon as the server answers (it may answer before reading everything).

    Returns (status, body bytes sent before the answer arrived, the JSON answer).
    """
    headers = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json"]
    if token:
        headers.append(f"X-OOT-Relay-Token: {token}")
    chunked = content_length is None
    headers.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {content_length}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sent = 0

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(payload), 65536):
            yield payload[start:start + 65536]
        for _ in range(0, stream_bytes, 65536):
            yield b"[" * 65536

    try:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode())
        for piece in pieces():
            if _readable(sock):
                break  # the server has answered
            try:
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        else:
            if chunked:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(b"0\r\n\r\n")
        response = b""
        with contextlib.suppress(ConnectionResetError):
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
                head, _, rest = response.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
        head, _, rest = response.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), sent, json.loads(rest) if rest else None
    finally:
        sock.close()


async def test_announced_100_mb_is_refused_before_reading(harness: Harness) -> None:
    started = time.monotonic()
    status, _, body = await asyncio.to_thread(raw_request, harness.port, content_length=100 * 1024 * 1024)
    assert (status, body["ok"]) == (413, False)
    assert time.monotonic() - started < 5  # answered without waiting for a body that never comes


async def test_streaming_100_mb_is_cut_off_near_the_cap(harness: Harness) -> None:
    status, sent, body = await asyncio.to_thread(raw_request, harness.port, stream_bytes=100 * 1024 * 1024)
    assert (status, body["ok"]) == (413, False)
    # The answer came while the client was still sending: far below 100 MB (socket buffers hold a few MB).
    assert sent < 16 * 1024 * 1024
    assert harness.read() == {}


async def test_read_capped_holds_at_most_cap_plus_one_chunk() -> None:
    consumed: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(1000):  # 64 MB if it were all read
            consumed.append(1)
            yield b"x" * 65536

    with pytest.raises(BodyTooLarge) as caught:
        await read_capped({}, chunks(), MIB2)
    assert not caught.value.announced
    assert len(consumed) == MIB2 // 65536 + 1  # the chunk that crossed the cap, and not one more
    with pytest.raises(BodyTooLarge) as caught:
        await read_capped({"content-length": str(MIB2 + 1)}, chunks(), MIB2)
    assert caught.value.announced
    assert len(consumed) == MIB2 // 65536 + 1  # refused on the header alone: nothing more read


# ---- 400 ----

def _bad_bodies() -> list[tuple[str, bytes, str]]:
    """(case, body, part of the message)."""
    def edited(name: str, path: tuple[str, ...], value: Any) -> bytes:
        body = relay_payload(name)
        parent = body
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = value
        return json.dumps(body).encode()

    wf = ("untrusted", "callback_payload", "workflow")
    cases = [
        ("not json", b"{this is not json", "the body is not JSON"),
        ("list", b"[1, 2, 3]", "body must be a JSON object, got a JSON array"),
        ("string", b'"hello"', "body must be a JSON object, got a JSON string"),
        ("number", b"42", "body must be a JSON object, got a JSON number"),
        ("null", b"null", "body must be a JSON object"),
        ("empty object", b"{}", "trusted must be a JSON object, got missing"),
        ("missing body", b"", "the body is empty"),
        ("invalid utf-8", fixture_bytes("01_pr_in_progress").replace(b"acme-ci", b"acme-\xff\xfe"),
         "not valid UTF-8"),
        ("deeply nested", b"[" * 100_000, "nested too deeply"),
        ("deeply nested object", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
        ("NaN", fixture_bytes("01_pr_in_progress").replace(b"42.317", b"NaN"), "NaN is not valid JSON"),
        ("huge string", edited("01_pr_in_progress", (*wf, "job_name"), "j" * 1_000_000),
         "workflow.job_name is longer than 300 characters (1000000)"),
        ("huge url", edited("01_pr_in_progress", (*wf, "url"), "https://x/" + "u" * 100_000), "workflow.url is longer"),
        ("missing job_name", fixture_bytes("bad_missing_job_name"), "workflow.job_name is required"),
        ("unknown status", fixture_bytes("bad_unknown_status"), "workflow.status must be one of"),
        ("missing delivery_id", edited("01_pr_in_progress", ("untrusted", "callback_payload", "delivery_id"), None),
         "delivery_id is required"),
        ("missing check_run_id", edited("01_pr_in_progress", (*wf, "check_run_id"), None), "check_run_id is required"),
        ("missing name", edited("01_pr_in_progress", (*wf, "name"), None), "workflow.name is required"),
        ("wrong type status", edited("01_pr_in_progress", (*wf, "status"), ["completed"]), "status must be a string"),
        ("wrong type counts", edited("02_pr_completed_success", (*wf, "test_results", "passed"), "many"),
         "test_results.passed must be a non-negative integer"),
        ("wrong type time", edited("01_pr_in_progress", (*wf, "started_at"), "noon"), "must be an ISO-8601"),
        ("wrong type repo", edited("01_pr_in_progress", ("trusted", "verified_repo"), {"a": 1}),
         "trusted.verified_repo must be a string"),
    ]
    from tests.test_extract import COMPLETED_WRONG_TYPES, WRONG_TYPES  # every field, wrong type, over HTTP

    for path, value, message in WRONG_TYPES:
        if message != "never reached":
            cases.append((f"wrong {'.'.join(path)}={value!r}"[:60], edited("01_pr_in_progress", path, value), message))
    for path, value, message in COMPLETED_WRONG_TYPES:
        cases.append((f"wrong {'.'.join(path)}={value!r}"[:60], edited("02_pr_completed_success", path, value),
                      message))
    return cases


async def test_bad_input_is_400_and_changes_nothing(client: httpx.AsyncClient, harness: Harness) -> None:
    assert (await post(client, fixture_bytes("01_pr_in_progress"))).status_code == 200
    before = harness.read()
    failures = []
    for case, body, message in _bad_bodies():
        response = await post(client, body)
        payload = response.json()
        if response.status_code != 400 or payload.get("ok") is not False or message not in payload.get("error", ""):
            failures.append((case, response.status_code, payload))
    assert failures == []
    assert harness.read() == before


async def test_no_body_at_all_is_400(client: httpx.AsyncClient, harness: Harness) -> None:
    response = await client.post(PATH, headers={"X-OOT-Relay-Token": TOKEN})
    assert response.status_code == 400
    assert response.json() == {"ok": False, "error": "the body is empty; expected a JSON object"}
    assert harness.read() == {}


async def test_bad_content_length_is_400(harness: Harness) -> None:
    sock = socket.create_connection(("127.0.0.1", harness.port), timeout=10)
    with sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nX-OOT-Relay-Token: {TOKEN}\r\n"
                     "Content-Length: -5\r\n\r\n".encode())
        answer = sock.recv(4096)
    assert answer.split(b" ", 2)[1] == b"400"  # refused by the HTTP parser or by us, never a 500


# ---- 429 ----

async def test_rate_limit_per_verified_repo(
        harness_factory: Callable[..., contextlib.AbstractContextManager[Harness]]) -> None:
    with harness_factory(rate_limit_per_minute=3) as limited:
        async with httpx.AsyncClient(base_url=limited.base_url, timeout=30) as http:
            for name in ("01_pr_in_progress", "02_pr_completed_success", "03_pr_other_job_in_progress"):
                assert (await post(http, fixture_bytes(name))).status_code == 200
            refused = await post(http, fixture_bytes("04_pr_other_job_failure"))
            other_repo = await post(http, fixture_bytes("07_pr_l3_matrix_leg_a"))
            bad = await post(http, b"[]")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 20  # 3/min: one result every 20 s
    assert refused.json()["ok"] is False
    assert "acme-accel/torch-acme is over its limit of 3 results a minute" in refused.json()["error"]
    assert other_repo.status_code == 200  # the limit is per downstream repository
    assert bad.status_code == 400
    key_04 = "acme-accel/torch-acme/6c0e0a52-c5a1-11f0-8f21-1a2b3c4d5e6f/acme-ci/test-distributed/58410000002"
    state = limited.state(key_04)
    assert state is not None and state["status"] == "in_progress"  # the refused completed was not stored


# ---- 500 ----

async def test_store_failure_is_a_generic_500(client: httpx.AsyncClient, harness: Harness,
                                              request: pytest.FixtureRequest, warehouse: Warehouse,
                                              caplog: pytest.LogCaptureFixture) -> None:
    if harness.kind == "dynamodb":
        request.getfixturevalue("dynamodb_client").delete_table(TableName=harness.store.table_name)  # type: ignore[attr-defined]
    else:
        warehouse.command(f"DROP TABLE {JOB_RESULTS_TABLE}")
    with caplog.at_level(logging.INFO):
        response = await post(client, fixture_bytes("01_pr_in_progress"))
    assert response.status_code == 500
    assert response.json() == {"ok": False, "error": STORE_FAILED}
    failure = [r.getMessage() for r in caplog.records if "event=store_failed" in r.getMessage()]
    assert len(failure) == 1
    assert f"dynamoKey={KEY_01}" in failure[0] and "verified_repo=acme-accel/torch-acme" in failure[0]
    assert TOKEN not in server_log(caplog)


# ---- logs, OpenAPI, validation shape ----

async def test_logs_are_key_value_and_never_hold_the_token(client: httpx.AsyncClient,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="ingest.routes"):  # accepted results log at DEBUG
        await post(client, fixture_bytes("01_pr_in_progress"))
        await post(client, fixture_bytes("01_pr_in_progress"), token="wrong-" + TOKEN)
    messages = [r.getMessage() for r in caplog.records if r.name == "ingest.routes"]
    assert messages[0] == (f"event=result_stored dynamoKey={KEY_01} verified_repo=acme-accel/torch-acme "
                           "status=in_progress version=1")
    assert messages[1].startswith("event=result_refused http_status=401")
    assert TOKEN not in server_log(caplog)


async def test_openapi_documents_request_and_every_response() -> None:
    app = create_app(Settings(relay_tokens=[TOKEN]))
    operation = app.openapi()["paths"][PATH]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) == {"trusted", "untrusted"}
    workflow = schema["properties"]["untrusted"]["properties"]["callback_payload"]["properties"]["workflow"]
    assert {"status", "name", "job_name", "check_run_id"} <= set(workflow["required"])
    assert set(operation["responses"]) == {"200", "400", "401", "405", "413", "429", "500"}
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    for code in ("400", "401", "413", "429", "500"):
        assert operation["responses"][code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Refused"}


async def test_openapi_document_is_unchanged_by_the_fast_path() -> None:
    """POST /api/oot/results is answered by ``ResultsEndpoint`` before FastAPI routes it; the document is
    still generated from the route, exactly as before (tests/golden/ingest_openapi.json; UPDATE_GOLDEN=1
    rewrites it after a deliberate change of the contract's models)."""
    doc = create_app(Settings(relay_tokens=[TOKEN])).openapi()
    current = {"paths": {PATH: doc["paths"][PATH]},
               "schemas": {name: doc["components"]["schemas"][name] for name in ("Accepted", "Refused")}}
    path = Path(__file__).parent / "golden" / "ingest_openapi.json"
    if os.environ.get("UPDATE_GOLDEN"):  # after a deliberate change of the route or its models
        path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(path.read_text())


async def test_the_documented_route_answers_like_the_fast_path(harness: Harness) -> None:
    """An app that mounts the router without the fast path (the route's own handler) answers alike."""
    from fastapi import Request

    from ingest.ratelimit import RateLimiter
    from ingest.routes import CONTEXT_STATE, IngestContext, router

    plain = FastAPI()
    plain.include_router(router)
    context = IngestContext(store=harness.store, relay_tokens=[TOKEN], limiter=RateLimiter(600))

    def provide(request: Request) -> IngestContext:
        return context

    setattr(plain.state, CONTEXT_STATE, provide)
    cases: list[tuple[bytes, dict[str, str]]] = [
        (fixture_bytes("05_pr_rerun_attempt2_in_progress"), {"X-OOT-Relay-Token": TOKEN}),
        (fixture_bytes("05_pr_rerun_attempt2_in_progress"), {"X-OOT-Relay-Token": TOKEN}),  # a re-post
        (fixture_bytes("05_pr_rerun_attempt2_in_progress"), {}),  # 401
        (b"{not json", {"X-OOT-Relay-Token": TOKEN}),  # 400
        (json.dumps({"trusted": {}}).encode(), {"x-hud-internal-bot": TOKEN}),  # 400, the legacy header
    ]
    answers = []
    with serve(plain) as plain_url:
        for url in (harness.base_url, plain_url):
            async with httpx.AsyncClient(base_url=url, timeout=30) as http:
                answers.append([(r.status_code, r.json(), r.headers.get("content-type"))
                                for r in [await http.post(PATH, content=body, headers=headers)
                                          for body, headers in cases]])
    fast, routed = answers
    assert [status for status, _, _ in fast] == [200, 200, 401, 400, 400]
    assert fast[1][1]["status"] == routed[1][1]["status"] == "in_progress"
    for one, other in zip(fast, routed, strict=True):
        assert (one[0], one[2]) == (other[0], other[2])
        assert {k: v for k, v in one[1].items() if k != "dynamoKey"} == \
            {k: v for k, v in other[1].items() if k != "dynamoKey"}


async def test_framework_validation_errors_use_the_contract_shape() -> None:
    from fastapi import APIRouter

    router = APIRouter(route_class=IngestRoute)

    @router.post("/typed")
    async def typed(count: int) -> dict[str, int]:
        return {"count": count}

    app = FastAPI()
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.post("/typed", params={"count": "many"})
    assert response.status_code == 400
    assert response.json()["ok"] is False and response.json()["error"].startswith("query.count:")


# ---- the small pure parts, without HTTP ----

def test_rate_limiter_refills_and_says_when() -> None:
    from ingest.ratelimit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one a second, bursts of 60
    assert all(limiter.check("a/b").allowed for _ in range(60))
    refused = limiter.check("a/b")
    assert (refused.allowed, refused.retry_after_s) == (False, 1)
    assert limiter.check("c/d").allowed  # another repository has its own bucket
    now[0] = 0.5
    assert not limiter.check("a/b").allowed
    now[0] = 1.0
    assert limiter.check("a/b").allowed and not limiter.check("a/b").allowed
    slow = RateLimiter(2, clock=lambda: now[0])
    assert slow.check("x/y").allowed and slow.check("x/y").allowed
    assert slow.check("x/y").retry_after_s == 30  # 2 a minute: the next token in 30 s


def test_token_comparison() -> None:
    from ingest.auth import authorised

    assert authorised({"x-oot-relay-token": TOKEN}, [OLD_TOKEN, TOKEN])
    assert authorised({"x-hud-internal-bot": OLD_TOKEN}, [OLD_TOKEN, TOKEN])
    assert authorised({"x-oot-relay-token": "wrong", "x-hud-internal-bot": TOKEN}, [TOKEN])
    assert not authorised({"x-oot-relay-token": TOKEN}, [])  # no configured token: nothing is accepted
    assert not authorised({}, [TOKEN])
    assert not authorised({"x-oot-relay-token": "é" + TOKEN}, [TOKEN])


def _readable(sock: socket.socket) -> bool:
    """Whether the server has answered; a selector, since select() fails for descriptors past 1024."""
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        return bool(selector.select(timeout=0))


# ---- contract leniency (issue #14 §1): what the relay may legitimately send is stored, never refused ----

def _with_event(name: str, event_type: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    body = relay_payload(name)
    callback = body["untrusted"]["callback_payload"]
    callback["event_type"] = event_type
    if payload is not None:
        callback["payload"] = {"repository": callback["payload"]["repository"], **payload}
    return body


async def test_any_event_type_is_stored_as_given_pr_or_trunk_by_the_payload(client: httpx.AsyncClient,
                                                                            harness: Harness) -> None:
    response = await post(client, _with_event("01_pr_in_progress", "merge_group"))
    assert response.status_code == 200, response.text
    state = harness.state()
    assert state is not None and (state["event_type"], state["pr_number"]) == ("merge_group", 170001)
    trunk = _with_event("01_pr_in_progress", "workflow_dispatch", {"head_sha": "d" * 40})
    trunk["untrusted"]["callback_payload"]["delivery_id"] = "dispatch-1"
    response = await post(client, trunk)
    assert response.status_code == 200, response.text
    stored = harness.state(response.json()["dynamoKey"])
    assert stored is not None and (stored["event_type"], stored["pr_number"], stored["head_sha"]) == (
        "workflow_dispatch", 0, "d" * 40)


async def test_an_in_progress_callback_stores_its_execution_and_queue_time(client: httpx.AsyncClient,
                                                                           harness: Harness) -> None:
    body = relay_payload("01_pr_in_progress")
    body["trusted"]["ci_metrics"] = {"queue_time": 12.5, "execution_time": 30.0}
    assert (await post(client, body)).status_code == 200
    state = harness.state()
    assert state is not None and (state["status"], state["queue_time_s"], state["execution_time_s"]) == (
        "in_progress", 12.5, 30.0)
    assert (await post(client, fixture_bytes("02_pr_completed_success"))).status_code == 200
    state = harness.state()
    assert state is not None and state["status"] == "completed"
    assert state["execution_time_s"] == relay_payload("02_pr_completed_success")["trusted"]["ci_metrics"][
        "execution_time"], "the completed callback's own figure wins"


@pytest.mark.parametrize(("event_type", "message"), [
    ("e" * 65, "event_type is longer than 64 characters"),
    ("push\u0000", "event_type must be printable text"),
    (7, "event_type must be a string"),
])
async def test_a_broken_event_type_is_still_a_400(client: httpx.AsyncClient, harness: Harness,
                                                   event_type: Any, message: str) -> None:
    body = relay_payload("01_pr_in_progress")
    body["untrusted"]["callback_payload"]["event_type"] = event_type
    response = await post(client, body)
    assert response.status_code == 400 and message in response.json()["error"]
    assert harness.state() is None, "nothing stored"
