"""Benchmark time to signal and writes per PR with several ``oot-hud serve`` instances on the DynamoDB path.

Runs the same workload three ways, each against a fresh GitHub stand-in that takes 0.4 s per write:

- ``embedded``: one ``oot-hud serve`` on the embedded warehouse (the single-process default);
- ``dynamo x1`` and ``dynamo x3``: 1 or 3 ``oot-hud serve`` processes with the App credentials on a DynamoDB
  table (moto's server, in this process), ClickHouse over HTTP (tests/clickhouse_http.py, in this process),
  and the replicator between them: ``oot-hud replicate --follow`` (``--replicator follow``) or the Lambda
  handler under a stand-in for Lambda's event source mapping (``--replicator lambda``: tests/lambda_runner.py,
  a process of its own; ``--lambda-batch-size`` / ``--lambda-window`` are the mapping's BatchSize and
  MaximumBatchingWindowInSeconds). ``--replicator follow,lambda`` runs both, one after the other.

Workload: ``--prs`` PRs; each gets ``--jobs`` jobs started then finished (2 x jobs results) within ~2 s,
PR bursts starting ``--stagger`` s apart, each result posted to a random instance. Time to signal = the
PR's last accepted result -> the end of the last GitHub write to that PR (its comment and check run then
show the final state; checked against a render of the warehouse at the end). Defaults are production's:
debounce 3 s, pace 1 s, lease 30 s, marks read every 1 s. DynamoDB requests are counted in moto by
operation and table.

    .venv/bin/python bench/bot_scale.py [--prs 12 --jobs 4 --stagger 4 --modes embedded,dynamo1,dynamo3]
                                        [--replicator follow,lambda]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import relay_payload
from tests.github_fake import APP_ID, APP_SLUG, GitHubStandIn
from tests.servers import REPO_ROOT, ServerProcess

REPO = "pytorch/pytorch"
PUBLIC = "https://hud.test"
BACKENDS = ("acme/npu", "acme/xpu", "acme/tpu", "acme/ipu")
DYNAMO_REQUESTS: Counter[str] = Counter()


def private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def result(pr: int, job: int, *, done: bool, run: str) -> dict[str, Any]:
    body = relay_payload("02_pr_completed_success" if done else "01_pr_in_progress")
    body["trusted"]["verified_repo"] = BACKENDS[job % len(BACKENDS)]
    callback = body["untrusted"]["callback_payload"]
    callback["delivery_id"] = f"{run}-{pr}"
    callback["payload"]["number"] = callback["payload"]["pull_request"]["number"] = pr
    callback["payload"]["pull_request"]["head"]["sha"] = f"{pr:040x}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    callback["workflow"].update(name="ci", job_name=f"job-{job}", check_run_id=str(pr * 100 + job), started_at=now)
    if done:
        callback["workflow"].update(conclusion="failure" if job == 1 else "success", completed_at=now)
    return body


def plan(prs: int, jobs: int, stagger: float, run: str, rng: random.Random) -> list[tuple[float, int, dict[str, Any]]]:
    """(offset s, PR, body): each PR's jobs start in its first second and finish in its second."""
    out = []
    for index in range(prs):
        pr = 190_000 + index
        begin = index * stagger
        for job in range(jobs):
            out.append((begin + rng.uniform(0, 1.0), pr, result(pr, job, done=False, run=run)))
            out.append((begin + rng.uniform(1.0, 2.0), pr, result(pr, job, done=True, run=run)))
    return sorted(out, key=lambda item: item[0])


def count_dynamo_requests() -> None:
    """Count every DynamoDB request moto serves, by operation and table ("state" = the bot's table)."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    @functools.wraps(original)
    def counted(self: Any) -> Any:
        try:
            request = json.loads(self.body or "{}")
        except ValueError:
            request = {}
        table = str(request.get("TableName", ""))
        where = "results"
        if table.endswith("-state"):  # which of the bot's items: marks, pr (lease + ids), rate, delivery
            key = (request.get("Key") or request.get("Item") or {}).get("pk", {}).get("S", "")
            values = request.get("ExpressionAttributeValues") or {}
            key = key or str(values.get(":marks", {}).get("S", ""))
            where = "state " + (key.split("#", 1)[0] or "?")
        DYNAMO_REQUESTS[f"{self._get_action()} {where}"] += 1
        return original(self)

    DynamoHandler.call_action = counted  # type: ignore[method-assign]


@contextlib.contextmanager
def dynamo_backend(work: Path) -> Iterator[Callable[[], dict[str, str]]]:
    """moto's DynamoDB server and a ClickHouse HTTP server over a chDB engine, both in this process; yields
    a function giving each run fresh tables and a fresh database (a run must not see another's state)."""
    from moto.server import ThreadedMotoServer

    from ingest.dynamo_schema import create_state_table, create_table
    from sql.warehouse import Warehouse
    from tests.clickhouse_http import ClickHouseHttpServer
    from tests.conftest import _make_moto_item_writes_atomic

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    _make_moto_item_writes_atomic()
    count_dynamo_requests()
    moto.start()
    host, port = moto.get_host_and_port()
    aws = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_DYNAMODB": f"http://{host}:{port}",
           "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": f"http://{host}:{port}"}
    os.environ.update(aws)
    import boto3

    client = boto3.client("dynamodb")
    engine = work / "engine"
    opened: list[Warehouse] = []
    try:
        with ClickHouseHttpServer(str(engine)) as clickhouse:

            def fresh() -> dict[str, str]:
                name = f"bench{uuid.uuid4().hex[:8]}"
                create_table(client, name)
                create_state_table(client, f"{name}-state")
                opened.append(Warehouse.connect(url=None, data_dir=engine, database=name))
                opened[-1].apply_schema()
                return {**aws, "OOT_HUD_DYNAMO_TABLE": name, "OOT_HUD_CLICKHOUSE_URL": f"{clickhouse.url}/{name}"}

            yield fresh
    finally:
        for warehouse in opened:
            warehouse.close()
        moto.stop()


