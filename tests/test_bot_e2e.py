"""The bot end to end: warehouse rows and webhooks in, the real renderers, the fake GitHub out."""

from __future__ import annotations

import html
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bot.service import Bot
from bot.webhook import WEBHOOK_PATH, webhook_api
from oot_hud.app import create_app
from oot_hud.settings import Settings
from renderers.markdown import COMMENT_MARKER, render_check_run, render_pr_comment
from renderers.pr_view import build_pr_view
from sql.pr_results import fetch_pr_rows
from sql.records import PrRef
from sql.warehouse import Warehouse
from tests.conftest import github_payload, relay_payload
from tests.github_fake import APP_ID, APP_SLUG, FAKE_API, GitHubFake, signed_headers
from tests.readpath_data import record, row

SECRET = "e2e-secret"
REPO = "pytorch/pytorch"
PR = 170001
SHA1 = "1" * 40
SHA2 = "2" * 40
PUBLIC = "https://hud.test"
NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


@pytest.fixture
async def bot(warehouse: Warehouse, github_fake: GitHubFake, app_private_key: str) -> AsyncIterator[Bot]:
    from bot.render import warehouse_renderer

    made = Bot(warehouse=warehouse, app_id=APP_ID, private_key=app_private_key, webhook_secret=SECRET,
               api_url=FAKE_API, app_slug=APP_SLUG, debounce=0.0, pace=0.0, public_url=PUBLIC,
               render=warehouse_renderer(warehouse, silence_hours=6.0, public_url=PUBLIC, now=lambda: NOW))
    await made.start()
    try:
        yield made
    finally:
        await made.stop()


async def webhook(bot: Bot, name: str, payload: dict[str, Any] | None = None) -> None:
    app = FastAPI()
    app.include_router(webhook_api(lambda request: bot.receiver))
    body = json.dumps(payload if payload is not None else github_payload(name)).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        response = await http.post(WEBHOOK_PATH, content=body, headers=signed_headers(
            body, SECRET, event=name.split(".")[0], delivery=str(uuid.uuid4())))
    assert response.status_code == 202
    await bot.drain()


def expected(warehouse: Warehouse) -> tuple[str | None, object]:
    view = build_pr_view(fetch_pr_rows(warehouse, REPO, PR), now=NOW, silence_hours=6.0, public_url=PUBLIC,
                         upstream_repo=REPO, pr_number=PR)
    return render_pr_comment(view), render_check_run(view)


async def results(bot: Bot, warehouse: Warehouse, *records: object) -> None:
    warehouse.insert_job_rows([row(r) for r in records])  # type: ignore[arg-type]
    for r in records:
        bot.on_results(r.pr)  # type: ignore[attr-defined]
    await bot.drain()


async def test_first_results_post_exactly_the_rendered_comment_and_check(
        bot: Bot, warehouse: Warehouse, github_fake: GitHubFake) -> None:
    await webhook(bot, "pull_request.opened")  # head SHA1, installation 777
    assert github_fake.writes() == [], "no OOT results yet: nothing posted"
    await results(bot, warehouse, record(pr=PR, sha=SHA1, status="in_progress", conclusion=None, job="build"),
                  record(pr=PR, sha=SHA1, job="test", conclusion="failure"))
    body, check = expected(warehouse)
    [comment] = github_fake.bot_comments(REPO, PR)
    assert comment["body"] == body and body.startswith(COMMENT_MARKER)
    [run] = github_fake.runs_for(REPO)
    assert (run["head_sha"], run["status"], run["output"]["summary"]) == (SHA1, check.status, check.summary)
    assert run["details_url"] == check.details_url and run["details_url"].startswith(PUBLIC)
    assert run["external_id"] == f"{REPO}#{PR}"

    # The build finishes: both are edited in place; the check completes with the policy's conclusion.
    await results(bot, warehouse, record(pr=PR, sha=SHA1, job="build", conclusion="success"))
    body, check = expected(warehouse)
    assert [c["body"] for c in github_fake.bot_comments(REPO, PR)] == [body]
    [run] = github_fake.runs_for(REPO)
    assert (run["status"], run.get("conclusion")) == ("completed", check.conclusion) == ("completed", "failure")
    assert [w.kind for w in github_fake.writes()] == ["comment.create", "check.create",
                                                      "comment.update", "check.update"]

    # A replayed result changes nothing: no call at all.
    before = len(github_fake.requests)
    bot.on_results(PrRef(REPO, PR, SHA1))
    await bot.drain()
    assert len(github_fake.requests) == before


