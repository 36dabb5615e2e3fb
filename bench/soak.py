"""Soak: minutes of mixed traffic against one ``oot-hud serve`` (embedded warehouse, the bot writing to a GitHub
stand-in), printing each minute the throughput, p50/p99 latency per kind, the server's RSS, threads and open file
descriptors (and what they are), and GitHub writes. It must run flat: no growth in latency, memory or descriptors.

Traffic, all on loopback: relay results at ``--rate`` a second, driven by ``wrk`` (``bench/wrk/soak-results.lua``,
one wrk run a minute; each job in_progress then completed, spread over ``--prs`` PRs and 10 backends; the pause
between a connection's requests is adjusted each minute so the rate holds at ``--rate``), one signed
``pull_request`` webhook a second, page views (summary, a backend's matrix, a PR page) two a second, saved-query
API calls one a second, and one ``oot-hud publish`` (through the running server) each ``--publish-every``
minutes. The GitHub stand-in is the tests' GitHub fake (``tests/github_fake.py``) served over HTTP with
``--github-latency`` per call. The light traffic (webhooks, pages, API: 4 a second) comes from httpx in this
process; the results from wrk, so the client is not what saturates.

    .venv/bin/python bench/soak.py [--minutes 10] [--rate 100] [--prs 50] [--jobs 300]
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
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bot import private_key
from bench.ingest import ensure_wrk
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


def relay_templates() -> str:
    """The two bodies wrk posts for every job (in_progress, completed), with its placeholders."""
    lines = []
    for name in ("01_pr_in_progress", "02_pr_completed_success"):
        body = relay_payload(name)
        body["trusted"]["verified_repo"] = "__BACKEND__"
        callback = body["untrusted"]["callback_payload"]
        callback["delivery_id"] = "soak-__PR__"
        callback["payload"]["number"] = callback["payload"]["pull_request"]["number"] = "__PR__"
        callback["payload"]["pull_request"]["head"]["sha"] = "__SHA__"
        workflow = callback["workflow"]
        workflow["check_run_id"] = "soak-__JOB__"
        workflow["job_name"] = "__JOBNAME__"
        if name.startswith("02"):
            workflow["conclusion"] = "__CONCLUSION__"
        lines.append(json.dumps(body).replace('"__PR__"', "__PR__"))  # a number in the payload
    return "\n".join(lines) + "\n"


WRK_CONNECTIONS = 20


async def wrk_minute(server: ServerProcess, body_file: Path, rate: float, prs: int, minute: int,
                     jobs: int = 0) -> dict[str, Any]:
    """One minute of results at ``rate`` a second from wrk; its WRK_RESULT line. ``jobs`` > 0: every minute
    posts the same jobs again (``jobs`` per connection), so the stored data stops growing."""
    env = {**os.environ, "BODY_FILE": str(body_file), "RELAY_TOKEN": server.token, "RATE": f"{rate:.3f}",
           "PRS": str(prs), "RUN_ID": "fixed" if jobs else f"m{minute}", "CONNECTIONS": str(WRK_CONNECTIONS),
           "JOBS": str(jobs), "LUA_PATH": f"{REPO_ROOT / 'bench' / 'wrk'}/?.lua;;"}  # the shared report.lua
    process = await asyncio.create_subprocess_exec(
        ensure_wrk(), "-t1", f"-c{WRK_CONNECTIONS}", "-d60s", "--timeout", "30s", "-s",
        str(REPO_ROOT / "bench" / "wrk" / "soak-results.lua"), server.base_url, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    for line in output.decode().splitlines():
        if line.startswith("WRK_RESULT "):
            result = dict(json.loads(line.removeprefix("WRK_RESULT ")))
            # Socket errors; answers other than 2xx/3xx are counted by status in "codes".
            result["errors"] = sum(v for k, v in result["errors"].items() if k != "status")
            return result
    raise RuntimeError(f"wrk printed no result:\n{output.decode()[-2000:]}")


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
    return " ".join(f"{kind}={count}" for kind, count in sorted(kinds.items())) + " threads: " + thread_names(pid)


def thread_names(pid: int) -> str:
    """The process's threads by name (``/proc/<pid>/task/<tid>/comm``), most first: the engine keeps per-thread
    /proc files open, so descriptors follow its threads, and a pool's name says which one grew."""
    names: Counter[str] = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            names[Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()] += 1
        except OSError:
            continue  # the thread ended meanwhile
    return f"{names.total()} (" + " ".join(f"{name}={count}" for name, count in names.most_common()) + ")"


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
        body_file = Path(tmp) / "bodies.jsonl"
        body_file.write_text(relay_templates())
        start = time.monotonic()
        until = start + args.minutes * 60
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=20)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as http:

            async def webhook() -> None:
                payload = github_payload("pull_request.synchronize")
                pr = 190_000 + rng.randrange(args.prs)
                payload["pull_request"]["number"] = payload["number"] = pr
                payload["pull_request"]["head"]["sha"] = f"{pr:040x}"  # the head the results are for
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

            async def results_and_report() -> None:
                """A wrk run a minute; after each, the minute's line."""
                rss0, fds0 = server_usage(server.pid)
                print(f"{'min':>3} {'ingest/s':>8} {'ing p50':>8} {'ing p99':>8} {'page p99':>8} {'api p99':>8} "
                      f"{'hook p99':>8} {'errors':>6} {'RSS MiB':>8} {'fds':>5} {'GH writes':>9} {'load':>5}",
                      flush=True)
                print(f"{0:>3} {'':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>8} {'':>6} {rss0:>8.0f} {fds0:>5}"
                      f"{'':>10} {os.getloadavg()[0]:>5.2f}  fds: {descriptor_kinds(server.pid, server.data_dir)}",
                      flush=True)
                pace = args.rate
                for minute in range(1, args.minutes + 1):
                    result = await wrk_minute(server, body_file, pace, args.prs, minute, args.jobs)
                    done, stats[-1] = stats[-1], Stats()
                    rss, fds = server_usage(server.pid)
                    rate = result["requests"] / (result["duration_us"] / 1e6)
                    # wrk pauses between a connection's requests; the answers' time adds to it: correct the pace.
                    pace = min(args.rate * 3, pace * args.rate / max(rate, 1.0))
                    refused = sum(count for code, count in result["codes"].items() if code != "200")
                    ms = {kind: percentile(v, 0.99) * 1000 for kind, v in done.latencies.items()}
                    print(f"{minute:>3} {rate:>8.1f} {result['p50_us'] / 1000:>8.1f} {result['p99_us'] / 1000:>8.1f} "
                          f"{ms.get('page', 0):>8.1f} {ms.get('api', 0):>8.1f} {ms.get('webhook', 0):>8.1f} "
                          f"{sum(done.errors.values()) + refused + result['errors']:>6} {rss:>8.0f} {fds:>5} "
                          f"{len(fake.writes()):>9} {os.getloadavg()[0]:>5.2f}"
                          + (f"  publish {done.latencies['publish'][0]:.1f} s" if done.latencies.get("publish")
                             else "") + f"  fds: {descriptor_kinds(server.pid, server.data_dir)}", flush=True)

            await asyncio.gather(paced(1, until, webhook), paced(2, until, view), paced(1, until, api_call),
                                 publisher(), results_and_report())
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
    parser.add_argument("--jobs", type=int, default=0,
                        help="0: every job new (the data grows); N: each of wrk's connections cycles over N jobs, so "
                             "the data stops growing after N x connections jobs (a fixed data set)")
    parser.add_argument("--publish-every", type=float, default=5.0, help="minutes between two publishes")
    parser.add_argument("--github-latency", type=float, default=0.15, help="seconds per GitHub call")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
