"""Ingest benchmark: ``POST /api/oot/results`` on ``oot-hud serve`` next to a bare endpoint, driven by wrk.

Starts, as separate processes on loopback, a real ``oot-hud serve`` (embedded store, journal fsynced,
rate limit lifted) and a bare FastAPI app under uvicorn + uvloop + httptools that only parses the JSON
and answers. wrk (C, one thread) posts fixture 02_pr_completed_success with a check_run_id of its own
per request (``bench/wrk/unique-results.lua``) to each in turn, in rounds that alternate which goes first,
at 16 and at 64 connections. Every round prints req/s, p50/p99 (wrk's), the server's CPU per result and
its CPU use (the whole process and its event-loop thread, from /proc), wrk's own CPU use, the non-2xx
count and the load average; then the medians, the ratio to the bare endpoint, the spread between rounds
and what saturated.

Then an open-loop run at ``--rate`` (200/s) for latency under a steady load, with a lean raw-socket
client (wrk has no constant-rate mode; wrk2 is not in Debian): a request is sent every 1/rate s whatever
the answers, and its latency counts from when it was due, so a late client or server shows as latency.
With ``--rss-results N`` the bench then starts a fresh ``oot-hud serve`` and wrk posts the 13 good
fixtures in turn to it (in_progress -> completed pairs, a stale in_progress, a re-post; 1,000 PRs in turn)
until it has answered N; the server's RSS is printed then (with its peak) and 10 s later.

    .venv/bin/python bench/ingest.py                       # throughput at 16 and 64 + paced latency
    .venv/bin/python bench/ingest.py --rss-results 100000  # ... and RSS of a fresh server after 100,000
    .venv/bin/python bench/ingest.py --url http://127.0.0.1:8000 --token T --pid PID

wrk: ``apt-get install -y wrk`` (the bench runs that itself when it may, as root, and wrk is missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests.servers import ServerProcess, free_port  # noqa: E402 - after the path setup

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "relay"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "unique-results.lua"
PATH = "/api/oot/results"
THROUGHPUT_FIXTURE = "02_pr_completed_success"
TICK = os.sysconf("SC_CLK_TCK")

# Placeholders the wrk script fills in (see bench/wrk/unique-results.lua).
FIXTURE_PR = "170001"
FIXTURE_SHA = "3f2a9c1d7e5b4a6f8c0d2e4f6a8b0c1d2e3f4a5b"
FIXTURE_DELIVERY = "6c0e0a52-c5a1-11f0-8f21-1a2b3c4d5e6f"


# ---- bodies ----

def template(name: str, *, vary_pr: bool) -> str:
    """A fixture as one JSON line with placeholders for the check-run id (and the PR, SHA, delivery)."""
    body = json.loads((FIXTURES / f"{name}.json").read_text())
    body["untrusted"]["callback_payload"]["workflow"]["check_run_id"] = "__CRID__"
    text = json.dumps(body, separators=(",", ":"))
    if vary_pr:
        text = text.replace(FIXTURE_PR, "__PR__").replace(FIXTURE_SHA, "__SHA__").replace(FIXTURE_DELIVERY, "__DLV__")
    return text


def mixed_templates() -> list[str]:
    """Every good fixture in turn: 01 -> 02, 03 -> 04, 05 -> 06 are in_progress -> completed of one job, 12
    re-posts 02; each round of 13 on a PR, head SHA and delivery of its own."""
    return [template(path.stem, vary_pr=True) for path in sorted(FIXTURES.glob("[0-9]*.json"))]


def fill(text: str, crid: str, pr: int) -> bytes:
    return (text.replace("__CRID__", crid).replace("__PR__", str(pr)).replace("__SHA__", f"{pr:040x}")
            .replace("__DLV__", f"{crid}-delivery").encode())


# ---- /proc ----

def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (or one of its threads) so far."""
    where = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(where).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def peak_mib(pid: int) -> float:
    return rss_mib(pid, "VmHWM")


# ---- wrk ----

