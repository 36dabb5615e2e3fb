"""The PR page: real HTTP end to end (fixtures posted to ingest), dry-run output, bad input, escaping, browser."""

from __future__ import annotations

import html
import re
import shutil
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from ingest.stores.embedded import EmbeddedStore
from oot_hud.app import create_app
from oot_hud.pr_pages import pr_page_clock
from oot_hud.services import Services
from oot_hud.settings import Settings
from renderers.gfm import ALLOWED_TAGS
from renderers.markdown import render_check_run, render_pr_comment
from renderers.pr_view import build_pr_view
from sql.pr_results import fetch_pr_rows
from sql.records import item_to_row
from sql.warehouse import Warehouse, WarehouseError
from tests.conftest import RELAY_FIXTURES, relay_payload
from tests.readpath_app import serve

TOKEN = "pr-page-relay-token-0123456789"
NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
PUBLIC = "https://hud.example"
PAGE = "/oot/pr/pytorch/pytorch/170001"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"  # git-ignored


def build_app(warehouse: Any, tmp_path: Path, **settings: Any) -> FastAPI:
    config = Settings(data_dir=tmp_path / "unused", relay_tokens=[TOKEN], public_url=PUBLIC, **settings)
    services = Services(settings=config, warehouse=warehouse, store=EmbeddedStore(warehouse, commit_window_ms=1),
                        relay_tokens=[TOKEN])
    app = create_app(config, services=services)
    app.state.services = services  # ASGITransport runs no lifespan
    app.dependency_overrides[pr_page_clock] = lambda: NOW
    return app