def replicator_command(replicator: str, args: argparse.Namespace, table: str) -> list[str]:
    if replicator == "lambda":
        return [sys.executable, "-m", "tests.lambda_runner", "--table", table, "--batch-size",
                str(args.lambda_batch_size), "--window", str(args.lambda_window)]
    return [sys.executable, "-m", "oot_hud", "replicate", "--follow"]


def run_mode(mode: str, args: argparse.Namespace, key: str, work: Path, backend: dict[str, str] | None,
             replicator: str = "follow") -> dict[str, Any]:
    instances = {"embedded": 1, "dynamo1": 1, "dynamo3": 3}[mode]
    rng = random.Random(args.seed)
    DYNAMO_REQUESTS.clear()
    with GitHubStandIn(write_latency=0.4) as hub:
        env = {"OOT_HUD_GITHUB_APP_ID": str(APP_ID), "OOT_HUD_GITHUB_PRIVATE_KEY": key,
               "OOT_HUD_GITHUB_WEBHOOK_SECRET": "bench", "OOT_HUD_GITHUB_API_URL": hub.url,
               "OOT_HUD_GITHUB_APP_SLUG": APP_SLUG, "OOT_HUD_PUBLIC_URL": PUBLIC,
               "OOT_HUD_RATE_LIMIT_PER_MINUTE": "100000", **(backend or {})}
        servers = [ServerProcess(work / f"{mode}-{i}", env=env, token="bench") for i in range(instances)]
        follower = None
        if backend is not None:
            log = open(work / f"{mode}-{replicator}.log", "wb")
            follower = subprocess.Popen(replicator_command(replicator, args, backend["OOT_HUD_DYNAMO_TABLE"]),
                                        env={**servers[0].env, "OOT_HUD_DATA_DIR": str(work / f"{mode}-follower")},
                                        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
            log.close()
        try:
            with concurrent.futures.ThreadPoolExecutor(instances) as pool:
                list(pool.map(lambda server: server.start(), servers))
            return {**measure(mode, args, servers, hub, rng), "replicator": replicator if backend else "-"}
        finally:
            for server in servers:
                server.stop()
            if follower is not None:
                follower.terminate()
                follower.wait(20)


def measure(mode: str, args: argparse.Namespace, servers: list[ServerProcess], hub: GitHubStandIn,
            rng: random.Random) -> dict[str, Any]:
    schedule = plan(args.prs, args.jobs, args.stagger, mode, rng)
    accepted: dict[int, float] = {}
    lock = threading.Lock()
    started = time.monotonic()
    clients = {server.base_url: httpx.Client(base_url=server.base_url, headers=server.headers) for server in servers}

    def send(offset: float, pr: int, body: dict[str, Any]) -> None:
        time.sleep(max(0.0, started + offset - time.monotonic()))
        answer = clients[rng.choice(servers).base_url].post("/api/oot/results", json=body, timeout=30)
        answer.raise_for_status()
        with lock:
            accepted[pr] = max(accepted.get(pr, 0.0), time.monotonic())

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda item: send(*item), schedule))
    # Wait for the writes to stop: quiet for debounce + lease + a margin.
    quiet_for = args.quiet
    while True:
        last = hub.snapshot(lambda fake: max((at for at, _ in hub.done), default=0.0))
        if time.monotonic() - max(last, max(accepted.values())) > quiet_for:
            break
        time.sleep(0.5)
    for client in clients.values():
        client.close()
    return report(mode, len(servers), accepted, hub, len(schedule))