def ensure_wrk() -> str:
    """wrk's path, installed with apt-get first when it is missing and this runs as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False, capture_output=True)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit("this benchmark needs wrk: apt-get install -y wrk")


@dataclass
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    codes: dict[str, int]
    wrk_cpu_s: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def failed(self) -> int:
        """Non-2xx answers and socket errors (wrk counts statuses > 399 as ``status`` errors)."""
        return sum(self.errors.values())


def run_wrk(wrk: str, url: str, token: str, bodies: Path, *, connections: int, seconds: float, run_id: str,
            limit: int | None = None) -> WrkRun:
    env = {**os.environ, "BODY_FILE": str(bodies), "RELAY_TOKEN": token, "RUN_ID": run_id,
           "LUA_PATH": f"{WRK_SCRIPT.parent}/?.lua;;"}  # the scripts' shared report.lua
    if limit is not None:
        env["LIMIT"] = str(limit)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([wrk, "-t1", f"-c{connections}", f"-d{seconds:.0f}s", "--timeout", "10s",
                             "-s", str(WRK_SCRIPT), url + PATH], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    head = ""
    if limit is not None:
        # wrk runs for -d whatever its threads do; the script says when its thread has stopped.
        assert proc.stdout is not None
        for line in proc.stdout:
            head += line
            if line.startswith("WRK_LIMIT_REACHED"):
                proc.send_signal(signal.SIGINT)  # wrk stops and reports as at the end of -d
                break
    out, err = proc.communicate()
    out = head + out
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in out.splitlines() if line.startswith("WRK_RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out[-2000:]} {err[-2000:]}")
    got = json.loads(lines[-1].removeprefix("WRK_RESULT "))
    return WrkRun(requests=got["requests"], seconds=got["duration_us"] / 1e6, p50_ms=got["p50_us"] / 1000,
                  p99_ms=got["p99_us"] / 1000, errors={k: v for k, v in got["errors"].items() if v},
                  codes=got["codes"], wrk_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime))


# ---- one measured round ----

@dataclass
class Target:
    name: str
    url: str
    token: str
    pid: int  # 0: unknown (--url without --pid)
    rates: dict[int, list[float]] = field(default_factory=dict)
    p99s: dict[int, list[float]] = field(default_factory=dict)
    cpu_ms: dict[int, list[float]] = field(default_factory=dict)


def measured_round(wrk: str, target: Target, bodies: Path, connections: int, seconds: float, label: str,
                   run_id: str) -> WrkRun:
    """One wrk run against one server, with the server's CPU (whole process and event-loop thread)."""
    loadavg = load()
    cpu = loop_cpu = 0.0
    if target.pid:
        cpu, loop_cpu = cpu_seconds(target.pid), cpu_seconds(target.pid, target.pid)
    result = run_wrk(wrk, target.url, target.token, bodies, connections=connections, seconds=seconds, run_id=run_id)
    server = f"{'server CPU n/a':<56}"
    loop_share = None
    if target.pid:
        used = cpu_seconds(target.pid) - cpu
        loop_used = cpu_seconds(target.pid, target.pid) - loop_cpu
        per_result = used * 1000 / max(1, result.requests)
        loop_share = loop_used / result.seconds
        target.cpu_ms.setdefault(connections, []).append(per_result)
        server = (f"server CPU {per_result:5.3f} ms/result, {used / result.seconds:4.0%} "
                  f"(loop thread {loop_used / result.seconds:4.0%})")
    target.rates.setdefault(connections, []).append(result.rate)
    target.p99s.setdefault(connections, []).append(result.p99_ms)
    print(f"{label:<26} c={connections:<3} {result.rate:7.0f} req/s  p50 {result.p50_ms:6.1f} ms  "
          f"p99 {result.p99_ms:6.1f} ms  {server}  wrk CPU {result.wrk_cpu_s / result.seconds:4.0%}  "
          f"non-2xx/errors {result.failed}  saturated: {saturated(loop_share, result.wrk_cpu_s / result.seconds)}"
          f"  load {loadavg}", flush=True)
    return result


def saturated(loop_share: float | None, wrk_share: float) -> str:
    """What limited a closed-loop round: a full core on the server's event loop, on wrk, or neither."""
    if loop_share is not None and loop_share >= 0.9:
        return "server loop"
    if wrk_share >= 0.9:
        return "wrk"
    return "neither"


def spread(values: list[float]) -> float:
    return max(values) / min(values) if values and min(values) > 0 else float("inf")


def summarise(ours: Target, bare: Target, connections: int, target_ratio: float) -> None:
    mine, base = ours.rates[connections], bare.rates[connections]
    ratio = statistics.median(mine) / statistics.median(base)
    per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(mine, base, strict=True))
    for name, target, rates in (("oot-hud", ours, mine), ("bare", bare, base)):
        print(f"c={connections}: {name} median {statistics.median(rates):.0f} req/s, spread {spread(rates):.2f}x, "
              f"p99 median {statistics.median(target.p99s[connections]):.1f} ms")
    cpu = ""
    if ours.cpu_ms.get(connections) and bare.cpu_ms.get(connections):
        cpu = (f"; server CPU per result median {statistics.median(ours.cpu_ms[connections]):.3f} ms vs bare "
               f"{statistics.median(bare.cpu_ms[connections]):.3f} ms")
    print(f"c={connections}: ratio of medians {ratio:.2f} x bare (target >= {target_ratio}); per round {per_round}"
          f"{cpu}", flush=True)