async def get(app: FastAPI, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.get(path)


def pre(page: str, css_class: str) -> str:
    match = re.search(rf'<pre class="{css_class}">(.*?)</pre>', page, re.S)
    assert match, f"no <pre class={css_class}>"
    return html.unescape(match.group(1))


def test_end_to_end_fixtures_over_http(warehouse: Warehouse, tmp_path: Path) -> None:
    """Post every relay fixture to the ingest endpoint, then read the PR page over real HTTP."""
    app = build_app(warehouse, tmp_path)
    with serve(app) as base, httpx.Client(base_url=base, timeout=30) as client:
        for path in sorted(RELAY_FIXTURES.glob("[0-9]*.json")):
            response = client.post("/api/oot/results", json=relay_payload(path.name),
                                   headers={"X-OOT-Relay-Token": TOKEN})
            assert response.status_code == 200, response.text
        page = client.get(PAGE)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    body = page.text
    assert "as of commit <code>7b1e4d2c9a8f</code>" in body and "the newest result's commit" in body
    assert body.count('<tr class="job"') == 1  # current head: one running L4 job
    assert body.count('<tr class="job superseded"') == 4  # older head: 2 acme jobs, npu (2 legs), riscv
    assert 'data-check-status="in_progress"' in body
    # Dry run (no App credentials): the exact comment and check run the bot would post.
    view = build_pr_view(fetch_pr_rows(warehouse, "pytorch/pytorch", 170001), now=NOW, silence_hours=6,
                         public_url=PUBLIC)
    assert pre(body, "dry-run-comment") == render_pr_comment(view)
    check = render_check_run(view)
    assert pre(body, "dry-run-summary") == check.summary and pre(body, "dry-run-text") == check.text
    assert f"<dt>status</dt><dd>{check.status}</dd>" in body


async def test_no_dry_run_section_with_app_credentials(warehouse: Warehouse, tmp_path: Path) -> None:
    app = build_app(warehouse, tmp_path, github_app_id="123", github_private_key="-----BEGIN KEY-----")
    response = await get(app, PAGE)
    assert response.status_code == 200
    assert 'id="dry-run"' not in response.text and "dry-run-comment" not in response.text


async def test_empty_pr_has_a_clear_empty_state(warehouse: Warehouse, tmp_path: Path) -> None:
    response = await get(build_app(warehouse, tmp_path), "/oot/pr/pytorch/pytorch/5")
    assert response.status_code == 200
    assert "No out-of-tree backend has reported results for this pull request yet." in response.text
    assert "No comment would be posted" in response.text


@pytest.mark.parametrize("path", [
    "/oot/pr/pytorch/pytorch/0", "/oot/pr/pytorch/pytorch/-1", "/oot/pr/pytorch/pytorch/abc",
    "/oot/pr/pytorch/pytorch/1.5", "/oot/pr/pytorch/pytorch/99999999999999999999",
    "/oot/pr/py%20torch/pytorch/1", "/oot/pr/pytorch/..%2F/1", "/oot/pr/pytorch/%3Cscript%3E/1",
])
async def test_bad_addresses_are_400(warehouse: Warehouse, tmp_path: Path, path: str) -> None:
    response = await get(build_app(warehouse, tmp_path), path)
    if "%2F" in path:  # decoded to another path shape: no route matches
        assert response.status_code == 404
        return
    assert response.status_code == 400, response.text
    assert "must be" in response.text and "<script>" not in response.text


async def test_warehouse_failure_is_503_without_details(tmp_path: Path, engine_dir: Path) -> None:
    class BrokenWarehouse:
        kind = "embedded"

        def query(self, *args: Any, **kwargs: Any) -> Any:
            raise WarehouseError("connection refused to http://user:secret@db:8123")

        query_aware = query  # the PR rows' read (sql/pr_results.py)

        def side_reader(self) -> Any:
            return self  # the trunk check's connection fails the same way

        def ping(self) -> bool:
            return False

    response = await get(build_app(BrokenWarehouse(), tmp_path), PAGE)
    assert response.status_code == 503 and "secret" not in response.text


HOSTILE = "</details><script>alert(1)</script><img src=x onerror=alert(1)> @octocat [x](javascript:alert(1)) \u202e"


def insert_hostile(warehouse: Warehouse) -> None:
    item = {"key": "k1", "downstream_repo": "evil/repo", "downstream_level": "L4", "event_type": "pull_request",
            "delivery_id": "d", "upstream_repo": "pytorch/pytorch", "pr_number": 170001, "head_sha": "a" * 40,
            "workflow_name": HOSTILE, "job_name": HOSTILE * 50, "check_run_id": HOSTILE, "run_attempt": 1,
            "status": "completed", "conclusion": "failure", "workflow_url": "javascript:alert(1)",
            "artifact_url": "https://ok.example/a\"><script>x</script>", "received_at": "2026-11-20T10:00:00Z",
            "first_received_at": "2026-11-20T10:00:00Z", "completed_at": "2026-11-20T10:00:00Z"}
    warehouse.insert_job_rows([item_to_row(item, version=1)])


async def test_hostile_strings_are_escaped_on_the_page(warehouse: Warehouse, tmp_path: Path) -> None:
    insert_hostile(warehouse)
    response = await get(build_app(warehouse, tmp_path), PAGE)
    assert response.status_code == 200
    page = response.text
    assert "<script" not in page and "<img" not in page and "\u202e" not in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    # the page's own links, and those of the comment rendered as GitHub would (to the pages, at public_url)
    assert hrefs and all(h.startswith(("/oot", "https://github.com/", "https://ok.example/",
                                       "https://hud.example/oot/")) for h in hrefs)
    assert not any("javascript" in h for h in hrefs)
    assert "&lt;/details&gt;&lt;script&gt;" in page  # the source, shown as text
    # the rendered comment: only the sanitiser's tags, no event attribute, the hostile name inert text
    rendered = page.split('<div class="gfm" data-rendered="comment">')[1].split('<details class="source">')[0]
    seen: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Elements(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            seen.append((tag, attrs))

    Elements().feed(rendered)
    assert {tag for tag, _ in seen} <= ALLOWED_TAGS and any(tag == "table" for tag, _ in seen)
    assert not [name for _, attrs in seen for name, _ in attrs if name.startswith("on") or name == "style"]
    assert "&lt;img src=x onerror" in rendered  # the hostile job name: inert text
    assert page.count('<details class="source">') == 3  # comment, output.summary, output.text


@pytest.mark.skipif(shutil.which("chromium") is None and not Path("/usr/bin/chromium").exists(),
                    reason="Debian's chromium is not installed (.ci/run installs it)")
def test_pr_page_in_a_browser(warehouse: Warehouse, tmp_path: Path) -> None:
    """Headless Chromium: chips and links render, and the page itself never scrolls sideways on a phone."""
    from playwright.sync_api import sync_playwright

    insert_hostile(warehouse)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    app = build_app(warehouse, tmp_path)
    dialogs: list[str] = []
    with serve(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            for name, width in (("desktop", 1280), ("phone", 390)):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.goto(base + PAGE)
                assert page.locator("tr.job").count() == 1
                chip = page.locator('tr.job [data-verdict="failure"]').first
                assert chip.inner_text() == "failure"
                assert "rgb(207, 34, 46)" in chip.evaluate("e => getComputedStyle(e).color")  # red
                rendered = page.locator("div.gfm[data-rendered=comment]")
                assert rendered.locator("table").count() >= 1 and rendered.is_visible()  # as GitHub shows it
                source = page.locator("pre.dry-run-comment")
                assert not source.is_visible()
                page.locator("details.source summary").first.click()  # the raw Markdown, one click away
                assert source.is_visible() and source.inner_text().startswith("<!-- oot-hud:pr-comment -->")
                overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
                assert not dialogs  # no injected script ran
                page.screenshot(path=str(SCREENSHOTS / f"pr-page-{name}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
