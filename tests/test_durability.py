"""Nothing acknowledged is lost: post to a real server process, ``kill -9`` it, start it again."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import RELAY_FIXTURES, relay_payload
from tests.servers import ServerProcess, query_data_dir

PATH = "/api/oot/results"


def _jobs(count: int) -> list[dict[str, Any]]:
    bodies = []
    for i in range(count):
        body = relay_payload("04_pr_other_job_failure")
        body["untrusted"]["callback_payload"]["workflow"]["check_run_id"] = f"durable-{i}"
        bodies.append(body)
    return bodies


async def test_acknowledged_results_survive_kill_9(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
            first = await http.post(PATH, content=(RELAY_FIXTURES / "01_pr_in_progress.json").read_bytes())
            done = await http.post(PATH, content=(RELAY_FIXTURES / "02_pr_completed_success.json").read_bytes())
            burst = await asyncio.gather(*(http.post(PATH, content=json.dumps(b)) for b in _jobs(40)))
        assert [r.status_code for r in (first, done, *burst)] == [200] * 42
        server.kill()  # the instant the last answer arrived: no graceful shutdown, no flush

        server.start()  # the same data dir and port
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
            health = await http.get("/healthz")
            # The restarted server still knows the job is completed: a late in_progress is stale.
            late = await http.post(PATH, content=(RELAY_FIXTURES / "01_pr_in_progress.json").read_bytes())
        assert health.json()["store"] == "embedded" and health.json()["ok"] is True
        assert late.json()["status"] == "stale"
    finally:
        server.kill()

    rows = query_data_dir(tmp_path / "data", "SELECT key, status, conclusion, version, toString(started_at) AS "
                          "started_at FROM oot_job_results FINAL ORDER BY key")
    keys = {row["key"] for row in rows}
    assert {r.json()["dynamoKey"] for r in burst} <= keys
    assert len(rows) == 41
    job = next(row for row in rows if row["key"] == done.json()["dynamoKey"])
    assert (job["status"], job["conclusion"], job["version"]) == ("completed", "success", 2)
    assert job["started_at"].startswith("2026-11-20 10:03:11")
