"""The pages in a real browser (Debian's Chromium driven by Playwright): chips' colours, links, the
sparkline, no horizontal overflow at desktop and phone widths, live and published (file://). Screenshots
go to ``test-artifacts/screenshots/``."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from oot_hud.allowlist_source import AllowlistSource, parse_location
from oot_hud.publish import render_site, write_site
from sql.warehouse import Warehouse
from tests.conftest import RELAY_FIXTURES, relay_payload
from tests.readpath_app import TOKEN, build_app, serve
from tests.readpath_data import record, row

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
# The stylesheet's fixed colours, as the browser computes them.
COLOURS = {"success": "rgb(26, 127, 55)", "failure": "rgb(207, 34, 46)", "timed_out": "rgb(154, 103, 0)",
           "cancelled": "rgb(154, 103, 0)", "running": "rgb(9, 105, 218)", "no_report": "rgb(89, 99, 110)"}
NOW = datetime.now(UTC).replace(microsecond=0)

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (scripts/ensure-chromium)")


# The fixtures' backends as registered, one registered L4 backend that never reports, the relay's canary.
ALLOWLIST = """\
L2:
  - riscv-lab/pytorch-ci
L3:
  npu:
    contoso/pytorch-npu: [npu-oncall]
L4:
  - acme-accel/torch-acme: carol, dave
  - quiet/gate
