"""``GET /api/oot/query/{name}``: rows as JSON with ISO datetimes; strict parameters with clear 4xx messages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from sql.records import format_time
from sql.warehouse import Warehouse
from tests.readpath_app import build_app
from tests.readpath_data import NOW, record, row

SUMMARY = {"days": "7", "now": format_time(NOW), "silence_hours": "6"}


@pytest.fixture
async def api(warehouse: Warehouse, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    warehouse.insert_job_rows([row(record()), row(record(job="b", conclusion="failure")),
                               row(record(pr=0, sha="c" * 40, received=NOW - timedelta(days=2)))])
    app = build_app(warehouse, tmp_path)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        yield http


async def test_rows_as_json(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/oot/query/oot_summary", params=SUMMARY)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    [acme] = response.json()
    assert acme["downstream_repo"] == "acme/torch-acme"
    assert (acme["successes"], acme["failures"], acme["total"]) == (2, 1, 3)
    assert acme["last_run"] == "2026-11-20T13:00:00.000Z"
    # the per-day series counts PR jobs only: the trunk run of 11-18 is in trunk_*, not in the series
    assert acme["pr_series_days"] == ["2026-11-20"] and acme["pr_series_judged"] == [2]
    assert (acme["trunk_successes"], acme["trunk_failures"], acme["trunk_cancelled"]) == (1, 0, 0)


async def test_pr_query_through_the_api(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/oot/query/oot_pr_results", params={"upstream_repo": "pytorch/pytorch", "pr": "100"})
    assert response.status_code == 200
    rows = response.json()
    assert {r["job_name"] for r in rows} == {"test", "b"}
    assert all(r["received_at"].endswith("Z") for r in rows)


async def test_parameters_with_a_default_may_be_left_out(api: httpx.AsyncClient) -> None:
    """``now`` ('' = the server's clock) and ``silence_hours`` (6) are declared with defaults in params.json."""
    explicit = await api.get("/api/oot/query/oot_summary", params={"days": "30", "now": "", "silence_hours": "6"})
    defaulted = await api.get("/api/oot/query/oot_summary", params={"days": "30"})
    assert explicit.status_code == defaulted.status_code == 200
    assert defaulted.json() == explicit.json() and defaulted.json()
    # a default is only a default: given, the value is used
    later = await api.get("/api/oot/query/oot_summary", params={"days": "1", "now": "2027-06-01T00:00:00Z"})
    assert later.status_code == 200 and later.json() == []


@pytest.mark.parametrize(("params", "status", "message"), [
    ({**SUMMARY, "extra": "1"}, 400, "oot_summary takes no parameter extra"),
    ({"now": "", "silence_hours": "6"}, 400, "oot_summary needs parameter days"),
    ({**SUMMARY, "days": "seven"}, 400, "parameter days must be an integer of type UInt32"),
    ({**SUMMARY, "days": "-1"}, 400, "parameter days must be an integer"),
    ({**SUMMARY, "silence_hours": "nan"}, 400, "parameter silence_hours must be a number"),
    ({**SUMMARY, "now": "yesterday-ish"}, 400, "parameter now must be an ISO-8601 instant"),
])
async def test_bad_parameters_are_400_with_the_reason(api: httpx.AsyncClient, params: dict[str, str], status: int,
                                                      message: str) -> None:
    response = await api.get("/api/oot/query/oot_summary", params=params)
    assert response.status_code == status
    body = response.json()
    assert body["ok"] is False and message in body["error"]


async def test_repeated_parameter_is_400(api: httpx.AsyncClient) -> None:
    response = await api.get("/api/oot/query/oot_summary?days=7&days=1&now=&silence_hours=6")
    assert response.status_code == 400 and "days is given more than once" in response.json()["error"]


@pytest.mark.parametrize("name", ["no_such_query", "..%2F..%2Fetc", "Oot_Summary", "x" * 100])
async def test_unknown_query_is_404(api: httpx.AsyncClient, name: str) -> None:
    response = await api.get(f"/api/oot/query/{name}")
    assert response.status_code == 404
    if "%2F" not in name:  # a path with slashes matches no route at all (FastAPI's own 404)
        assert response.json() == {"ok": False, "error": f"no saved query named {name[:80]!r}"}
