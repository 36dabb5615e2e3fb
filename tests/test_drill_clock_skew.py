"""Fault drill: downstream clocks are wrong. Results whose timestamps are in the future, in the far past or
missing are stored as given, shown sanely on every page, never break a time-window query, and never break
the silence rule (a job still in_progress with no word for longer than the silence threshold is "no report",
whatever start time its downstream claimed). Nothing lost, nothing doubled: one row per job, all shown.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from oot_hud.pages import page_clock
from oot_hud.pr_pages import pr_page_clock
from sql.records import JOB_RESULTS_TABLE, format_time
from sql.warehouse import Warehouse
from tests.conftest import relay_payload
from tests.readpath_app import TOKEN, build_app

SKEWS = {"future": "2299-06-01T00:00:00Z", "far-past": "1971-01-01T00:00:00Z", "missing": None}
PR = 170001


def _body(job: str, status: str, started: str | None) -> dict[str, Any]:
    body = relay_payload("02_pr_completed_success" if status == "completed" else "01_pr_in_progress")
    workflow = body["untrusted"]["callback_payload"]["workflow"]
    workflow.update(job_name=job, check_run_id=f"skew-{job}")
    workflow.pop("started_at", None)
    workflow.pop("completed_at", None)
    if started is not None:
        workflow["started_at"] = started
        if status == "completed":
            workflow["completed_at"] = started
    return body


@pytest.fixture
async def skewed(warehouse: Warehouse, tmp_path: Path) -> tuple[Any, datetime]:
    """Six jobs (3 skews x in_progress/completed) posted through the real ingest endpoint; the app."""
    app = build_app(warehouse, tmp_path)
    received = datetime.now(UTC)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test",
                                 headers={"X-OOT-Relay-Token": TOKEN}) as http:
        for skew, started in SKEWS.items():
            for status in ("in_progress", "completed"):
                response = await http.post("/api/oot/results", json=_body(f"{skew}-{status}", status, started))
                assert response.status_code == 200, response.text
    await app.state.services.store.flushed()
    return app, received


async def test_skewed_timestamps_are_stored_as_given(skewed: tuple[Any, datetime], warehouse: Warehouse) -> None:
    rows = warehouse.query(f"SELECT job_name, started_at, received_at FROM {JOB_RESULTS_TABLE} FINAL")
    assert len(rows) == 6  # nothing lost, nothing doubled
    by_job = {row["job_name"]: row for row in rows}
    for skew, started in SKEWS.items():
        for status in ("in_progress", "completed"):
            stored = by_job[f"{skew}-{status}"]["started_at"]
            if started is None:
                assert stored is None
            else:
                assert format_time(stored.replace(tzinfo=UTC)).startswith(started[:19])
    _, received = skewed
    # The server's own receive time is what the windows use, and it is never skewed.
    assert all(abs(row["received_at"].replace(tzinfo=UTC) - received) < timedelta(minutes=5) for row in rows)


async def test_time_windows_count_every_skewed_result(skewed: tuple[Any, datetime]) -> None:
    app, _ = skewed
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        for days in ("1", "7", "30"):
            summary = await http.get("/api/oot/query/oot_summary", params={"days": days})
            assert summary.status_code == 200
            [acme] = summary.json()
            assert acme["total"] == 6, (days, acme)
            dashboard = await http.get("/api/oot/query/oot_backend_dashboard", params={
                "repo": "acme-accel/torch-acme", "days": days, "max_prs": "10", "max_trunk": "10"})
            assert dashboard.status_code == 200 and len(dashboard.json()) == 6


@pytest.mark.parametrize("hours_later", [1, 7])
async def test_pages_show_skewed_results_sanely_and_silence_follows_the_server_clock(
        skewed: tuple[Any, datetime], hours_later: int) -> None:
    """Seven hours later (threshold 6 h) every in_progress job is "no report", including the one whose
    downstream claims it starts in 2299 (silence never counts from later than our own receipt). An hour
    later the jobs that started now or "in the future" are running; the one that claims to have started in
    1971 is already "no report" by its own account (silence counts from the downstream's start)."""
    app, received = skewed
    later = received + timedelta(hours=hours_later)
    app.dependency_overrides[page_clock] = lambda: later
    app.dependency_overrides[pr_page_clock] = lambda: later
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        pages = {path: await http.get(path) for path in (
            "/oot?days=1", "/oot/acme-accel/torch-acme?days=1", f"/oot/pr/pytorch/pytorch/{PR}")}
        summary = (await http.get("/api/oot/query/oot_summary", params={
            "days": "1", "now": format_time(later)})).json()
    for path, page in pages.items():
        assert page.status_code == 200, (path, page.text[:300])
        assert "2299" not in page.text or path.startswith("/oot/pr/"), path  # no absurd "last run" dates
        assert not re.search(r"NaN|None|Infinity|(?<![\w-])-\d+(\.\d+)? ?(s|min|h|d)\b", page.text), path
    [acme] = summary
    if hours_later == 1:
        assert (acme["running"], acme["no_report"]) == (2, 1), acme
    else:
        assert (acme["running"], acme["no_report"]) == (0, 3), acme
    pr_page = pages[f"/oot/pr/pytorch/pytorch/{PR}"].text
    for skew in SKEWS:
        assert f"{skew}-in_progress" in pr_page and f"{skew}-completed" in pr_page
