"""Ingest benchmark: accepted results/s and latency of ``POST /api/oot/results`` next to a bare endpoint.

Starts (or targets) a real ``oot-hud serve`` on loopback and, in the same run, a bare FastAPI app under
uvicorn that only parses the JSON; the same httpx client drives both, in rounds that alternate which goes
first. Then paced runs (200 req/s) for latency under a steady load, with httpx and with a lean raw-socket
client, and optionally the server's RSS after N results.

    .venv/bin/python bench/ingest.py                       # throughput + paced latency
    .venv/bin/python bench/ingest.py --rss-results 100000  # ... and RSS after 100,000 results
    .venv/bin/python bench/ingest.py --url http://127.0.0.1:8000 --token T --pid PID
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.servers import ServerProcess, free_port  # noqa: E402 - after the path setup

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "relay"
PATH = "/api/oot/results"
PLACEHOLDER = b"__BENCH_CHECK_RUN__"


def templates() -> list[bytes]:
    """Every good fixture with its check_run_id replaced by a placeholder (so each post is a new job)."""
    out = []
    for path in sorted(FIXTURES.glob("[0-9]*.json")):
        body = json.loads(path.read_text())
        body["untrusted"]["callback_payload"]["workflow"]["check_run_id"] = PLACEHOLDER.decode()
        out.append(json.dumps(body).encode())
    return out


# 1,000 PRs in turn: 100,000 results make ~100 a PR (about five backends x ten jobs x two callbacks).
PR_COUNT = 1_000
FIXTURE_PR = b"170001"
FIXTURE_SHA = b"3f2a9c1d7e5b4a6f8c0d2e4f6a8b0c1d2e3f4a5b"
FIXTURE_DELIVERY = b"6c0e0a52-c5a1-11f0-8f21-1a2b3c4d5e6f"


def bodies(run: str) -> Iterator[bytes]:
    """Varied keys, realistic shapes: round r posts the 13 fixtures once, with check-run ids unique to the
    round (so 01 -> 02, 03 -> 04, 05 -> 06 are in_progress -> completed of one job, 12 re-posts 02) on a PR,
    head SHA and delivery of its own (PR_COUNT PRs in turn), so results spread like real traffic."""
    shapes = templates()
    i = 0
    while True:
        rnd = i // len(shapes)
        pr = 100_000 + rnd % PR_COUNT
        yield (shapes[i % len(shapes)].replace(PLACEHOLDER, f"{run}-{rnd}".encode())
               .replace(FIXTURE_PR, str(pr).encode()).replace(FIXTURE_SHA, f"{pr:040x}".encode())
               .replace(FIXTURE_DELIVERY, f"{run}-{rnd}-delivery".encode()))
        i += 1


@dataclass
class Result:
    label: str
    sent: int
    accepted: int
    seconds: float
    latencies_ms: list[float]

    def line(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else float("nan")
        return (f"{self.label:<34} {self.accepted:>7}/{self.sent:<7} accepted  {self.accepted / self.seconds:8.0f}/s"
                f"  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    def p99(self) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(len(lat) * 0.99))]


FAILURES: dict[str, int] = {}


async def _post(http: httpx.AsyncClient, body: bytes, latencies: list[float]) -> bool:
    started = time.perf_counter()
    try:
        response = await http.post(PATH, content=body)
    except httpx.HTTPError as exc:
        FAILURES[type(exc).__name__] = FAILURES.get(type(exc).__name__, 0) + 1
        return False
    latencies.append((time.perf_counter() - started) * 1000)
    if response.status_code != 200:
        FAILURES[str(response.status_code)] = FAILURES.get(str(response.status_code), 0) + 1
    return response.status_code == 200


async def closed_loop(label: str, url: str, token: str, count: int, concurrency: int, run: str) -> Result:
    """``concurrency`` workers post ``count`` results back to back: the most the server accepts."""
    source = bodies(run)
    latencies: list[float] = []
    accepted = 0
    headers = {"X-OOT-Relay-Token": token, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        remaining = count

        async def worker() -> None:
            nonlocal remaining, accepted
            while remaining > 0:
                remaining -= 1
                ok = await _post(http, next(source), latencies)  # await first: += would race
                accepted += ok

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return Result(label, count, accepted, seconds, latencies)


Post = Callable[[bytes, list[float]], Awaitable[bool]]


async def open_loop(label: str, post: Post, rate: float, seconds: float, run: str) -> Result:
    """One request every 1/rate s whatever the answers, latency of each."""
    source = bodies(run)
    latencies: list[float] = []
    tasks = []
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(next(source), latencies)))
    outcomes = list(await asyncio.gather(*tasks))
    return Result(label, len(outcomes), sum(outcomes), time.perf_counter() - started, latencies)


async def paced(label: str, url: str, token: str, rate: float, seconds: float, run: str) -> Result:
    """``open_loop`` with httpx."""
    headers = {"X-OOT-Relay-Token": token, "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        return await open_loop(label, lambda body, latencies: _post(http, body, latencies), rate, seconds, run)


class RawClient:
    """Keep-alive HTTP/1.1 over asyncio streams, a few lines of Python per request: at 200/s httpx itself
    needs most of a core, so on a busy 2-core machine its own scheduling delays would be measured as the
    server's latency. Connections are reused when idle and opened when all are busy."""

    def __init__(self, url: str, token: str) -> None:
        parts = httpx.URL(url)
        self.host, self.port = parts.host, parts.port or 80
        self.head = (f"POST {PATH} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nX-OOT-Relay-Token: {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, body: bytes, latencies: list[float]) -> bool:
        started = time.perf_counter()
        try:
            reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
            writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            FAILURES[type(exc).__name__] = FAILURES.get(type(exc).__name__, 0) + 1
            return False
        latencies.append((time.perf_counter() - started) * 1000)
        self.idle.append((reader, writer))
        if status != 200:
            FAILURES[str(status)] = FAILURES.get(str(status), 0) + 1
        return status == 200

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def paced_raw(label: str, url: str, token: str, rate: float, seconds: float, run: str) -> Result:
    """``open_loop`` with the lean client."""
    client = RawClient(url, token)
    try:
        return await open_loop(label, client.post, rate, seconds, run)
    finally:
        client.close()


# ---- the bare endpoint: uvicorn + FastAPI, parse the JSON, answer ----

def bare_app() -> FastAPI:
    app = FastAPI()

    @app.post(PATH)
    async def parse_only(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        return JSONResponse({"ok": True, "status": "parsed", "keys": len(body)})

    return app


def serve_bare(port: int) -> None:
    import uvicorn

    uvicorn.run(bare_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start_bare() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)], cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(url + PATH, content=b"{}", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the bare endpoint did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: a cost per result that the machine's load hardly moves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def run(args: argparse.Namespace) -> int:
    server: ServerProcess | None = None
    scratch = tempfile.TemporaryDirectory(prefix="oot-bench-")
    if args.url:
        url, token, pid = args.url, args.token, args.pid
    else:
        env = {"OOT_HUD_RATE_LIMIT_PER_MINUTE": str(10**9)}
        if args.commit_window_ms is not None:
            env["OOT_HUD_COMMIT_WINDOW_MS"] = str(args.commit_window_ms)
        server = ServerProcess(Path(scratch.name) / "data", env=env).start()
        url, token, pid = server.base_url, server.token, server.pid
    bare, bare_url = start_bare()
    stamp = str(int(time.time()))
    try:
        print(f"oot-hud at {url} (pid {pid}); bare FastAPI at {bare_url}; {args.count} posts, "
              f"concurrency {args.concurrency}", flush=True)
        # Warm both up (connections, first inserts, JIT-free but caches) before measuring.
        await closed_loop("warm-up", url, token, 300, args.concurrency, f"w{stamp}")
        await closed_loop("warm-up", bare_url, token, 300, args.concurrency, f"w{stamp}")
        # Rounds alternate which endpoint goes first, so a burst of load from elsewhere on the machine hits
        # both alike; the figure is the median of the per-round ratios.
        per_round = max(1, args.count // args.rounds)
        ratios, ours_cpu, base_cpu = [], [], []
        for number in range(args.rounds):
            runs = {}
            order = [("ours", url, pid), ("bare", bare_url, bare.pid)]
            for name, target, process in order if number % 2 == 0 else order[::-1]:
                label = "oot-hud (embedded store)" if name == "ours" else "bare FastAPI (parse JSON only)"
                cpu = cpu_seconds(process) if process else 0.0
                runs[name] = await closed_loop(f"{label} #{number + 1}", target, token, per_round,
                                               args.concurrency, f"a{stamp}-{number}")
                used = (cpu_seconds(process) - cpu) * 1000 / max(1, runs[name].accepted) if process else 0.0
                (ours_cpu if name == "ours" else base_cpu).append(used)
                print(runs[name].line(), f" server CPU {used:.2f} ms/result", flush=True)
            ratios.append(runs["ours"].rate / runs["bare"].rate)
        if FAILURES:
            print(f"failures: {FAILURES}")
        print(f"server CPU per result (median): {statistics.median(ours_cpu):.2f} ms "
              f"(bare endpoint: {statistics.median(base_cpu):.2f} ms)")
        print(f"ratio per round: {', '.join(f'{r:.0%}' for r in ratios)}; median {statistics.median(ratios):.0%} "
              "of the bare endpoint's throughput (target >= 50%)", flush=True)
        steady = await paced(f"oot-hud paced {args.rate:.0f} req/s", url, token, args.rate, args.paced_seconds,
                             f"p{stamp}")
        print(steady.line())
        lean = await paced_raw(f"oot-hud paced {args.rate:.0f} req/s, lean client", url, token, args.rate,
                               args.paced_seconds, f"q{stamp}")
        print(lean.line())
        print(f"p99 at {args.rate:.0f} req/s: {steady.p99():.1f} ms with httpx, {lean.p99():.1f} ms with the lean "
              "client (target < 50 ms)", flush=True)
        if pid:
            print(f"server RSS now: {rss_mib(pid):.0f} MiB", flush=True)
        if args.rss_results and pid:
            done = 300 + per_round * args.rounds + steady.sent + lean.sent
            todo = max(0, args.rss_results - done)
            bulk = await closed_loop("bulk load", url, token, todo, args.concurrency, f"r{stamp}")
            print(bulk.line())
            if FAILURES:
                print(f"failures so far: {FAILURES}")
            print(f"server RSS after {done + todo} results: {rss_mib(pid):.0f} MiB (target < 600 MiB)", flush=True)
            # The engine's allocator hands freed pages back after a few seconds: what stays is the real cost.
            await asyncio.sleep(10)
            print(f"server RSS 10 s later, idle: {rss_mib(pid):.0f} MiB", flush=True)
    finally:
        bare.kill()
        bare.wait()
        if server is not None:
            server.stop()
        scratch.cleanup()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="target a running server instead of starting one")
    parser.add_argument("--token", default="", help="its relay token (with --url)")
    parser.add_argument("--pid", type=int, default=0, help="its process id, for RSS (with --url)")
    parser.add_argument("--count", type=int, default=6000, help="posts per endpoint, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds, alternating who goes first")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=200.0, help="paced run: requests a second")
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--rss-results", type=int, default=0, help="load this many results, then report RSS")
    parser.add_argument("--commit-window-ms", type=float, default=None, help="the started server's window")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