"""
CANARY = "pytorch/crcr-test"


@pytest.fixture
def site(warehouse: Warehouse, tmp_path: Path) -> Iterator[str]:
    """A live server on loopback holding the relay fixtures (through ingest) plus a week of history, with an
    allowlist file and a canary configured."""
    history = []
    for day in range(7):
        for pr in range(3):
            history.append(record(backend="acme-accel/torch-acme", pr=900 + day * 10 + pr, sha=f"{day}{pr}" * 20,
                                  received=NOW - timedelta(days=day, hours=1),
                                  conclusion="failure" if (day + pr) % 4 == 0 else "success"))
    for shard in range(1, 5):  # numbered shards: one column, opening into each
        history.append(record(backend="acme-accel/torch-acme", pr=900, sha="00" * 20, job=f"shard-{shard}",
                              received=NOW - timedelta(hours=1), conclusion="failure" if shard == 2 else "success"))
    for pr in range(2000, 2050):  # older PRs: a second page
        history.append(record(backend="acme-accel/torch-acme", pr=pr, sha=f"{pr:040x}",
                              received=NOW - timedelta(days=5, minutes=pr - 2000)))
    history.append(record(backend="acme-accel/torch-acme", pr=990, job="stuck", status="in_progress",
                          started=NOW - timedelta(hours=12), received=NOW - timedelta(hours=12)))
    history.append(record(backend="long-" + "n" * 90 + "/backend-" + "m" * 90, level="L3",
                          job="job-" + "x" * 300, received=NOW - timedelta(hours=2)))
    history += [record(backend=CANARY, pr=880, job=job, conclusion=conclusion, received=NOW - timedelta(hours=1))
                for job, conclusion in (("build", "success"), ("t-xfail", "failure"), ("t-xtimeout", "timed_out"))]
    warehouse.insert_job_rows([row(r) for r in history])
    allowlist = tmp_path / "allowlist.yml"
    allowlist.write_text(ALLOWLIST)
    app = build_app(warehouse, tmp_path, allowlist=str(allowlist), canary_backends=CANARY)
    source = AllowlistSource(parse_location(str(allowlist)), refresh_seconds=3600)
    with concurrent.futures.ThreadPoolExecutor(1) as once:  # read once, outside the test's running loop
        assert once.submit(asyncio.run, source.refresh()).result()
    app.state.services.allowlist = source
    with serve(app) as url:
        for name in sorted(p.stem for p in RELAY_FIXTURES.glob("[0-9]*.json")):
            payload = relay_payload(name)
            if name.startswith("10_"):
                payload["untrusted"]["callback_payload"]["workflow"]["started_at"] = \
                    (NOW - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
            response = httpx.post(f"{url}/api/oot/results", json=payload, headers={"X-OOT-Relay-Token": TOKEN})
            assert response.status_code == 200
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def no_horizontal_overflow(page: Any) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"page is {width[0]}px wide in a {width[1]}px viewport"


def chip_colours(page: Any) -> dict[str, set[str]]:
    found = page.evaluate("""() => Array.from(document.querySelectorAll('[data-verdict]')).map(
        el => [el.dataset.verdict, getComputedStyle(el).color])""")
    colours: dict[str, set[str]] = {}
    for verdict, colour in found:
        colours.setdefault(verdict, set()).add(colour)
    return colours


@pytest.mark.parametrize("device", list(WIDTHS))
def test_live_pages(browser: Any, site: str, device: str) -> None:
    width, height = WIDTHS[device]
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda req: None if req.url.startswith(site) else errors.append(f"request {req.url}"))
    try:
        page.goto(f"{site}/oot")
        assert page.title() == "OOT backends, last 7 days · oot-hud"
        no_horizontal_overflow(page)
        bands = page.evaluate("""() => Array.from(document.querySelectorAll('[data-band]')).map(
            el => [el.dataset.band, getComputedStyle(el).color])""")
        assert ("red", COLOURS["failure"]) in [tuple(b) for b in bands]
        if device == "desktop":
            polylines = page.locator("svg.spark polyline")
            assert polylines.count() >= 2
            box = page.locator("svg.spark").first.bounding_box()
            assert box and box["width"] == 120 and box["height"] == 24
        # the allowlist: a registered backend that never reported, last in its section; the canary's line
        silent = page.locator('tr[data-silent=true][data-backend="quiet/gate"]')
        assert silent.is_visible() and "no results in the last 7 days" in silent.inner_text()
        assert page.locator('table[data-level=L4] tbody tr').last.get_attribute("data-backend") == "quiet/gate"
        health = page.locator('[data-canary="pytorch/crcr-test"]')
        assert health.is_visible() and health.get_attribute("data-state") == "healthy"
        assert "Newest PRs: 1 of 1 came back with the expected outcomes" in health.inner_text()
        assert health.locator(".chip").evaluate("el => getComputedStyle(el).color") == COLOURS["success"]
        assert page.locator('tr[data-backend="pytorch/crcr-test"]').count() == 0  # not in a ranking
        assert "ciflow/crcr/npu" in page.locator('tr[data-backend="contoso/pytorch-npu"]').inner_text()
        shot(page, f"summary-{device}")

        page.get_by_role("link", name="acme-accel/torch-acme").click()
        page.wait_for_url("**/oot/acme-accel/torch-acme?days=7")
        assert "acme-accel/torch-acme" in page.locator("h1").inner_text()
        registration = page.locator("[data-registration=registered]")
        assert registration.is_visible() and "on-call: carol, dave" in registration.inner_text()
        assert registration.locator("a").count() == 0  # on-calls are plain text
        no_horizontal_overflow(page)
        colours = chip_colours(page)
        for verdict, seen in colours.items():
            assert seen == {COLOURS[verdict]}, verdict
        assert {"success", "failure", "running", "no_report"} <= set(colours)
        assert page.locator("tr[data-superseded=true]").count() >= 1
        assert page.locator("table[data-section=trunk] tbody tr").count() == 2
        cards = page.locator(".card")
        assert cards.count() == 6 and all(cards.nth(i).is_visible() for i in range(6))
        shards = page.locator("details.shards").first
        assert "1 of 4 failed" in shards.locator("summary").inner_text()
        assert not shards.locator("li").first.is_visible()
        shards.locator("summary").click()
        assert shards.locator("li").count() == 4 and shards.locator("li").first.is_visible()
        assert shards.locator("li a[href$='/job/9001shard-1']").count() == 0  # not a numeric check-run id
        no_horizontal_overflow(page)
        assert "[![OOT PR pass rate](" in page.locator("pre.snippet").inner_text()
        shot(page, f"backend-{device}")
        page.get_by_role("link", name="older PRs →").click()
        page.wait_for_url("**/oot/acme-accel/torch-acme?days=7&page=2")
        assert "page 2 of 2" in page.locator("nav.pager").inner_text()
        no_horizontal_overflow(page)
        page.get_by_role("link", name="nightly").first.click()
        page.wait_for_url("**/oot/acme-accel/torch-acme?days=7&event=nightly")
        assert page.locator("table[data-section=trunk] tbody tr").count() == 1
        assert page.locator(".card").count() == 0
        page.goto(f"{site}/oot/acme-accel/torch-acme")

        page.get_by_role("link", name="30d").click()
        page.wait_for_url("**/oot/acme-accel/torch-acme?days=30")
        page.get_by_role("link", name="OOT backends").click()
        page.wait_for_url("**/oot")

        # the trends: an SVG that fits the viewport, a hover title per point, the numbers one click away
        page.get_by_role("link", name="90 days").click()
        page.wait_for_url("**/oot/trends?days=90")
        no_horizontal_overflow(page)
        acme = page.locator('[data-trend="acme-accel/torch-acme"]')
        chart = acme.locator("svg.trend").bounding_box()
        assert chart and 0 < chart["width"] <= width and chart["height"] > 0.25 * chart["width"]
        assert acme.locator("svg.trend polyline.pr").count() >= 1  # a week of daily PR history
        assert "· PR: " in acme.locator("svg.trend circle.pr title").first.text_content()
        table = acme.locator("table.trend-table")
        assert not table.is_visible()
        acme.locator("details.numbers summary").click()
        assert table.is_visible() and table.locator("tbody tr").count() >= 7
        shot(page, f"trends-{device}")
        page.goto(f"{site}/oot/long-{'n' * 90}/backend-{'m' * 90}")
        no_horizontal_overflow(page)
        shot(page, f"backend-long-names-{device}")
        assert not errors, errors
    finally:
        context.close()


def test_published_site_from_file_url(browser: Any, warehouse: Warehouse, site: str, tmp_path: Path) -> None:
    out = tmp_path / "any" / "sub" / "path"
    write_site(render_site(warehouse, ranges=(1, 7, 30), now=NOW, silence_hours=6), out)
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto((out / "index.html").as_uri())
        no_horizontal_overflow(page)
        page.get_by_role("link", name="contoso/pytorch-npu").click()
        page.wait_for_url("**/7d/contoso/pytorch-npu/index.html")
        assert page.locator("[data-verdict=timed_out]").count() == 1
        assert chip_colours(page)["timed_out"] == {COLOURS["timed_out"]}
        page.get_by_role("link", name="1d").click()
        page.wait_for_url("**/1d/contoso/pytorch-npu/index.html")
        page.get_by_role("link", name="last day").click()
        page.wait_for_url("**/1d/index.html")
        shot(page, "published-summary-1d-phone")
        assert all(url.startswith("file://") for url in requests), requests
    finally:
        context.close()
