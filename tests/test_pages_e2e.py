"""End to end: the relay fixtures go through the real ingest endpoint into the embedded warehouse, then the
live pages and the query API are read back through the same app (httpx ASGITransport)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from sql.warehouse import Warehouse
from tests.conftest import RELAY_FIXTURES, relay_payload
from tests.readpath_app import TOKEN, build_app

# Windows use the server's receive time (now); fixture 10's in_progress job is moved to an hour ago so it
# is "running", while the other in_progress fixtures (2026-11-20) were completed by later callbacks.
PAGE_NOW = datetime.now(UTC)
GOOD_FIXTURES = sorted(p.stem for p in RELAY_FIXTURES.glob("[0-9]*.json"))


class Rows(HTMLParser):
    """Table rows as lists of (tag, attrs) plus their text, enough to assert on a page's structure."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, object]] = []
        self.verdicts: list[str] = []
        self.section = ""
        self.in_body = False
        self._row: dict[str, object] | None = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        data = dict(attrs)
        if tag == "table":
            self.section = data.get("data-section") or data.get("class") or ""
        if tag == "tbody":
            self.in_body = True
        if tag == "tr" and self.in_body:
            self._row = {"section": self.section, "attrs": data, "text": "", "verdicts": [], "bands": []}
            self.rows.append(self._row)
        if self._row is not None and data.get("data-verdict"):
            self._row["verdicts"].append(data["data-verdict"])  # type: ignore[union-attr]
        if self._row is not None and data.get("data-band"):
            self._row["bands"].append(data["data-band"])  # type: ignore[union-attr]

    def handle_data(self, data: str) -> None:
        if self._row is not None:
            self._row["text"] = str(self._row["text"]) + data


def table_rows(html: str, section: str) -> list[dict[str, object]]:
    parser = Rows()
    parser.feed(html)
    return [r for r in parser.rows if r["section"] == section]