def report(mode: str, instances: int, accepted: dict[int, float], hub: GitHubStandIn, results: int
           ) -> dict[str, Any]:
    def read(fake: Any) -> tuple[list[tuple[float, Any]], dict[int, int], dict[int, int], int, int]:
        comment_pr = {c["id"]: c["number"] for c in fake.comments.values()}
        run_pr = {r["id"]: int(r["external_id"].rsplit("#", 1)[1]) for r in fake.check_runs.values()}
        return list(hub.done), comment_pr, run_pr, len(fake.comments), len(fake.check_runs)

    done, comment_pr, run_pr, comments, runs = hub.snapshot(read)
    arrived = hub.snapshot(lambda fake: sorted(hub.arrived))
    last_write: dict[int, float] = {}
    per_pr: dict[int, Counter[str]] = defaultdict(Counter)
    for at, call in done:
        if call.kind == "comment.create":
            pr = int(call.path.split("/issues/")[1].split("/")[0])
        elif call.kind.startswith("comment."):
            pr = comment_pr.get(int(call.path.rsplit("/", 1)[1]), -1)
        elif call.kind == "check.create":
            pr = int(call.json["external_id"].rsplit("#", 1)[1])
        else:
            pr = run_pr.get(int(call.path.rsplit("/", 1)[1]), -1)
        per_pr[pr][call.kind.split(".")[0]] += 1
        last_write[pr] = max(last_write.get(pr, 0.0), at)
    signal = sorted(max(0.0, last_write[pr] - accepted[pr]) for pr in accepted if pr in last_write)
    gaps = [b - a for a, b in itertools.pairwise(arrived)]
    quantile = statistics.quantiles(signal, n=20) if len(signal) >= 2 else signal * 19
    dynamo = dict(sorted(DYNAMO_REQUESTS.items()))
    return {
        "mode": mode, "instances": instances, "prs": len(accepted), "results": results,
        "prs_written": len(last_write),
        "time_to_signal_s": {"p50": round(statistics.median(signal), 2) if signal else None,
                             "p95": round(quantile[18], 2) if signal else None,
                             "max": round(max(signal), 2) if signal else None},
        "comment_writes_per_pr": {"max": max((c["comment"] for c in per_pr.values()), default=0),
                                  "mean": round(statistics.mean(c["comment"] for c in per_pr.values()), 2)},
        "check_writes_per_pr": {"max": max((c["check"] for c in per_pr.values()), default=0),
                                "mean": round(statistics.mean(c["check"] for c in per_pr.values()), 2)},
        "comments_on_github": comments, "check_runs_on_github": runs,
        # The combined pace of content-creating calls across instances (arrivals at the GitHub stand-in).
        "write_arrivals": {"min_gap_s": round(min(gaps), 3) if gaps else None,
                           "gaps_below_0_9_s": sum(1 for gap in gaps if gap < 0.9),
                           "peak_in_10_s": peak(arrived, 10.0), "peak_in_60_s": peak(arrived, 60.0)},
        "dynamodb_requests": dynamo,
        "dynamodb_requests_per_result": round(sum(dynamo.values()) / results, 2) if dynamo else 0,
    }


def peak(times: list[float], window: float) -> int:
    """The most of ``times`` (sorted) within any ``window`` seconds."""
    start, best = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prs", type=int, default=12)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--stagger", type=float, default=4.0, help="seconds between two PRs' bursts (below "
                        "~2.5 s the writes of one installation queue behind its 1 s pacing)")
    parser.add_argument("--quiet", type=float, default=8.0, help="seconds without a write that end a run")
    parser.add_argument("--modes", default="embedded,dynamo1,dynamo3")
    parser.add_argument("--replicator", default="follow", help="follow, lambda or both (comma-separated)")
    parser.add_argument("--lambda-batch-size", type=int, default=100)
    parser.add_argument("--lambda-window", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep the servers' logs")
    args = parser.parse_args()
    key = private_key()
    reports = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        modes = args.modes.split(",")
        if "embedded" in modes:
            reports.append(run_mode("embedded", args, key, work, None))
        dynamo_modes = [m for m in modes if m != "embedded"]
        if dynamo_modes:
            with dynamo_backend(work) as fresh:
                for replicator in args.replicator.split(","):
                    for mode in dynamo_modes:
                        reports.append(run_mode(mode, args, key, work, fresh(), replicator))
    print(json.dumps({"load_before": [round(x, 2) for x in load_before],
                      "load_after": [round(x, 2) for x in os.getloadavg()], "runs": reports}, indent=2))
    # Pace 1 s for the installation across all instances: at most 10 writes in any 10 s (+1 at the edges),
    # 61 in any minute (GitHub's secondary limit: ~80).
    ok = all(r["comment_writes_per_pr"]["max"] <= 2 and r["check_writes_per_pr"]["max"] <= 2
             and r["comments_on_github"] == r["prs"] and r["write_arrivals"]["peak_in_10_s"] <= 11
             and r["write_arrivals"]["peak_in_60_s"] <= 61 for r in reports)
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
