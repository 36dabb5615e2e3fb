"""Soak: minutes of mixed traffic against one ``oot-hud serve`` (embedded warehouse, the bot writing to a GitHub
stand-in), printing each minute the throughput, p50/p99 latency per kind, the server's RSS and open file
descriptors, and GitHub writes. It must run flat: no growth in latency, memory or descriptors.

Traffic, all on loopback: relay results at ``--rate`` a second (paced, open loop: each job in_progress then
completed, spread over ``--prs`` PRs and 10 backends), one signed ``pull_request`` webhook a second, page views
(summary, a backend's matrix, a PR page) two a second, saved-query API calls one a second, and one
``oot-hud publish`` (through the running server) each ``--publish-every`` minutes. The GitHub stand-in is
the tests' GitHub fake (``tests/github_fake.py``) served over HTTP with ``--github-latency`` per call.

The load generator is Python (httpx, asyncio) in this process: at 100 results/s it is far from saturating
the server or itself; what it reports is the server's latency at a fixed rate, not a maximum throughput.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 100] [--prs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bot import private_key
from tests.conftest import github_payload, relay_payload
from tests.github_fake import APP_ID, APP_SLUG, GitHubFake, signed_headers
from tests.servers import REPO_ROOT, ServerProcess, free_port

SECRET = "soak-webhook-secret"
UPSTREAM = "pytorch/pytorch"


@contextlib.contextmanager
def github_stand_in(latency_s: float) -> Iterator[tuple[str, GitHubFake]]:
    """The GitHub fake behind a real HTTP server on loopback, each answer ``latency_s`` late (GitHub is slow)."""
    port = free_port()
    fake = GitHubFake(f"http://127.0.0.1:{port}")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = httpx.Request(self.command, fake.base_url + self.path, headers=dict(self.headers.items()),
                                    content=body)
            time.sleep(latency_s)
            with lock:
                response = fake._handle(request)
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake.base_url, fake
    finally:
        server.shutdown()
        server.server_close()


class Stats:
    """Latencies and outcomes per kind, for the current minute."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)

    def record(self, kind: str, seconds: float, ok: bool) -> None:
        self.latencies[kind].append(seconds)
        if not ok:
            self.errors[kind] += 1


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def relay_bodies(rng: random.Random, prs: int) -> Iterator[dict[str, Any]]:
    """in_progress then completed for each new job, forever; PR numbers cycle over ``prs``."""
    job = 0
    while True:
        job += 1
        pr = 190_000 + job % prs
        sha = f"{pr:040x}"[-40:]
        backend = f"soak/backend-{job % 10}"
        for name in ("01_pr_in_progress", "02_pr_completed_success"):
            body = relay_payload(name)
            body["trusted"]["verified_repo"] = backend
            callback = body["untrusted"]["callback_payload"]
            callback["delivery_id"] = f"soak-{pr}"
            callback["payload"]["pull_request"]["number"] = pr
            callback["payload"]["pull_request"]["head"]["sha"] = sha
            workflow = callback["workflow"]
            workflow["check_run_id"] = f"soak-{job}"
            workflow["job_name"] = f"test-{job % 7}"
            if name.startswith("02") and rng.random() < 0.2:
                workflow["conclusion"] = "failure"
            yield body


