"""Fault drill: the warehouse unavailable during ingest, against a real ``oot-hud serve``.

- Embedded: the data directory is a small tmpfs of its own, mounted in a private user + mount namespace that a
  holder process keeps alive (so the server can be killed and restarted on the same filesystem). It is filled
  to the last page (writes fail with ENOSPC), then freed; later remounted read-only (EROFS), then writable.
- Remote: ClickHouse over HTTP (``tests/clickhouse_http.py``) answering 503 to everything, then back.

Each time: every result posted meanwhile is a retryable 500 with the generic message (never a 200 for a result
not stored), the relay's retry after recovery is applied once, and in the end nothing is lost, nothing doubled
(versions count the applied writes), no partial row, and the embedded journal survives ``kill -9`` around it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ingest.extract import extract
from ingest.routes import STORE_FAILED
from sql.warehouse import Warehouse
from tests.clickhouse_http import ClickHouseHttpServer
from tests.conftest import relay_payload
from tests.servers import REPO_ROOT, ServerProcess, query_data_dir
from tests.test_follower import doubled_rows

PATH = "/api/oot/results"
PR_ROWS = "/api/oot/query/oot_pr_rows"
PR = {"upstream_repo": "pytorch/pytorch", "pr": 170001}
PASSWORD = "drill-pw-7f3a"  # the stand-in checks none; it must never show up in an answer or the log
FIXTURES = {"in_progress": "01_pr_in_progress", "completed": "02_pr_completed_success"}


class PrivateDisk:
    """A tmpfs of ``size_mb`` at ``mountpoint``, visible only inside a user + mount namespace held open by a
    sleeping process: no root needed, and the test reaches it through ``/proc/<holder>/root``."""

    def __init__(self, mountpoint: Path, size_mb: int) -> None:
        self.mountpoint = mountpoint
        self.size_mb = size_mb
        self.holder: subprocess.Popen[str] | None = None

    def __enter__(self) -> PrivateDisk:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        script = 'mount -t tmpfs -o "size=$2m,mode=0700" oot-drill "$1" && echo mounted && exec sleep 3600'
        self.holder = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(self.mountpoint),
             str(self.size_mb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "mounted":
            self.holder.kill()
            raise RuntimeError(f"cannot mount a private tmpfs: {self.holder.communicate()[1]}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.holder is not None:
            self.holder.send_signal(signal.SIGKILL)
            self.holder.wait(10)

    @property
    def wrapper(self) -> list[str]:
        """Runs a command inside the namespace (nsenter execs it: the server keeps its pid), in the repository
        (entering a mount namespace moves the working directory to its root)."""
        assert self.holder is not None
        return ["nsenter", f"--target={self.holder.pid}", "--user", "--mount", "--preserve-credentials",
                f"--wd={REPO_ROOT}"]

    def outside(self, name: str = "") -> Path:
        """A path on the tmpfs as this process sees it."""
        assert self.holder is not None
        return Path(f"/proc/{self.holder.pid}/root") / self.mountpoint.relative_to("/") / name

    def fill(self, spare: int = 0) -> None:
        """Write until the filesystem refuses even one more page, then give back ``spare`` bytes."""
        with self.outside("filler").open("wb", buffering=0) as filler:
            for chunk in (1 << 20, 4096):
                try:
                    while True:
                        filler.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
            if spare:
                filler.truncate(filler.tell() - spare)

    def free(self) -> None:
        self.outside("filler").unlink()

    def read_only(self, on: bool) -> None:
        """Every directory under the mount read-only (EROFS), or writable again. A filesystem with files open for
        writing cannot be remounted read-only (the server holds its lock file and the engine's status file), so
        each directory is bind-mounted onto itself and that mount made read-only: the journal, the engine's parts
        and metadata, everything the server creates. Writable again = the bind mounts removed."""
        directories = [str(self.mountpoint / p.name) for p in self.outside().iterdir() if p.is_dir()]
        script = ('for d; do mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" || exit 1; done' if on else
                  'for d; do umount --lazy "$d" || exit 1; done')  # gone: renames across them work again
        subprocess.run([*self.wrapper, "sh", "-c", script, "sh", *directories], check=True, timeout=30)


class Relay:
    """Posts results like the relay: one body per (job, status); remembers what was answered 200."""

    def __init__(self, http: httpx.AsyncClient, prefix: str) -> None:
        self.http = http
        self.prefix = prefix
        self.applied: dict[str, list[str]] = {}  # key -> statuses answered 200 (each one write applied)
        self.refused = 0

    async def post(self, job: int, status: str) -> httpx.Response:
        body = relay_payload(FIXTURES[status])
        body["untrusted"]["callback_payload"]["workflow"]["check_run_id"] = f"{self.prefix}-{job}"
        response = await self.http.post(PATH, content=json.dumps(body))
        if response.status_code == 200:
            assert response.json()["status"] == status, response.text
            self.applied.setdefault(response.json()["dynamoKey"], []).append(status)
        else:
            assert (response.status_code, response.json()) == (500, {"ok": False, "error": STORE_FAILED})
            self.refused += 1
        return response

    async def outage(self, jobs: range, status: str) -> list[tuple[int, str]]:
        """Posts during an outage: each must be refused; returns what the relay will retry."""
        for job in jobs:
            response = await self.post(job, status)
            assert response.status_code == 500, f"{status} of job {job} answered {response.status_code}"
        return [(job, status) for job in jobs]

    async def burst(self, posts: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Concurrent posts (they share journal writes); returns the refused ones, for the retry."""
        answers = await asyncio.gather(*(self.post(job, status) for job, status in posts))
        return [post for post, answer in zip(posts, answers, strict=True) if answer.status_code != 200]

    async def retry(self, failed: list[tuple[int, str]]) -> None:
        for job, status in failed:
            assert (await self.post(job, status)).status_code == 200

    def check(self, rows: list[dict[str, Any]], versions: dict[str, int]) -> None:
        """Nothing lost, nothing doubled, no partial row: each key's newest answered state at the version that
        counts its answered writes, with every field as sent."""
        stored = {row["key"]: row for row in rows if self.prefix in row["key"]}
        assert len(stored) == len([row for row in rows if self.prefix in row["key"]])
        assert set(stored) == set(self.applied), "lost or unexpected keys"
        for key, statuses in self.applied.items():
            row = stored[key]
            assert (row["status"], versions[key]) == (statuses[-1], len(statuses)), (key, row, statuses)
            sent = extract(relay_payload(FIXTURES[statuses[-1]]), received_at=datetime.now(UTC))
            assert (row["workflow_name"], row["job_name"], row["head_sha"], row["conclusion"] or None) == (
                sent.workflow_name, sent.job_name, sent.head_sha, sent.conclusion), row


async def pr_rows(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await http.get(PR_ROWS, params=PR)
    assert response.status_code == 200, response.text
    return response.json()


async def test_embedded_disk_full_then_read_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # Inserts at most once a minute unless a page or API read asks: answered results stay in the journal alone.
    env = {"OOT_HUD_FLUSH_INTERVAL_MS": "60000"}
    with PrivateDisk(data, size_mb=64) as disk:
        server = ServerProcess(data, env=env, wrapper=disk.wrapper)
        try:
            server.start()
            async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
                relay = Relay(http, "disk")
                for job in range(8):
                    await relay.post(job, "in_progress")
                await pr_rows(http)  # flushed: the warehouse holds jobs 0-7, the journal nothing

                disk.fill()  # full: no write gets a byte
                failed = await relay.outage(range(2), "completed")  # completions of stored jobs
                failed += await relay.outage(range(8, 10), "in_progress")  # new jobs
                disk.free()
                await relay.retry(failed)
                await pr_rows(http)  # flushed: no journal segment open (a mount with a writer stays writable)

                disk.read_only(True)
                failed = await relay.outage(range(2, 4), "completed")
                failed += await relay.outage(range(10, 12), "in_progress")
                disk.read_only(False)
                await relay.retry(failed)

                disk.fill(spare=4096)  # one page left: a group's write is cut short part-way
                failed = await relay.burst([(job, "completed") for job in range(4, 7)] +
                                           [(job, "in_progress") for job in range(12, 18)])
                assert failed, "a burst bigger than the space left must be refused, at least in part"
                disk.free()
                await relay.post(18, "in_progress")  # the next result: appended where the cut-short write ended
                await relay.retry(failed)
                await relay.post(7, "completed")
            # Everything since the last read was answered from the journal alone: kill -9, restart, replay.
            server.kill()
            server.start()
            async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
                rows = await pr_rows(http)
            server.stop()
            versions = {row["key"]: int(row["version"]) for row in query_data_dir(
                data, "SELECT key, version FROM oot_job_results FINAL", wrapper=disk.wrapper)}
        finally:
            server.kill()
    assert relay.refused >= 9
    relay.check(rows, versions)


async def test_remote_clickhouse_down_then_back(tmp_path: Path, engine_dir: Path, warehouse: Warehouse) -> None:
    with ClickHouseHttpServer(str(engine_dir)) as clickhouse:
        server = ServerProcess(tmp_path / "data", env={
            "OOT_HUD_CLICKHOUSE_URL": f"http://drill:{PASSWORD}@127.0.0.1:{clickhouse.port}/{warehouse.database}"})
        try:
            server.start()
            async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
                relay = Relay(http, "remote")
                for job in range(6):
                    await relay.post(job, "in_progress")

                clickhouse.down = True
                failed = await relay.outage(range(3), "completed")
                failed += await relay.outage(range(6, 9), "in_progress")
                down = await http.get(PR_ROWS, params=PR)
                health = await http.get("/healthz")
                clickhouse.down = False
                await relay.retry(failed)
                await relay.post(3, "completed")
                rows = await pr_rows(http)
        finally:
            server.kill()
    assert relay.refused == 6
    assert down.status_code == 503 and health.status_code == 503, (down.text, health.text)
    assert PASSWORD not in down.text + health.text + server.log_tail(400), "a credential leaked"
    versions = {row["key"]: int(row["version"]) for row in warehouse.query(
        "SELECT key, version FROM oot_job_results FINAL")}
    relay.check(rows, versions)
    # Against a server nothing is replayed: not one (key, version) was written twice.
    assert doubled_rows(warehouse) == 0