async def test_new_head_moves_the_check_and_supersedes_old_results(
        bot: Bot, warehouse: Warehouse, github_fake: GitHubFake) -> None:
    await webhook(bot, "pull_request.opened")
    await results(bot, warehouse, record(pr=PR, sha=SHA1, conclusion="failure"))
    await webhook(bot, "pull_request.synchronize")  # head -> SHA2, no result for it yet
    body, _ = expected(warehouse)
    [comment] = github_fake.bot_comments(REPO, PR)
    assert comment["body"] == body and "1111111" in body
    assert github_fake.runs_for(REPO, SHA2) == [], "SHA2's check run comes with its first result"
    await results(bot, warehouse, record(pr=PR, sha=SHA2, status="in_progress", conclusion=None))
    body, check = expected(warehouse)
    assert [c["body"] for c in github_fake.bot_comments(REPO, PR)] == [body]
    [old] = github_fake.runs_for(REPO, SHA1)
    [new] = github_fake.runs_for(REPO, SHA2)
    assert old["conclusion"] == "failure", "the old commit's check run is left as it was"
    assert new["status"] == "in_progress" and new["output"]["summary"] == check.summary
    # The old failure is superseded: the headline no longer counts it.
    assert not body.split("\n")[1].startswith("## ❌")


async def test_rerequested_check_run_is_resent(bot: Bot, warehouse: Warehouse, github_fake: GitHubFake) -> None:
    await webhook(bot, "pull_request.synchronize")
    await results(bot, warehouse, record(pr=PR, sha=SHA2, conclusion="failure"))
    await webhook(bot, "check_run.rerequested-fork")  # fork: the SHA is mapped to the PR here
    assert [w.kind for w in github_fake.writes()] == ["comment.create", "check.create", "check.update"]


HOSTILE = [
    "@pytorch/everyone please look", "[click](https://evil.example/x)", "</details><details open>",
    "a | b | c", "<script>alert(1)</script>", "https://evil.example/bare", "#1234 ref", "`code` *bold* _it_",
    "![img](https://evil.example/i.png)", "line\nbreak", "\u202eevil", "www.evil.example",
]


async def test_hostile_downstream_strings_stay_inert(bot: Bot, warehouse: Warehouse,
                                                     github_fake: GitHubFake) -> None:
    await webhook(bot, "pull_request.opened")
    records = [record(pr=PR, sha=SHA1, backend=f"acme/b{i}", job=text, workflow=f"wf {text}",
                      conclusion="failure" if i % 2 else "success", level="L4" if i % 3 else "L2",
                      workflow_url="javascript:alert(1)" if i % 4 == 0 else f"https://github.com/acme/b{i}/runs/1",
                      artifact_url="https://github.com/acme/artifacts?x=<b>|y)")
               for i, text in enumerate(HOSTILE)]
    await results(bot, warehouse, *records)
    bodies = [b for b in github_fake.sent_bodies() if b]
    assert len(bodies) >= 4
    for body in bodies:
        text = html.unescape(body)
        assert not re.search(r"@[A-Za-z0-9_-]", text), "a live mention"
        assert not re.search(r"#\d", text), "a live issue reference"
        assert "https://evil" not in text and "www.evil" not in text, "an autolink"
        assert "javascript:" not in body
        assert "<script" not in body and "<b>" not in body and "\u202e" not in body
        targets = re.findall(r"\]\(([^)\s]*)", body)
        assert all(t.startswith((PUBLIC, "https://github.com/acme/")) for t in targets), targets
        assert body.count("<details") == body.count("</details>")
        for table in re.findall(r"(?:^\|.*\n?)+", body, flags=re.M):
            widths = {line.count("|") for line in table.strip().split("\n")}
            assert len(widths) == 1, table