def server_usage(pid: int) -> tuple[float, int]:
    """(RSS in MiB, open descriptors) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def descriptor_kinds(pid: int, data_dir: Path) -> str:
    """What the open descriptors are (``ls -l /proc/<pid>/fd``, summed): sockets, pipes, anonymous inodes
    (epoll, eventfd), files in the data directory, other files."""
    kinds: dict[str, int] = defaultdict(int)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        kind = ("socket" if target.startswith("socket:") else "pipe" if target.startswith("pipe:")
                else "anon" if target.startswith("anon_inode:") else "data" if target.startswith(str(data_dir))
                else "file")
        kinds[kind] += 1
    return " ".join(f"{kind}={count}" for kind, count in sorted(kinds.items()))


async def paced(rate: float, until: float, action: Any) -> None:
    """Call ``action()`` ``rate`` times a second (open loop: a slow answer never delays the next request)."""
    interval = 1.0 / rate
    due = time.monotonic()
    pending: set[asyncio.Task[Any]] = set()
    while due < until:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(action())
        pending.add(task)
        task.add_done_callback(pending.discard)
        due += interval
    await asyncio.gather(*pending, return_exceptions=True)


async def timed(http: httpx.AsyncClient, stats: list[Stats], kind: str, method: str, url: str, **kwargs: Any) -> None:
    started = time.monotonic()
    try:
        response = await http.request(method, url, **kwargs)
        ok = response.status_code < 400 or (kind == "webhook" and response.status_code == 200)
    except httpx.HTTPError:
        ok = False
    stats[-1].record(kind, time.monotonic() - started, ok)


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="oot-soak-") as tmp, github_stand_in(args.github_latency) as (api, fake):
        env = {"OOT_HUD_GITHUB_APP_ID": str(APP_ID), "OOT_HUD_GITHUB_PRIVATE_KEY": private_key(),
               "OOT_HUD_GITHUB_WEBHOOK_SECRET": SECRET, "OOT_HUD_GITHUB_API_URL": api,
               "OOT_HUD_GITHUB_APP_SLUG": APP_SLUG, "OOT_HUD_RATE_LIMIT_PER_MINUTE": "1000000"}
        server = ServerProcess(Path(tmp) / "data", env=env).start()
        print(f"server pid {server.pid} on {server.base_url}; GitHub stand-in {api} "
              f"({args.github_latency * 1000:.0f} ms a call); load {os.getloadavg()[0]:.2f}", flush=True)
        stats = [Stats()]
        bodies = relay_bodies(rng, args.prs)
        start = time.monotonic()
        until = start + args.minutes * 60
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as http:

            async def ingest() -> None:
                await timed(http, stats, "ingest", "POST", "/api/oot/results", content=json.dumps(next(bodies)),
                            headers=server.headers)

            async def webhook() -> None:
                payload = github_payload("pull_request.synchronize")
                pr = 190_000 + rng.randrange(args.prs)
                payload["pull_request"]["number"] = payload["number"] = pr
                payload["pull_request"]["head"]["sha"] = f"{pr:040x}"[-40:]  # the head the results are for
                body = json.dumps(payload).encode()
                headers = signed_headers(body, SECRET, event="pull_request", delivery=str(uuid.uuid4()))
                await timed(http, stats, "webhook", "POST", "/api/github/webhook", content=body, headers=headers)

            async def view() -> None:
                pr = 190_000 + rng.randrange(args.prs)
                path = rng.choice(["/oot", f"/oot/soak/backend-{rng.randrange(10)}", f"/oot/pr/{UPSTREAM}/{pr}"])
                await timed(http, stats, "page", "GET", path)

            async def api_call() -> None:
                name, params = rng.choice([("oot_summary", {"days": "1"}),
                                           ("oot_pr_results", {"upstream_repo": UPSTREAM,
                                                               "pr": str(190_000 + rng.randrange(args.prs))})])
                await timed(http, stats, "api", "GET", f"/api/oot/query/{name}", params=params)

            async def publisher() -> None:
                minute = 1
                while time.monotonic() < until:
                    await asyncio.sleep(max(0.0, start + minute * 60 * args.publish_every - time.monotonic()))
                    if time.monotonic() >= until:
                        return
                    began = time.monotonic()
                    done = await asyncio.to_thread(subprocess.run, [
                        sys.executable, "-m", "oot_hud", "publish", "--out", str(Path(tmp) / "site")],
                        env=server.env, cwd=REPO_ROOT, capture_output=True, check=False)
                    stats[-1].record("publish", time.monotonic() - began, done.returncode == 0)
                    minute += 1

            async def reporter() -> None:
                rss0, fds0 = server_usage(server.pid)
                print(f"{'min':>3} {'ingest/s':>8} {'ing p50':>8} {'ing p99':>8} {'page p99':>8} {'api p99':>8} "
                      f"{'hook p99':>8} {'errors':>6} {'RSS MiB':>8} {'fds':>5} {'GH writes':>9} {'load':>5}",
                      flush=True)
                print(f"{0:>3} {'':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>6} {rss0:>8.0f} {fds0:>5}",
                      flush=True)
                for minute in range(1, args.minutes + 1):
                    await asyncio.sleep(max(0.0, start + minute * 60 - time.monotonic()))
                    done, stats[-1] = stats[-1], Stats()
                    rss, fds = server_usage(server.pid)
                    ms = {kind: (percentile(v, 0.5) * 1000, percentile(v, 0.99) * 1000)
                          for kind, v in done.latencies.items()}
                    print(f"{minute:>3} {len(done.latencies['ingest']) / 60:>8.1f} {ms.get('ingest', (0, 0))[0]:>8.1f} "
                          f"{ms.get('ingest', (0, 0))[1]:>8.1f} {ms.get('page', (0, 0))[1]:>8.1f} "
                          f"{ms.get('api', (0, 0))[1]:>8.1f} {ms.get('webhook', (0, 0))[1]:>8.1f} "
                          f"{sum(done.errors.values()):>6} {rss:>8.0f} {fds:>5} {len(fake.writes()):>9} "
                          f"{os.getloadavg()[0]:>5.2f}"
                          + (f"  publish {done.latencies['publish'][0]:.1f} s" if done.latencies.get("publish")
                             else "") + f"  fds: {descriptor_kinds(server.pid, server.data_dir)}", flush=True)

            await asyncio.gather(paced(args.rate, until, ingest), paced(1, until, webhook),
                                 paced(2, until, view), paced(1, until, api_call), publisher(), reporter())
        server.stop()
        comments = sum(1 for c in fake.comments.values())
        print(f"done: {len(fake.writes())} GitHub writes, {comments} comments, {len(fake.check_runs)} check runs",
              flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=100.0, help="relay results a second")
    parser.add_argument("--prs", type=int, default=50)
    parser.add_argument("--publish-every", type=float, default=5.0, help="minutes between two publishes")
    parser.add_argument("--github-latency", type=float, default=0.15, help="seconds per GitHub call")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