# ---- the paced run: a lean open-loop client ----

class RawClient:
    """Keep-alive HTTP/1.1 over asyncio streams, a few lines of Python per request (httpx would need most
    of a core at 200/s on this machine, and its own delays would be measured as the server's). Connections
    are reused when idle and opened when all are busy."""

    def __init__(self, url: str, token: str) -> None:
        parts = httpx.URL(url)
        self.host, self.port = parts.host, parts.port or 80
        self.head = (f"POST {PATH} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nX-OOT-Relay-Token: {token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: ").encode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.failures: dict[str, int] = {}

    async def post(self, body: bytes) -> int:
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
            self.failures[type(exc).__name__] = self.failures.get(type(exc).__name__, 0) + 1
            return 0
        self.idle.append((reader, writer))
        if status != 200:
            self.failures[str(status)] = self.failures.get(str(status), 0) + 1
        return status

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


async def paced(url: str, token: str, rate: float, seconds: float, run_id: str) -> tuple[list[float], int, float]:
    """One request due every 1/rate s; latency from when it was due. Returns latencies (ms), the number
    accepted (200), and the client's CPU time a request (ms)."""
    client = RawClient(url, token)
    shapes = mixed_templates()
    latencies: list[float] = []
    accepted = 0

    async def one(due: float, body: bytes) -> None:
        nonlocal accepted
        status = await client.post(body)
        if status == 200:
            accepted += 1
            latencies.append((time.perf_counter() - due) * 1000)

    cpu = time.process_time()
    started = time.perf_counter()
    tasks = []
    for i in range(int(rate * seconds)):
        due = started + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        rnd = i // len(shapes)
        body = fill(shapes[i % len(shapes)], f"{run_id}-{rnd}", 100_000 + rnd % 1000)
        tasks.append(asyncio.create_task(one(due, body)))
    await asyncio.gather(*tasks)
    client.close()
    if client.failures:
        print(f"paced run failures: {client.failures}")
    return latencies, accepted, (time.process_time() - cpu) * 1000 / max(1, len(tasks))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


# ---- the bare endpoint: uvicorn + uvloop + httptools + FastAPI, parse the JSON, answer ----

def serve_bare(port: int) -> None:
    import uvicorn

    app = FastAPI()

    @app.post(PATH)
    async def parse_only(request: Request) -> JSONResponse:
        body = json.loads(await request.body())
        return JSONResponse({"ok": True, "status": "parsed", "keys": len(body)})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools")


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


# ---- the run ----

def rss_run(args: argparse.Namespace, wrk: str, work: Path, mixed: Path, stamp: str, env: dict[str, str] | None,
            target: tuple[str, str, int]) -> None:
    """RSS after ``--rss-results`` posts of the 13 fixtures in turn: on a fresh server (or ``--url``'s)."""
    fresh = ServerProcess(work / "rss-data", env=env).start() if env is not None else None
    url, token, pid = (fresh.base_url, fresh.token, fresh.pid) if fresh is not None else target
    try:
        if not pid:
            print("RSS run skipped: no --pid")
            return
        print(f"RSS run: {'a fresh' if fresh else 'the given'} server, RSS {rss_mib(pid):.0f} MiB before; "
              f"load {load()}", flush=True)
        bulk = run_wrk(wrk, url, token, mixed, connections=16, seconds=3600, run_id=f"m{stamp}",
                       limit=args.rss_results)
        print(f"bulk load: {bulk.requests} posts of the 13 fixtures in turn at {bulk.rate:.0f}/s, answers "
              f"{bulk.codes}, errors {bulk.errors or 'none'}; load {load()}", flush=True)
        print(f"server RSS after {bulk.requests} results: {rss_mib(pid):.0f} MiB (target < 600 MB = 572 MiB), "
              f"peak {peak_mib(pid):.0f} MiB", flush=True)
        # The engine's allocator hands freed pages back after a few seconds: what stays is the real cost.
        time.sleep(10)
        print(f"server RSS 10 s later, idle: {rss_mib(pid):.0f} MiB", flush=True)
    finally:
        if fresh is not None:
            fresh.stop()