async def test_whole_service_posts_a_relay_result_to_github(
        engine_dir: Path, github_fake: GitHubFake, app_private_key: str) -> None:
    settings = Settings(data_dir=engine_dir, clickhouse_database=f"t_{uuid.uuid4().hex[:12]}",
                        relay_tokens="relay-token", github_app_id=str(APP_ID), github_private_key=app_private_key,
                        github_webhook_secret=SECRET, github_api_url=FAKE_API, github_app_slug=APP_SLUG,
                        bot_debounce_seconds=0.05, bot_pace_seconds=0.0, public_url=PUBLIC)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
                payload = relay_payload("01_pr_in_progress")
                response = await http.post("/api/oot/results", json=payload,
                                           headers={"X-OOT-Relay-Token": "relay-token"})
                assert response.status_code in (200, 201, 202), response.text
                await services.settled()  # the result is in the warehouse and announced to the bot
                await services.bot.drain()
                [comment] = github_fake.bot_comments(REPO, PR)
                assert comment["body"].startswith(COMMENT_MARKER) and "acme" in comment["body"]
                [run] = github_fake.runs_for(REPO)
                assert run["head_sha"] == "3f2a9c1d7e5b4a6f8c0d2e4f6a8b0c1d2e3f4a5b"
                # The fixture's job started days before "now": the policy shows it as silent, not failed.
                assert run["name"] == "OOT Backends" and run.get("conclusion") != "failure"
                assert github_fake.calls("installation"), "the installation was looked up with the App JWT"
                body = json.dumps(github_payload("issues.opened")).encode()
                hook = await http.post(WEBHOOK_PATH, content=body, headers=signed_headers(
                    body, SECRET, event="issues", delivery="d-full"))
                assert hook.status_code == 200
        finally:
            await services.settled()
            services.warehouse.command(f"DROP DATABASE IF EXISTS {services.warehouse.database}")


async def test_repository_without_the_app_gets_nothing_and_is_not_retried(
        bot: Bot, warehouse: Warehouse, github_fake: GitHubFake) -> None:
    github_fake.installed_repos = {"pytorch/vision"}
    await results(bot, warehouse, record(pr=PR, sha=SHA1, conclusion="failure"))
    assert github_fake.writes() == []
    assert [r.status for r in github_fake.calls("installation")] == [404]
    assert bot.writer.failed_prs() == []
    # Another repository where the App is installed is served as usual.
    await results(bot, warehouse, record(pr=5, sha=SHA2, upstream="pytorch/vision"))
    assert len(github_fake.bot_comments("pytorch/vision", 5)) == 1


L3_ALLOWLIST = "L4:\n  - acme/torch-acme\nL3:\n  npu:\n    acme/npu: [alice]\n"
ADD_NPU = "- add the label `ciflow/crcr/npu` to opt this PR into **acme/npu**\n"
WAIT_NPU = "- `ciflow/crcr/npu` is on this PR: waiting for **acme/npu** to report\n"


async def test_an_l3_label_updates_the_comment_and_the_page_shows_the_same(
        warehouse: Warehouse, github_fake: GitHubFake, app_private_key: str, tmp_path: Path) -> None:
    from bot.render import warehouse_renderer
    from oot_hud.allowlist_source import AllowlistSource, parse_location
    from tests.test_pr_page import build_app, get, pre

    allowlist_file = tmp_path / "allowlist.yml"
    allowlist_file.write_text(L3_ALLOWLIST)
    source = AllowlistSource(parse_location(str(allowlist_file)), refresh_seconds=3600)
    await source.start()
    page_app = build_app(warehouse, tmp_path)  # dry run: the page shows the would-be comment
    services = page_app.state.services
    services.allowlist = source
    public = services.settings.public_url
    bot = Bot(warehouse=warehouse, app_id=APP_ID, private_key=app_private_key, webhook_secret=SECRET,
              api_url=FAKE_API, app_slug=APP_SLUG, debounce=0.0, pace=0.0, public_url=public,
              policy=services.pr_policy,  # the same rules object the page renders with
              render=warehouse_renderer(warehouse, silence_hours=6.0, public_url=public, now=lambda: NOW,
                                        policy=services.pr_policy))
    await bot.start()

    async def posted_and_shown() -> str:
        [comment] = github_fake.bot_comments(REPO, PR)
        page = await get(page_app, f"/oot/pr/{REPO}/{PR}")
        assert pre(page.text, "dry-run-comment") == comment["body"], "the page shows what the bot posted"
        return str(comment["body"])

    try:
        await webhook(bot, "pull_request.opened")  # no labels
        await results(bot, warehouse, record(pr=PR, sha=SHA1))  # the L4 passes; acme/npu has not reported
        assert ADD_NPU in await posted_and_shown()

        await webhook(bot, "pull_request.labeled")  # ciflow/crcr/npu added: the comment is edited in place
        body = await posted_and_shown()
        assert WAIT_NPU in body and "add the label" not in body

        # Another label changes nothing GitHub shows: no render, no call.
        calls, cycles = len(github_fake.requests), bot.writer.slot(REPO, PR).cycles
        other = github_payload("pull_request.labeled")
        other["label"] = {"name": "module: cuda"}
        other["pull_request"]["updated_at"] = "2026-11-20T12:52:00Z"
        await webhook(bot, "pull_request.labeled", other)
        assert (len(github_fake.requests), bot.writer.slot(REPO, PR).cycles) == (calls, cycles)

        await webhook(bot, "pull_request.unlabeled")  # removed again
        assert ADD_NPU in await posted_and_shown()
        # The check run's summary carries the same lines: it follows the label too.
        assert [w.kind for w in github_fake.writes()] == ["comment.create", "check.create"] + [
            "comment.update", "check.update"] * 2
        summaries = [w.json["output"]["summary"] for w in github_fake.writes() if w.kind.startswith("check")]
        assert [ADD_NPU in text for text in summaries] == [True, False, True]
        assert WAIT_NPU in summaries[1]
    finally:
        await bot.stop()
        await source.stop()