@pytest.fixture
async def client(warehouse: Warehouse, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(warehouse, tmp_path, now=PAGE_NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        for name in GOOD_FIXTURES:
            payload = relay_payload(name)
            if name.startswith("10_"):
                started = (PAGE_NOW - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
                payload["untrusted"]["callback_payload"]["workflow"]["started_at"] = started
            response = await http.post("/api/oot/results", json=payload,
                                       headers={"X-OOT-Relay-Token": TOKEN})
            assert response.status_code == 200, (name, response.text)
        yield http


async def test_summary_page_after_ingest(client: httpx.AsyncClient) -> None:
    response = await client.get("/oot")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    rows = table_rows(response.text, "summary")
    names = [str(r["attrs"]["data-backend"]) for r in rows]  # type: ignore[index]
    # by level, L4 first: acme (L4: PR 100 %, its trunk runs failed: 0 %), contoso (L3: 0 %, its leg timed
    # out), riscv (L2: no pass rate, cancelled only)
    assert names == ["acme-accel/torch-acme", "contoso/pytorch-npu", "riscv-lab/pytorch-ci"]
    assert [r["bands"] for r in rows] == [["green", "red"], ["red"], ["grey"]]
    acme = " ".join(str(rows[0]["text"]).split())
    # PR pass rate, its sparkline's title, passed 2, failed 0, timed out 0, cancelled 0, running 1, no report 0,
    # flaky 1, PR jobs 3, then the trunk's own rate (its push and nightly runs failed)
    assert acme.startswith("acme-accel/torch-acme 100.0 % PR pass rate per day: ")
    assert "100% 2 0 0 0 1 0 1 3 0.0 % " in acme
    positions = [response.text.index(f'<section id="level-{level}">') for level in ("L4", "L3", "L2")]
    assert positions == sorted(positions) and "L4: gates merges" in response.text
    assert "<svg" in response.text and 'href="/oot/acme-accel/torch-acme?days=7"' in response.text
    assert '<meta http-equiv="refresh" content="60">' in response.text  # live pages reload; no script
    assert "<script" not in response.text and 'href="/oot/trends?days=90"' in response.text
    counts = response.text.split('data-counts="levels">')[1].split("</p>")[0]
    assert [c.split("</span>")[1].strip(" ·") for c in counts.split('<span class="chip chip-level')[1:]] == [
        "1", "1", "1"]


async def test_backend_matrix_after_ingest(client: httpx.AsyncClient) -> None:
    response = await client.get("/oot/acme-accel/torch-acme", params={"days": "7"})
    assert response.status_code == 200
    prs = table_rows(response.text, "prs")
    assert [(" ".join(str(r["text"]).split())[:15], r["attrs"].get("data-superseded")) for r in prs] == [  # type: ignore[union-attr]
        ("#170001 7b1e4d2", None), ("#170001 3f2a9c1", "true")]
    assert prs[0]["verdicts"] == ["running"]  # the new head's job, still within the silence threshold
    assert sorted(prs[1]["verdicts"]) == ["success", "success"]  # type: ignore[type-var]
    assert "flaky" in str(prs[1]["text"])
    trunk = table_rows(response.text, "trunk")
    assert sorted(" ".join(str(r["text"]).split())[:12] for r in trunk) == ["nightly eeee", "push ccccccc"]
    assert all(r["verdicts"] == ["failure"] for r in trunk)
    assert not any(str(r["text"]).strip().startswith("#0") for r in prs + trunk)
    assert ">#0<" not in response.text


async def test_days_and_names_are_checked(client: httpx.AsyncClient) -> None:
    for bad in ("2", "abc", "-1", "7.0"):
        response = await client.get("/oot", params={"days": bad})
        assert response.status_code == 400 and "days must be one of 1, 7, 30" in response.text
    response = await client.get("/oot/acme-accel/torch-acme", params={"days": "365"})
    assert response.status_code == 400
    assert (await client.get("/oot/acme-accel/bad%20name")).status_code == 404
    redirect = await client.get("/", follow_redirects=False)
    assert redirect.status_code in (302, 307) and redirect.headers["location"] == "/oot"


async def test_empty_ranges_and_unknown_backend(warehouse: Warehouse, tmp_path: Path) -> None:
    app = build_app(warehouse, tmp_path, now=PAGE_NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        summary = await http.get("/oot", params={"days": "1"})
        assert summary.status_code == 200 and 'data-empty="summary"' in summary.text
        matrix = await http.get("/oot/nobody/nothing")
        assert matrix.status_code == 200
        assert 'data-empty="prs"' in matrix.text and 'data-empty="trunk"' in matrix.text


async def test_query_api_serves_the_same_facts(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/oot/query/oot_summary",
                                params={"days": "7", "now": "", "silence_hours": "6"})
    assert response.status_code == 200
    rows = {row["downstream_repo"]: row for row in response.json()}
    acme = rows["acme-accel/torch-acme"]
    assert (acme["successes"], acme["failures"], acme["running"], acme["flaky"], acme["total"]) == (2, 2, 1, 1, 5)
    assert acme["last_run"].endswith("Z") and isinstance(acme["pr_series_days"][0], str)


async def test_trends_page_after_ingest(client: httpx.AsyncClient) -> None:
    response = await client.get("/oot/trends", params={"days": "90"})
    assert response.status_code == 200 and response.headers["content-security-policy"].startswith("default-src")
    html = response.text
    assert re.findall(r'data-trend="([^"]+)"', html) == [
        "acme-accel/torch-acme", "contoso/pytorch-npu", "riscv-lab/pytorch-ci"]  # L4, L3, L2
    acme = html.split('data-trend="acme-accel/torch-acme"')[1].split('data-trend="')[0]
    # acme: its PR jobs passed (100 %), its push and nightly runs failed (trunk 0 %)
    assert '<circle class="pr"' in acme and '<circle class="trunk"' in acme
    assert "PR: 100.0 % (2 passed, 0 failed, 0 timed out of 3 jobs)" in acme
    assert "trunk: 0.0 % (0 passed, 2 failed, 0 timed out of 2 jobs)" in acme
    assert 'href="/oot/acme-accel/torch-acme?days=7"' in acme
    assert (await client.get("/oot/trends")).status_code == 200  # 30 days by default
    for bad in ("1", "365", "x"):
        refused = await client.get("/oot/trends", params={"days": bad})
        assert refused.status_code == 400 and "days must be one of 7, 30, 90" in refused.text


async def test_backend_views_badge_and_their_errors(client: httpx.AsyncClient) -> None:
    page = await client.get("/oot/acme-accel/torch-acme")
    html = page.text
    assert 'data-card="pass-rate"' in html and '<svg class="trend"' in html and 'id="badge"' in html
    assert "[![OOT PR pass rate](http://127.0.0.1:8000/oot/badge/acme-accel/torch-acme.svg)]" in html
    assert '<meta http-equiv="refresh" content="60">' in html
    nightly = await client.get("/oot/acme-accel/torch-acme", params={"event": "nightly", "days": "30"})
    trunk = table_rows(nightly.text, "trunk")
    assert nightly.status_code == 200 and [" ".join(str(r["text"]).split())[:12] for r in trunk] == ["nightly eeee"]
    assert 'id="prs"' not in nightly.text
    second = await client.get("/oot/acme-accel/torch-acme", params={"page": "2"})
    assert second.status_code == 200 and 'data-empty="page"' in second.text
    for params, message in (({"page": "0"}, "page must be a whole number"), ({"page": "x"}, "page must be"),
                            ({"event": "Push!"}, "event must be a trunk event type"),
                            ({"event": "push", "page": "2"}, "a trunk kind's view has one page")):
        refused = await client.get("/oot/acme-accel/torch-acme", params=params)
        assert refused.status_code == 400 and message in refused.text, params

    badge = await client.get("/oot/badge/acme-accel/torch-acme.svg")
    assert badge.status_code == 200 and badge.headers["content-type"] == "image/svg+xml"
    assert badge.headers["cache-control"] == "public, max-age=60"
    assert ">100.0%</text>" in badge.text and 'fill="#1a7f37"' in badge.text  # its PR jobs all passed
    contoso = await client.get("/oot/badge/contoso/pytorch-npu.svg")
    assert ">0.0%</text>" in contoso.text and 'fill="#cf222e"' in contoso.text
    unknown = await client.get("/oot/badge/nobody/nothing.svg")
    assert unknown.status_code == 200 and ">no data</text>" in unknown.text
    assert (await client.get("/oot/badge/bad%20name/x.svg")).status_code == 404