def run(args: argparse.Namespace) -> int:
    wrk = ensure_wrk()
    server: ServerProcess | None = None
    scratch = tempfile.TemporaryDirectory(prefix="oot-bench-")
    work = Path(scratch.name)
    env: dict[str, str] = {}
    if args.url:
        url, token, pid = args.url, args.token, args.pid
    else:
        env = {"OOT_HUD_RATE_LIMIT_PER_MINUTE": str(10**9), **dict(pair.split("=", 1) for pair in args.server_env)}
        server = ServerProcess(work / "data", env=env).start()
        url, token, pid = server.base_url, server.token, server.pid
    bare_proc, bare_url = start_bare()
    unique = work / "unique.jsonl"
    unique.write_text(template(THROUGHPUT_FIXTURE, vary_pr=False) + "\n")
    mixed = work / "mixed.jsonl"
    mixed.write_text("\n".join(mixed_templates()) + "\n")
    stamp = str(int(time.time()))
    ours = Target("oot-hud", url, token, pid)
    bare = Target("bare", bare_url, token, bare_proc.pid)
    try:
        print(f"oot-hud at {url} (pid {pid or '?'}); bare FastAPI at {bare_url} (pid {bare_proc.pid}); wrk -t1, "
              f"{args.rounds} rounds of {args.seconds:.0f} s per server and connection count; load {load()}",
              flush=True)
        for target in (ours, bare) if args.connections else (ours,):  # connections, first inserts, caches
            run_wrk(wrk, target.url, token, unique, connections=16, seconds=args.warmup_seconds,
                    run_id=f"w{stamp}{target.name}")
        for connections in args.connections:
            for number in range(args.rounds):
                # Alternate who goes first, so a burst of load from elsewhere hits both alike.
                order = (ours, bare) if number % 2 == 0 else (bare, ours)
                for target in order:
                    label = "oot-hud serve (embedded)" if target is ours else "bare FastAPI (parse only)"
                    measured_round(wrk, target, unique, connections, args.seconds, f"{label} #{number + 1}",
                                   f"r{stamp}-{connections}-{number}")
            for target_ratio, c in ((0.5, 16), (0.6, 64)):
                if c == connections:
                    summarise(ours, bare, connections, target_ratio)
            if connections not in (16, 64):
                summarise(ours, bare, connections, 0.5)
        if args.connections:
            print("saturated: 'server loop' = the server's event-loop thread used >= 90 % of a core, 'wrk' = wrk "
                  "did; 'neither' = the server waited (or the 2 cores were shared with other work: see the load)",
                  flush=True)

        latencies, accepted, client_ms = asyncio.run(paced(url, token, args.rate, args.paced_seconds, f"p{stamp}"))
        print(f"paced {args.rate:.0f} req/s for {args.paced_seconds:.0f} s (lean raw-socket client, open loop, "
              f"latency from when each request was due): {accepted} accepted, p50 {percentile(latencies, 0.5):.1f} ms, "
              f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies, default=float('nan')):.1f} ms "
              f"(target p99 < 25 ms); client CPU {client_ms:.2f} ms a request; load {load()}", flush=True)
        if pid:
            print(f"server RSS now: {rss_mib(pid):.0f} MiB", flush=True)
        if args.rss_results:
            bare_proc.kill()  # only the measured server runs from here
            if server is not None:
                server.stop()
            rss_run(args, wrk, work, mixed, stamp, None if args.url else env, (url, token, pid))
    finally:
        bare_proc.kill()
        bare_proc.wait()
        if server is not None:
            server.stop()
        scratch.cleanup()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="target a running server instead of starting one")
    parser.add_argument("--token", default="", help="its relay token (with --url)")
    parser.add_argument("--pid", type=int, default=0, help="its process id, for CPU and RSS (with --url)")
    parser.add_argument("--connections", type=lambda text: [int(c) for c in text.split(",") if c], default=[16, 64],
                        help="wrk connection counts, comma-separated (default 16,64; empty: no throughput rounds)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per connection count, alternating order")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one wrk round")
    parser.add_argument("--warmup-seconds", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=200.0, help="paced run: requests a second")
    parser.add_argument("--paced-seconds", type=float, default=15.0)
    parser.add_argument("--rss-results", type=int, default=0,
                        help="then post this many results to a fresh server (--url: to that one), report its RSS")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the started oot-hud serve (e.g. OOT_HUD_COMMIT_WINDOW_MS=0)")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
