"""The upstream allowlist: the parser (table), its locations, and the source (file, a real loopback URL,
the App through the GitHub fake, the disk cache, periodic and push refreshes, malformed copies)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from bot.service import Bot
from bot.webhook import WEBHOOK_PATH, webhook_api
from oot_hud.allowlist_source import AllowlistSource, Location, parse_location
from oot_hud.app import create_app
from oot_hud.services import build_allowlist
from oot_hud.settings import Settings
from policy.allowlist import Allowlist, AllowlistEntry, AllowlistError, parse_allowlist
from sql.warehouse import Warehouse
from tests.conftest import github_payload, relay_payload
from tests.github_fake import APP_ID, APP_SLUG, FAKE_API, GitHubFake, signed_headers
from tests.servers import serve

FULL = """\
L1:
  - onboard/one
L2:
  - watch/two: alice, bob
  - watch/plain
L3:
  npu:
    ascend/torch-npu: [carol, '@dave']
  xpu:
    intel/torch-xpu: null
L4:
  - acme-accel/torch-acme: [erin]
  - gate/keeper: frank
"""
V1 = "L4:\n  - acme-accel/torch-acme: [erin]\n"
V2 = "L4:\n  - acme-accel/torch-acme: [erin]\n  - gate/keeper\nL3:\n  npu:\n    ascend/torch-npu: [carol]\n"
MALFORMED = "L4:\n  - not a repo\n"


def entries(text: str) -> list[tuple[str, str, tuple[str, ...], str | None]]:
    return [(e.repo, e.level, e.oncalls, e.device) for e in parse_allowlist(text).entries]


# ---- parser -------------------------------------------------------------------------------------------

def test_the_full_format_parses_into_levels_oncalls_and_devices() -> None:
    assert entries(FULL) == [
        ("onboard/one", "L1", (), None),
        ("watch/two", "L2", ("alice", "bob"), None),
        ("watch/plain", "L2", (), None),
        ("ascend/torch-npu", "L3", ("carol", "dave"), "npu"),
        ("intel/torch-xpu", "L3", (), "xpu"),
        ("acme-accel/torch-acme", "L4", ("erin",), None),
        ("gate/keeper", "L4", ("frank",), None),
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("L4: []", []),
    ("L4:\nL1:\n  - a/b", [("a/b", "L1", (), None)]),  # a level left empty is no level
    ("L2:\n  - ' a/b/ '", [("a/b", "L2", (), None)]),  # spaces and slashes around a repo are trimmed
    ("L4:\n  - a/b: ''", [("a/b", "L4", (), None)]),
    ("L4:\n  - a/b: 'x, , y'", [("a/b", "L4", ("x", "y"), None)]),  # empty names dropped
    ("L4:\n  - a/b: [pytorch/npu-team]", [("a/b", "L4", ("pytorch/npu-team",), None)]),  # a team
    ("L3:\n  npu:\n    a/b: 'x, y'", [("a/b", "L3", ("x", "y"), "npu")]),
    ("L3:\n  npu: {}", []),
    ("L1: [a/b]\nL4: [c/d]", [("a/b", "L1", (), None), ("c/d", "L4", (), None)]),
])
def test_valid_variants(text: str, expected: list[tuple[str, str, tuple[str, ...], str | None]]) -> None:
    assert entries(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("", "got empty"),
    ("- a/b", "must be a mapping"),
    ("l4: [a/b]", "unknown top-level key 'l4'"),  # a typo must not drop the gating level
    ("L4: a/b", "L4 must be a list of repos, got a string"),
    ("L4: [a]", "L4[0]: 'a' is not an owner/repo name"),
    ("L4: ['a/b/c']", "is not an owner/repo name"),
    ("L4: [3]", "L4[0] must be 'org/repo'"),
    ("L4:\n  - {a/b: x, c/d: y}", "exactly one repo"),
    ("L4:\n  - a/b: {x: 1}", "on-calls must be"),
    ("L4:\n  - a/b: [x, 3]", "on-calls must be"),
    ("L4:\n  - a/b: 'not a login!'", "is not a GitHub login"),
    ("L4:\n  - a/b: '-leading'", "is not a GitHub login"),
    ("L1: [a/b]\nL4: [A/B]", "L4[0]: repo 'A/B' is already listed at L1[0]"),  # one level per repo, any case
    ("L3: [a/b]", "L3 must map devices to repos"),
    ("L3:\n  npu: [a/b]", "L3.npu must map repos to on-calls"),
    ("L3:\n  'bad device':\n    a/b: []", "L3 device 'bad device'"),
    ("L3:\n  npu:\n    a/b: [x]\n  xpu:\n    a/b: [y]", "already listed at L3.npu.a/b"),
    ("L3:\n  npu:\n    a/b: [x]\n    a/b: [y]", "line 4: key 'a/b' appears twice"),
    ("L4: [a/b]\nL4: [c/d]", "key 'L4' appears twice"),
    ("L4: [a/b", "not valid YAML"),
    ("L4: !!python/object:os.system [a/b]", "not valid YAML"),  # safe loading only
])
def test_malformed_files_are_refused_saying_where(text: str, message: str) -> None:
    with pytest.raises(AllowlistError) as caught:
        parse_allowlist(text)
    assert message in str(caught.value)


def test_an_oversized_file_is_refused() -> None:
    with pytest.raises(AllowlistError, match="larger than"):
        parse_allowlist("L1:\n" + "  - a/b\n" * 200_000)


def test_lookups_ignore_case_and_devices_give_labels() -> None:
    allowlist = parse_allowlist(FULL)
    assert allowlist.level_of("ACME-Accel/Torch-Acme") == "L4" and allowlist.gates("gate/keeper")
    assert not allowlist.gates("ascend/torch-npu") and allowlist.level_of("nobody/here") is None
    assert allowlist.oncalls_of("watch/two") == ("alice", "bob") and allowlist.oncalls_of("x/y") == ()
    assert [e.repo for e in allowlist.at_level("L2")] == ["watch/two", "watch/plain"]
    assert {device: [e.repo for e in found] for device, found in allowlist.devices().items()} == {
        "npu": ["ascend/torch-npu"], "xpu": ["intel/torch-xpu"]}
    npu = allowlist.entry("ascend/torch-npu")
    assert npu is not None and npu.label() == "ciflow/crcr/npu" and npu.label("ciflow/oot/") == "ciflow/oot/npu"
    assert AllowlistEntry("a/b", "L4").label() is None
    assert len(allowlist) == 7 and Allowlist.of(allowlist.entries) == allowlist


# ---- locations ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("/etc/oot/allowlist.yml", Location("file", "/etc/oot/allowlist.yml")),
    ("github:pytorch/pytorch", Location("github", "pytorch/pytorch", repo="pytorch/pytorch")),
    ("github:pytorch/pytorch:ci/list.yml", Location("github", "pytorch/pytorch", repo="pytorch/pytorch",
                                                    path="ci/list.yml")),
    ("https://github.com/pytorch/pytorch/blob/main/.github/allowlist.yml",
     Location("url", "https://raw.githubusercontent.com/pytorch/pytorch/main/.github/allowlist.yml",
              repo="pytorch/pytorch", ref="main")),
    ("https://raw.githubusercontent.com/pytorch/pytorch/main/.github/allowlist.yml",
     Location("url", "https://raw.githubusercontent.com/pytorch/pytorch/main/.github/allowlist.yml",
              repo="pytorch/pytorch", ref="main")),
    ("http://127.0.0.1:9/list.yml", Location("url", "http://127.0.0.1:9/list.yml")),
])
def test_locations(text: str, expected: Location) -> None:
    assert parse_location(text) == expected


def test_bad_locations_and_what_is_shown() -> None:
    for text in ("github:nope", "  "):
        with pytest.raises(ValueError):
            parse_location(text)
    assert parse_location("https://u:secret@example.org/a.yml?token=secret").display == "https://example.org/a.yml"


def test_a_github_location_needs_the_app(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="through the GitHub App"):
        build_allowlist(Settings(data_dir=tmp_path, allowlist="github:pytorch/pytorch"), lambda: None)
    assert build_allowlist(Settings(data_dir=tmp_path), lambda: None) is None  # not configured: nothing


# ---- the source: a file -------------------------------------------------------------------------------

async def test_a_file_is_read_refreshed_and_a_malformed_copy_keeps_the_last_good(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "allowlist.yml"
    path.write_text(V1)
    source = AllowlistSource(parse_location(str(path)), refresh_seconds=3600)
    await source.start()
    try:
        assert source.current is not None and [e.repo for e in source.current.entries] == ["acme-accel/torch-acme"]
        assert source.status.error is None and source.status.loaded_at is not None
        path.write_text(V2)
        assert await source.refresh()
        assert source.current is not None and source.current.gates("gate/keeper")
        good = source.current
        path.write_text(MALFORMED)
        assert not await source.refresh()
        assert source.current is good, "the last good copy stays in use"
        assert source.status.error is not None and "L4[0]" in source.status.error
        assert "allowlist_refresh_failed" in caplog.text and "kept=True" in caplog.text
        path.unlink()
        assert not await source.refresh() and source.current is good
        path.write_text(V1)
        assert await source.refresh() and source.status.error is None
        assert source.current is not None and not source.current.gates("gate/keeper")
    finally:
        await source.stop()


async def test_a_missing_file_leaves_no_allowlist(tmp_path: Path) -> None:
    source = AllowlistSource(parse_location(str(tmp_path / "absent.yml")), refresh_seconds=3600)
    await source.start()
    try:
        assert source.current is None and source.status.error is not None
    finally:
        await source.stop()


async def test_the_periodic_refresh_picks_up_a_change(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yml"
    path.write_text(V1)
    source = AllowlistSource(parse_location(str(path)), refresh_seconds=0.05)
    await source.start()
    try:
        path.write_text(V2)
        await wait_for(lambda: source.current is not None and source.current.gates("gate/keeper"))
    finally:
        await source.stop()


async def test_the_disk_cache_serves_a_restart_while_the_source_is_unreadable(tmp_path: Path) -> None:
    path, cache = tmp_path / "allowlist.yml", tmp_path / "data" / "allowlist.yml"
    path.write_text(V2)
    first = AllowlistSource(parse_location(str(path)), refresh_seconds=3600, cache_path=cache)
    await first.start()
    await first.stop()
    assert cache.read_text() == V2
    path.write_text(MALFORMED)
    second = AllowlistSource(parse_location(str(path)), refresh_seconds=3600, cache_path=cache)
    await second.start()
    try:
        assert second.current is not None and second.current.gates("gate/keeper")
        assert second.status.from_cache and second.status.error is not None
    finally:
        await second.stop()


# ---- the source: a URL on a real loopback server ------------------------------------------------------

class Upstream:
    """A tiny HTTP server holding one file, with an ETag, counting requests."""

    def __init__(self, text: str) -> None:
        self.text, self.status, self.hits, self.not_modified = text, 200, 0, 0
        self.app = FastAPI()
        self.app.get("/allowlist.yml")(self.get)

    async def get(self, request: Request) -> Response:
        self.hits += 1
        if self.status != 200:
            return Response("nope", status_code=self.status)
        etag = f'"{abs(hash(self.text))}"'
        if request.headers.get("if-none-match") == etag:
            self.not_modified += 1
            return Response(status_code=304)
        return Response(self.text, media_type="text/plain", headers={"ETag": etag})


@pytest.fixture
def upstream() -> Iterator[tuple[Upstream, str]]:
    server = Upstream(V1)
    with serve(server.app) as base_url:
        yield server, f"{base_url}/allowlist.yml"


async def test_a_url_is_read_with_etags_and_failures_keep_the_last_good(upstream: tuple[Upstream, str]) -> None:
    server, url = upstream
    source = AllowlistSource(parse_location(url), refresh_seconds=3600)
    await source.start()
    try:
        assert source.current is not None and source.current.gates("acme-accel/torch-acme")
        assert await source.refresh() and server.not_modified == 1, "an unchanged file answers 304"
        server.text = V2
        assert await source.refresh() and source.current.gates("gate/keeper")
        good = source.current
        server.status = 500
        assert not await source.refresh() and source.current is good
        assert source.status.error == "LookupError: GET answered 500"
        server.status, server.text = 200, MALFORMED
        assert not await source.refresh() and source.current is good
        server.text = "L1:\n" + "  - a/b\n" * 200_000
        assert not await source.refresh() and "larger than" in (source.status.error or "")
        assert server.hits == 6
    finally:
        await source.stop()


async def test_an_unreachable_url_leaves_no_allowlist_and_logs_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    from tests.servers import free_port

    url = f"http://127.0.0.1:{free_port()}/allowlist.yml?token=s3cret-token"
    source = AllowlistSource(parse_location(url), refresh_seconds=3600)
    await source.start()
    try:
        assert source.current is None and source.status.error == "ConnectError"
        assert "s3cret-token" not in caplog.text and "allowlist_refresh_failed" in caplog.text
    finally:
        await source.stop()


# ---- push: through the App and the webhook ------------------------------------------------------------

SECRET = "allowlist-secret"


@pytest.fixture
async def app_bot(warehouse: Warehouse, github_fake: GitHubFake,
                  app_private_key: str) -> AsyncIterator[tuple[Bot, AllowlistSource]]:
    holder: list[Bot] = []

    async def through_app(repo: str, path: str) -> str:
        return await holder[0].read_file(repo, path)

    source = AllowlistSource(parse_location("github:pytorch/pytorch"), refresh_seconds=3600,
                             fetch_github=through_app)
    made = Bot(warehouse=warehouse, app_id=APP_ID, private_key=app_private_key, webhook_secret=SECRET,
               api_url=FAKE_API, app_slug=APP_SLUG, debounce=0.0, pace=0.0, allowlist_watch=source)
    holder.append(made)
    github_fake.files[("pytorch/pytorch", ".github/allowlist.yml")] = V1
    await made.start()
    await source.start()
    try:
        yield made, source
    finally:
        await source.stop()
        await made.stop()


async def push(bot: Bot, payload: dict[str, object]) -> httpx.Response:
    app = FastAPI()
    app.include_router(webhook_api(lambda request: bot.receiver))
    body = json.dumps(payload).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        response = await http.post(WEBHOOK_PATH, content=body, headers=signed_headers(
            body, SECRET, event="push", delivery=str(uuid.uuid4())))
    await bot.drain()
    return response


async def test_a_push_touching_the_file_refreshes_it_through_the_app(
        app_bot: tuple[Bot, AllowlistSource], github_fake: GitHubFake) -> None:
    bot, source = app_bot
    assert source.current is not None and not source.current.gates("gate/keeper")
    reads = len(github_fake.calls("contents.get"))
    assert reads == 1, "read once at start, through the installation"
    github_fake.files[("pytorch/pytorch", ".github/allowlist.yml")] = V2

    untouched = github_payload("push.allowlist")
    for commit in [*untouched["commits"], untouched["head_commit"]]:
        commit["modified"] = ["README.md"]
    other_branch = github_payload("push.allowlist")
    other_branch["ref"] = "refs/heads/release/2.9"
    other_repo = github_payload("push.allowlist")
    other_repo["repository"]["full_name"] = "pytorch/vision"
    for payload in (untouched, other_branch, other_repo):
        assert (await push(bot, payload)).status_code == 202
        await source.idle()
    assert len(github_fake.calls("contents.get")) == reads, "pushes that do not touch the file read nothing"

    assert (await push(bot, github_payload("push.allowlist"))).status_code == 202
    await source.idle()
    assert source.current is not None and source.current.gates("gate/keeper")
    assert len(github_fake.calls("contents.get")) == reads + 1

    github_fake.files[("pytorch/pytorch", ".github/allowlist.yml")] = MALFORMED
    await push(bot, github_payload("push.allowlist"))
    await source.idle()
    assert source.current is not None and source.current.gates("gate/keeper"), "malformed: last good kept"
    assert source.status.error is not None


async def test_pushes_are_ignored_without_an_allowlist_watch(warehouse: Warehouse) -> None:
    bot = Bot(warehouse=warehouse, webhook_secret=SECRET, debounce=0.0)
    await bot.start()
    try:
        response = await push(bot, github_payload("push.allowlist"))
        assert response.status_code == 200 and response.json()["status"] == "ignored"
    finally:
        await bot.stop()


async def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10.0
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_the_service_reads_it_through_the_app_and_a_push_refreshes_it(
        engine_dir: Path, github_fake: GitHubFake, app_private_key: str) -> None:
    """The composition root: OOT_HUD_ALLOWLIST=github:… read at start through the App, exposed on the
    services, refreshed by a push delivered to the service's own webhook route, cached on disk; the change
    renders the open PR again."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    github_fake.files[("pytorch/pytorch", ".github/allowlist.yml")] = V1
    settings = Settings(data_dir=engine_dir, clickhouse_database=database, relay_tokens="relay-token",
                        github_app_id=str(APP_ID), github_private_key=app_private_key, github_webhook_secret=SECRET,
                        github_api_url=FAKE_API, github_app_slug=APP_SLUG, allowlist="github:pytorch/pytorch",
                        bot_debounce_seconds=0)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        services = app.state.services
        try:
            assert services.allowlist.current is not None and not services.allowlist.current.gates("gate/keeper")
            github_fake.files[("pytorch/pytorch", ".github/allowlist.yml")] = V2
            body = json.dumps(github_payload("push.allowlist")).encode()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
                posted = await http.post("/api/oot/results", json=relay_payload("01_pr_in_progress"),
                                         headers={"X-OOT-Relay-Token": "relay-token"})
                assert posted.status_code == 200
                await services.settled()
                await services.bot.drain()
                slot = services.bot.writer.slot("pytorch/pytorch", 170001)
                renders = slot.cycles
                hook = await http.post(WEBHOOK_PATH, content=body, headers=signed_headers(
                    body, SECRET, event="push", delivery=str(uuid.uuid4())))
            assert hook.status_code == 202
            await services.bot.drain()
            await services.allowlist.idle()
            assert services.allowlist.current.gates("gate/keeper")
            await services.bot.drain()
            assert slot.cycles == renders + 1, "the changed allowlist rendered the open PR again"
            assert (engine_dir / "allowlist" / f"{database}.yml").read_text() == V2
        finally:
            await services.settled()
            services.warehouse.command(f"DROP DATABASE IF EXISTS {database}")
