"""``POST /api/github/webhook`` over ASGI: signatures, de-duplication, routing and the handlers' effects."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bot.render import Rendered
from bot.router import Delivery
from bot.service import Bot
from bot.webhook import WEBHOOK_PATH, webhook_api
from sql.pr_results import fetch_pr_rows
from sql.warehouse import Warehouse
from tests.conftest import github_payload
from tests.github_fake import signed_headers
from tests.readpath_data import record, row

SECRET = "webhook-s3cret"
REPO = "pytorch/pytorch"
SHA1 = "1" * 40
SHA2 = "2" * 40


def no_results(repo: str, number: int) -> Rendered:
    return Rendered(None, None, None, False)


@pytest.fixture
async def bot(warehouse: Warehouse) -> AsyncIterator[Bot]:
    """A dry-run bot (no App credentials) with a webhook secret, on the test warehouse."""
    made = Bot(warehouse=warehouse, webhook_secret=SECRET, debounce=0.0, render=no_results)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


@pytest.fixture
async def client(bot: Bot) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(webhook_api(lambda request: bot.receiver))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        yield http


async def deliver(client: httpx.AsyncClient, name: str, *, delivery: str | None = None,
                  payload: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    body = json.dumps(payload if payload is not None else github_payload(name)).encode()
    event = name.split(".")[0]
    sent = signed_headers(body, SECRET, event=event, delivery=delivery or str(uuid.uuid4()))
    sent.update(headers or {})
    return await client.post(WEBHOOK_PATH, content=body, headers=sent)


async def test_valid_signature_is_accepted_and_records_the_head(client: httpx.AsyncClient, bot: Bot) -> None:
    response = await deliver(client, "pull_request.opened")
    assert response.status_code == 202 and response.json()["status"] == "accepted"
    await bot.drain()
    head = bot.state.head(REPO, 170001)
    assert head is not None
    assert (head.head_sha, head.state, head.base_ref, head.installation_id) == (SHA1, "open", "main", 777)
    slot = bot.writer.slot(REPO, 170001)
    assert slot is not None and slot.cycles >= 1, "the PR was marked dirty and its writer ran"


@pytest.mark.parametrize(("headers", "message"), [
    ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, "does not match"),
    ({"X-Hub-Signature-256": ""}, "missing"),
    ({"X-Hub-Signature-256": "", "X-Hub-Signature": "sha1=SHA1"}, "SHA-1"),
    ({"X-Hub-Signature-256": "SHA1"}, "sha256="),
], ids=["wrong", "missing", "sha1-only", "sha1-in-256-header"])
async def test_bad_signatures_are_refused(client: httpx.AsyncClient, bot: Bot, headers: dict[str, str],
                                          message: str) -> None:
    body = json.dumps(github_payload("pull_request.opened")).encode()
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    sent = signed_headers(body, SECRET, event="pull_request", delivery=str(uuid.uuid4()))
    for key, value in headers.items():
        value = value.replace("SHA1", sha1)
        if value:
            sent[key] = value
        else:
            sent.pop(key, None)
    response = await client.post(WEBHOOK_PATH, content=body, headers=sent)
    assert response.status_code == 401
    assert message in response.json()["error"]
    await bot.drain()
    assert bot.state.head(REPO, 170001) is None, "nothing from an unverified delivery is recorded"


async def test_signature_covers_the_raw_body(client: httpx.AsyncClient) -> None:
    body = json.dumps(github_payload("pull_request.opened")).encode()
    sent = signed_headers(body, SECRET, event="pull_request", delivery="d-raw")
    # Same JSON, different bytes: the signature is over bytes, not the parsed object.
    response = await client.post(WEBHOOK_PATH, content=body.replace(b": ", b":"), headers=sent)
    assert response.status_code == 401


async def test_duplicate_delivery_is_acknowledged_once(client: httpx.AsyncClient, bot: Bot) -> None:
    calls: list[str] = []

    async def count(delivery: Delivery) -> None:
        calls.append(delivery.delivery_id)

    bot.router.add("pull_request", "opened", count)
    first = await deliver(client, "pull_request.opened", delivery="same-id")
    second = await deliver(client, "pull_request.opened", delivery="same-id")
    await bot.drain()
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["status"] == "duplicate"
    assert calls == ["same-id"]


async def test_unknown_events_and_actions_are_acknowledged_and_ignored(client: httpx.AsyncClient, bot: Bot) -> None:
    response = await deliver(client, "issues.opened")
    assert response.status_code == 200 and response.json() == {"status": "ignored", "event": "issues"}
    other = await deliver(client, "check_run.created-other-app")
    assert other.status_code == 200 and other.json()["status"] == "ignored"
    ping = await client.post(WEBHOOK_PATH, content=b'{"zen": "hi"}',
                             headers=signed_headers(b'{"zen": "hi"}', SECRET, event="ping", delivery="p1"))
    assert ping.status_code == 200


async def test_malformed_deliveries_get_clear_4xx(client: httpx.AsyncClient, bot: Bot) -> None:
    body = b"not json"
    response = await client.post(WEBHOOK_PATH, content=body, headers=signed_headers(
        body, SECRET, event="pull_request", delivery="d-bad"))
    assert response.status_code == 400 and "JSON" in response.json()["error"]
    body = b"[1, 2]"
    response = await client.post(WEBHOOK_PATH, content=body, headers=signed_headers(
        body, SECRET, event="pull_request", delivery="d-list"))
    assert response.status_code == 400
    headers = signed_headers(b"{}", SECRET, event="pull_request", delivery="d-x")
    del headers["X-GitHub-Event"]
    response = await client.post(WEBHOOK_PATH, content=b"{}", headers=headers)
    assert response.status_code == 400
    bot.receiver.max_bytes = 1024
    big = json.dumps({"action": "opened", "pad": "x" * 4096}).encode()
    response = await client.post(WEBHOOK_PATH, content=big, headers=signed_headers(
        big, SECRET, event="pull_request", delivery="d-big"))
    assert response.status_code == 413


async def test_without_a_secret_webhooks_are_refused(warehouse: Warehouse) -> None:
    unsigned = Bot(warehouse=warehouse, webhook_secret=None, render=no_results)
    app = FastAPI()
    app.include_router(webhook_api(lambda request: unsigned.receiver))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        response = await http.post(WEBHOOK_PATH, content=b"{}", headers={"X-GitHub-Event": "ping",
                                                                          "X-GitHub-Delivery": "1"})
    assert response.status_code == 503 and "OOT_HUD_GITHUB_WEBHOOK_SECRET" in response.json()["error"]


async def test_answer_is_fast_and_work_runs_in_the_background(client: httpx.AsyncClient, bot: Bot) -> None:
    done = asyncio.Event()

    async def slow(delivery: Delivery) -> None:
        await asyncio.sleep(1.5)
        done.set()

    bot.router.add("pull_request", "opened", slow)
    started = time.perf_counter()
    response = await deliver(client, "pull_request.opened")
    assert response.status_code == 202
    assert time.perf_counter() - started < 1.0
    assert not done.is_set()
    await bot.drain()
    assert done.is_set()


async def test_a_failing_callback_does_not_stop_the_others(client: httpx.AsyncClient, bot: Bot,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    ran: list[str] = []

    async def broken(delivery: Delivery) -> None:
        raise RuntimeError("boom")

    async def after(delivery: Delivery) -> None:
        ran.append(delivery.delivery_id)

    bot.router.add("pull_request", "opened", broken)
    bot.router.add("pull_request", "opened", after)
    with caplog.at_level(logging.ERROR, logger="oot_hud.bot.router"):
        await deliver(client, "pull_request.opened", delivery="d-iso")
        await bot.drain()
    assert ran == ["d-iso"]
    failure = next(r for r in caplog.records if "event=webhook_callback_failed" in r.getMessage())
    assert "delivery_id=d-iso github_event=pull_request action=opened installation_id=777" in failure.getMessage()
    assert failure.delivery_id == "d-iso" and failure.github_event == "pull_request" and failure.installation_id == 777
    assert bot.state.head(REPO, 170001) is not None, "the real handler still ran"


async def test_synchronize_closed_and_base_edits_update_the_head(client: httpx.AsyncClient, bot: Bot) -> None:
    await deliver(client, "pull_request.opened")
    await deliver(client, "pull_request.synchronize")
    await bot.drain()
    assert bot.state.head(REPO, 170001).head_sha == SHA2
    await deliver(client, "pull_request.edited-title")  # not a base change: ignored
    await bot.drain()
    assert bot.state.head(REPO, 170001).head_sha == SHA2
    await deliver(client, "pull_request.closed")
    await bot.drain()
    head = bot.state.head(REPO, 170001)
    assert (head.head_sha, head.state) == (SHA2, "closed")


async def test_title_and_author_are_recorded_and_a_title_edit_updates_them(client: httpx.AsyncClient,
                                                                           bot: Bot) -> None:
    opened = github_payload("pull_request.opened")
    opened["pull_request"]["title"] = "Old title @everyone <b>x</b> | y"
    await deliver(client, "pull_request.opened", payload=opened)
    await bot.drain()
    head = bot.state.head(REPO, 170001)
    assert (head.title, head.author) == ("Old title @everyone <b>x</b> | y", "contributor"), "stored as given"
    cycles = bot.writer.slot(REPO, 170001).cycles
    await deliver(client, "pull_request.edited-title")  # updated_at 12:40, after the opening
    await bot.drain()
    head = bot.state.head(REPO, 170001)
    assert (head.title, head.head_sha, head.author) == ("Add a thing", SHA1, "contributor")
    assert bot.writer.slot(REPO, 170001).cycles == cycles, "a title edit re-renders nothing"
    long_title = github_payload("pull_request.synchronize")
    long_title["pull_request"]["title"] = "t" * 1000
    long_title["pull_request"]["user"] = None
    await deliver(client, "pull_request.synchronize", payload=long_title)
    await bot.drain()
    head = bot.state.head(REPO, 170001)
    assert (len(head.title), head.author) == (256, "")


async def test_labels_are_recorded_and_only_an_l3_label_change_re_renders(client: httpx.AsyncClient,
                                                                          bot: Bot) -> None:
    await deliver(client, "pull_request.opened")  # 12:00, no labels
    await bot.drain()
    assert bot.state.head(REPO, 170001).labels == ()
    cycles = bot.writer.slot(REPO, 170001).cycles
    await deliver(client, "pull_request.labeled")  # 12:50: ciflow/crcr/npu added
    await bot.drain()
    assert bot.state.head(REPO, 170001).labels == ("module: cuda", "ciflow/crcr/npu")
    assert bot.writer.slot(REPO, 170001).cycles == cycles + 1, "an L3 label re-renders the PR"
    other = github_payload("pull_request.labeled")
    other["label"] = other["pull_request"]["labels"][0]  # module: cuda
    other["pull_request"]["updated_at"] = "2026-11-20T12:52:00Z"
    other["pull_request"]["labels"].append({"name": "triaged"})
    await deliver(client, "pull_request.labeled", payload=other)
    await bot.drain()
    assert bot.state.head(REPO, 170001).labels == ("module: cuda", "ciflow/crcr/npu", "triaged"), "recorded"
    assert bot.writer.slot(REPO, 170001).cycles == cycles + 1, "another label re-renders nothing"
    await deliver(client, "pull_request.unlabeled")  # 12:55: ciflow/crcr/npu removed
    await bot.drain()
    assert bot.state.head(REPO, 170001).labels == ("module: cuda",)
    assert bot.writer.slot(REPO, 170001).cycles == cycles + 2


async def test_labels_are_bounded_and_malformed_ones_skipped(client: httpx.AsyncClient, bot: Bot) -> None:
    payload = github_payload("pull_request.synchronize")
    payload["pull_request"]["labels"] = ([{"name": "x" * 80}, {"name": 5}, "bare", {"color": "fff"}, {"name": ""},
                                          {"name": "x" * 80}]
                                         + [{"name": f"label {n}"} for n in range(200)])
    await deliver(client, "pull_request.synchronize", payload=payload)
    await bot.drain()
    labels = bot.state.head(REPO, 170001).labels
    assert labels[0] == "x" * 50, "GitHub's 50-character limit on a name"
    assert len(labels) == 1 + 94 and labels[-1] == "label 93", "the first 100 entries, duplicates once"
    payload["pull_request"]["labels"] = {"name": "not a list"}
    payload["pull_request"]["updated_at"] = "2026-11-20T13:05:00Z"
    await deliver(client, "pull_request.synchronize", payload=payload)
    await bot.drain()
    assert bot.state.head(REPO, 170001).labels == ()


def test_an_older_pr_heads_table_gains_title_author_and_labels(warehouse: Warehouse) -> None:
    warehouse.command("DROP TABLE oot_pr_heads")
    warehouse.command("CREATE TABLE oot_pr_heads (upstream_repo LowCardinality(String), pr_number UInt64,"
                      " head_sha String, state LowCardinality(String), base_ref String, installation_id UInt64,"
                      " updated_at DateTime64(3, 'UTC')) ENGINE = ReplacingMergeTree(updated_at)"
                      " ORDER BY (upstream_repo, pr_number)")
    warehouse.command("INSERT INTO oot_pr_heads VALUES ('pytorch/pytorch', 7, 'abc', 'open', 'main', 1, now())")
    warehouse.apply_schema()
    [old] = warehouse.query("SELECT title, author, labels FROM oot_pr_heads")
    assert old == {"title": "", "author": "", "labels": []}
    warehouse.insert_job_rows([row(record(pr=7, sha="abc"))])
    [result] = fetch_pr_rows(warehouse, "pytorch/pytorch", 7)  # view 014 names the column 016 added
    assert (result["current_head_sha"], result["pr_labels"]) == ("abc", [])


async def test_base_change_is_recorded(client: httpx.AsyncClient, bot: Bot) -> None:
    await deliver(client, "pull_request.edited-base")
    await bot.drain()
    assert bot.state.head(REPO, 170001).base_ref == "release/2.10"


async def test_late_older_event_does_not_win(client: httpx.AsyncClient, bot: Bot) -> None:
    await deliver(client, "pull_request.synchronize")
    await deliver(client, "pull_request.opened")  # delivered late; its updated_at is older
    await bot.drain()
    assert bot.state.head(REPO, 170001).head_sha == SHA2


async def test_rerequested_check_run_refreshes_its_pr(client: httpx.AsyncClient, bot: Bot) -> None:
    response = await deliver(client, "check_run.rerequested")
    assert response.status_code == 202
    await bot.drain()
    assert bot.writer.slot(REPO, 170001) is not None


async def test_fork_pr_check_run_is_mapped_by_sha(client: httpx.AsyncClient, bot: Bot,
                                                  warehouse: Warehouse) -> None:
    await deliver(client, "pull_request.synchronize-fork")
    await bot.drain()
    bot.writer._slots.clear()
    response = await deliver(client, "check_run.rerequested-fork")  # pull_requests: []
    assert response.status_code == 202
    await bot.drain()
    assert bot.writer.slot(REPO, 170001) is not None


async def test_fork_pr_sha_known_only_from_results(client: httpx.AsyncClient, bot: Bot,
                                                   warehouse: Warehouse) -> None:
    warehouse.insert_job_rows([row(record(pr=170001, sha=SHA2))])
    await deliver(client, "check_run.rerequested-fork")
    await bot.drain()
    assert bot.writer.slot(REPO, 170001) is not None
    assert bot.state.prs_for_sha(REPO, "f" * 40) == []


async def test_installation_bookkeeping(client: httpx.AsyncClient, bot: Bot, warehouse: Warehouse) -> None:
    await deliver(client, "installation.created")
    await deliver(client, "installation_repositories.added")
    await bot.drain()
    await deliver(client, "installation_repositories.removed")
    await bot.drain()
    assert bot.state.installation_for("pytorch/pytorch") == 777
    assert bot.state.installation_for("pytorch/audio") == 777
    assert bot.state.installation_for("pytorch/vision") is None
    # Kept in the warehouse too: a restarted bot knows them without asking GitHub.
    restarted = Bot(warehouse=warehouse, render=no_results)
    restarted.state.load_installations()
    assert restarted.state.installation_for("pytorch/audio") == 777
    await deliver(client, "installation.deleted")
    await bot.drain()
    assert bot.state.installation_for("pytorch/pytorch") is None


async def test_rotation_accepts_every_listed_secret_and_only_those(warehouse: Warehouse, tmp_path: Path) -> None:
    """OOT_HUD_GITHUB_WEBHOOK_SECRET="old,new" through the composition root: while GitHub switches from the old
    secret to the new one, deliveries signed with either verify; any other secret, a blank entry, a SHA-1
    signature made with a listed secret, or a signature over other bytes is still a 401."""
    from oot_hud.services import build_bot
    from oot_hud.settings import Settings

    settings = Settings(github_webhook_secret=" old-s3cret , new-s3cret ,", data_dir=tmp_path)
    made = build_bot(settings, warehouse)
    await made.start()
    calls: list[str] = []

    async def count(delivery: Delivery) -> None:
        calls.append(delivery.delivery_id)

    made.router.add("pull_request", "opened", count)
    app = FastAPI()
    app.include_router(webhook_api(lambda request: made.receiver))
    body = json.dumps(github_payload("pull_request.opened")).encode()
    sha1 = "sha1=" + hmac.new(b"new-s3cret", body, hashlib.sha1).hexdigest()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        async def send(secret: str, delivery: str, **changes: str) -> httpx.Response:
            headers = signed_headers(body, secret, event="pull_request", delivery=delivery)
            headers.update(changes)
            return await http.post(WEBHOOK_PATH, content=body, headers=headers)

        old, new = await send("old-s3cret", "d-old"), await send("new-s3cret", "d-new")
        refused = [await send("other-secret", "d-other"), await send("", "d-blank"),
                   await send("old-s3cret, new-s3cret", "d-whole"),
                   await send("new-s3cret", "d-sha1", **{"X-Hub-Signature-256": "", "X-Hub-Signature": sha1})]
        await made.drain()
    assert (old.status_code, new.status_code) == (202, 202)
    assert [r.status_code for r in refused] == [401] * 4
    assert calls == ["d-old", "d-new"]
    await made.stop()