async def test_an_allowlist_change_renders_the_open_prs_again(
        warehouse: Warehouse, github_fake: GitHubFake, app_private_key: str, tmp_path: Path) -> None:
    """The allowlist decides which backends gate (README, blocking rules): when the copy in use changes, every
    open PR with recent results is rendered again at once, not at its next result. Closed PRs are left alone."""
    from datetime import timedelta

    from bot.pr_state import PrHead
    from bot.render import warehouse_renderer
    from oot_hud.allowlist_source import AllowlistSource, parse_location
    from tests.github_fake import INSTALLATION_ID
    from tests.test_pr_page import build_app

    allowlist_file = tmp_path / "allowlist.yml"
    allowlist_file.write_text("L4:\n  - acme/torch-acme\n")
    source = AllowlistSource(parse_location(str(allowlist_file)), refresh_seconds=3600)
    await source.start()
    services = build_app(warehouse, tmp_path).state.services
    services.allowlist = source
    bot = Bot(warehouse=warehouse, app_id=APP_ID, private_key=app_private_key, webhook_secret=SECRET,
              api_url=FAKE_API, app_slug=APP_SLUG, debounce=0.0, pace=0.0, public_url=PUBLIC,
              policy=services.pr_policy,
              render=warehouse_renderer(warehouse, silence_hours=6.0, public_url=PUBLIC, policy=services.pr_policy))
    source.on_change(bot.allowlist_changed)
    await bot.start()
    recent = datetime.now(UTC) - timedelta(hours=1)
    closed = PR + 1
    try:
        await results(bot, warehouse, record(pr=PR, sha=SHA1, conclusion="failure", received=recent),
                      record(pr=closed, sha=SHA2, conclusion="failure", received=recent))
        bot.state.record_head(PrHead(REPO, closed, SHA2, "closed", "main", INSTALLATION_ID, datetime.now(UTC)))
        checks = {number: github_fake.runs_for(REPO, sha) for number, sha in ((PR, SHA1), (closed, SHA2))}
        assert [run["conclusion"] for runs in checks.values() for run in runs] == ["failure", "failure"], checks

        # Upstream moves acme/torch-acme down to L2: it no longer gates. Nothing else happens to the PR.
        writes = len(github_fake.writes())
        [before] = [dict(comment) for comment in github_fake.bot_comments(REPO, PR)]
        allowlist_file.write_text("L2:\n  - acme/torch-acme\n")
        assert await source.refresh("test")
        await bot.drain()
        [run] = github_fake.runs_for(REPO, SHA1)
        assert run["conclusion"] != "failure" and "acme/torch-acme" in run["output"]["summary"], run
        [after] = github_fake.bot_comments(REPO, PR)
        assert after["id"] == before["id"] and after["body"] != before["body"], "edited in place"
        assert [w.kind for w in github_fake.writes()[writes:]] == ["comment.update", "check.update"], (
            "the open PR is written once (its comment's headline follows the gate); the closed one is not touched")

        # The same copy read again is no change: no render, no call.
        requests = len(github_fake.requests)
        assert await source.refresh("test again")
        await bot.drain()
        assert len(github_fake.requests) == requests
    finally:
        await bot.stop()
        await source.stop()
