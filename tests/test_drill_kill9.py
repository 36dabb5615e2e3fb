"""Fault drill: ``kill -9`` of a real ``oot-hud serve`` (embedded) in the middle of a burst of 1,000 posts: 500
jobs, each in_progress then completed, so "newest state" matters. After a restart on the same data directory,
every request that got a 200 is in the warehouse with its newest acknowledged state (a 200'd completion is
completed), read through the restarted server's query API; nothing is doubled (one row per job), and the
restarted server still knows each job's state (a late in_progress is stale)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.conftest import relay_payload
from tests.servers import ServerProcess

PATH = "/api/oot/results"
JOBS = 500  # 1,000 posts
KILL_AFTER = 300  # answered posts before the kill, so it lands mid-burst
FIXTURES = ("01_pr_in_progress", "02_pr_completed_success")


def _body(job: int, fixture: str) -> str:
    body = relay_payload(fixture)
    body["untrusted"]["callback_payload"]["workflow"]["check_run_id"] = f"kill9-{job}"
    return json.dumps(body)


async def test_kill_9_mid_burst_of_1000_posts_keeps_every_acknowledged_newest_state(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    answered: dict[str, list[str]] = {}  # key -> the statuses answered 200, in order
    jobs: dict[str, int] = {}  # key -> job number
    count = 0
    enough = asyncio.Event()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30,
                                     limits=httpx.Limits(max_connections=64)) as http:
            async def job(i: int) -> None:
                nonlocal count
                for fixture in FIXTURES:  # the relay sends a job's completion after its in_progress
                    try:
                        response = await http.post(PATH, content=_body(i, fixture))
                    except httpx.HTTPError:
                        return  # the server is gone: never acknowledged
                    assert response.status_code == 200, response.text  # before the kill, every post is stored
                    key = response.json()["dynamoKey"]
                    answered.setdefault(key, []).append(response.json()["status"])
                    jobs[key] = i
                    count += 1
                    if count >= KILL_AFTER:
                        enough.set()

            async def killer() -> None:
                await enough.wait()
                server.kill()

            await asyncio.gather(killer(), *(job(i) for i in range(JOBS)))
        assert KILL_AFTER <= count < 2 * JOBS, count  # the kill really landed mid-burst
        completed = {key for key, statuses in answered.items() if "completed" in statuses}
        assert completed and len(completed) < len(answered), "both states must be in play at the kill"
        # Answered results still only in the journal at the kill: the restart must replay them.
        assert list((data / "journal").rglob("*.jsonl")), "no journal segment left: nothing to replay"

        server.start()  # recovery: the journal is replayed into the warehouse before /healthz answers
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
            rows = (await http.get("/api/oot/query/oot_pr_rows",
                                   params={"upstream_repo": "pytorch/pytorch", "pr": 170001})).json()
            late = await http.post(PATH, content=_body(jobs[min(completed)], FIXTURES[0]))
    finally:
        server.kill()
    stored = {row["key"]: row for row in rows}  # what every page and the bot read (FINAL)
    assert len(stored) == len(rows) <= JOBS, "one row per job, and only this burst's jobs"
    lost = sorted(set(answered) - set(stored))
    assert not lost, f"{len(lost)} acknowledged results lost, e.g. {lost[:3]}"
    behind = [key for key in completed if (stored[key]["status"], stored[key]["conclusion"]) !=
              ("completed", "success")]
    assert not behind, f"{len(behind)} acknowledged completions stored behind, e.g. {behind[:3]}"
    # The restarted server knows the newest state too: a late in_progress for a completed job changes nothing.
    assert late.status_code == 200 and late.json()["status"] == "stale"
