"""Benchmark the GitHub App's writer: replay a burst of results and count what reaches GitHub.

Replays 1,000 results over 20 PRs in 10 seconds through the real embedded store (group commit and
announcements), the real warehouse, renderers and writer, against the in-process GitHub fake (respx),
and prints GitHub writes per PR and in total, the peak writes in any 60 s window, and the time from the
last result to the last write. Targets: <= 2 comment and <= 2 check-run writes per PR; peak < 80/min;
drain ~ writes x pace + debounce.

    .venv/bin/python bench/bot.py [--results 1000 --prs 20 --seconds 10 --debounce 3 --pace 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bot.pr_state import PrHead
from bot.render import warehouse_renderer
from bot.service import Bot
from ingest.stores.embedded import EmbeddedStore
from sql.records import JobRecord
from sql.warehouse import Warehouse
from tests.github_fake import APP_ID, APP_SLUG, FAKE_API, INSTALLATION_ID, GitHubFake

REPO = "pytorch/pytorch"
PUBLIC = "https://hud.test"


def private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def schedule(results: int, prs: int, seconds: float, rng: random.Random) -> list[tuple[float, JobRecord]]:
    """(offset, record) pairs: each job reports in_progress, then completed, spread over the window."""
    now = datetime.now(UTC)
    jobs_per_pr = max(1, results // prs // 2)
    out: list[tuple[float, JobRecord]] = []
    for pr_index in range(prs):
        number = 180_000 + pr_index
        sha = f"{pr_index:02x}" * 20
        for job in range(jobs_per_pr):
            backend = f"acme/backend-{job % 5}"
            level = ("L4", "L3", "L2")[job % 3]
            start = rng.uniform(0, seconds * 0.6)
            end = rng.uniform(start, seconds)
            base = dict(key=f"{backend}/d{number}/ci/job-{job}/{number}{job}", downstream_repo=backend,
                        event_type="pull_request", delivery_id=f"d{number}", upstream_repo=REPO,
                        pr_number=number, head_sha=sha, workflow_name="ci", job_name=f"job-{job}",
                        check_run_id=f"{number}{job}", run_attempt=1, downstream_level=level,
                        workflow_url=f"https://github.com/{backend}/actions/runs/{number}")
            out.append((start, JobRecord(**base, status="in_progress", received_at=now + timedelta(seconds=start),
                                         started_at=now + timedelta(seconds=start))))
            out.append((end, JobRecord(**base, status="completed", conclusion=rng.choice(
                ["success"] * 9 + ["failure"]), received_at=now + timedelta(seconds=end),
                completed_at=now + timedelta(seconds=end), tests_passed=rng.randint(100, 2000),
                tests_failed=0)))
    return sorted(out, key=lambda pair: pair[0])


def peak_in_window(times: list[float], window: float = 60.0) -> int:
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse.connect(url=None, data_dir=Path(tmp), database="bench")
        warehouse.apply_schema()
        fake = GitHubFake(FAKE_API)
        write_times: list[tuple[float, str, str]] = []
        fake.on_request = lambda r: write_times.append((time.monotonic(), r.kind, r.path)) if r.kind in (
            "comment.create", "comment.update", "comment.delete", "check.create", "check.update") else None
        with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
            fake.install(router)
            bot = Bot(warehouse=warehouse, app_id=APP_ID, private_key=private_key(), webhook_secret="s",
                      api_url=FAKE_API, app_slug=APP_SLUG, debounce=args.debounce, pace=args.pace,
                      public_url=PUBLIC, render=warehouse_renderer(warehouse, silence_hours=6.0, public_url=PUBLIC))
            store = EmbeddedStore(warehouse, on_change=bot.on_results)
            await bot.start()
            await store.start()
            plan = schedule(args.results, args.prs, args.seconds, rng)
            for number in sorted({record.pr_number for _, record in plan}):
                sha = next(r.head_sha for _, r in plan if r.pr_number == number)
                bot.state.record_head(PrHead(REPO, number, sha, "open", "main", INSTALLATION_ID, datetime.now(UTC)))
            started = time.monotonic()

            async def replay(offset: float, record: JobRecord) -> float:
                await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
                await store.upsert(record)
                return time.monotonic()

            stored_at = await asyncio.gather(*(replay(offset, record) for offset, record in plan))
            last_result = max(stored_at)
            await bot.drain()
            finished = time.monotonic()
            await store.close()
            await bot.stop()
        warehouse.close()

    comment_writes, check_writes, kinds = _writes_per_pr(fake)
    times = sorted(t for t, _, _ in write_times)
    total = len(write_times)
    return {
        "results": len(plan), "prs": args.prs, "burst_seconds": args.seconds,
        "debounce_s": args.debounce, "pace_s": args.pace,
        "github_writes_total": total, "writes_by_kind": dict(sorted(kinds.items())),
        "comment_writes_per_pr": _spread(comment_writes), "check_run_writes_per_pr": _spread(check_writes),
        "comments_on_github": len(fake.comments), "check_runs_on_github": len(fake.check_runs),
        "peak_writes_in_any_60s": peak_in_window(times),
        "last_result_to_last_write_s": round((times[-1] if times else last_result) - last_result, 2),
        "expected_drain_s (writes x pace + debounce)": round(total * args.pace + args.debounce, 2),
        "wall_s": round(finished - started, 2),
    }


def _writes_per_pr(fake: GitHubFake) -> tuple[Counter[str], Counter[str], Counter[str]]:
    """Accepted comment and check-run writes per PR, and all writes by kind."""
    run_owner = {run_id: run["external_id"] for run_id, run in fake.check_runs.items()}
    comment_owner = {c["id"]: f"{c['repo']}#{c['number']}" for c in fake.comments.values()}
    comments: Counter[str] = Counter()
    checks: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for r in fake.writes():
        kinds[r.kind] += 1
        if r.kind == "comment.create":
            comments[f"{REPO}#{r.path.split('/issues/')[1].split('/')[0]}"] += 1
        elif r.kind in ("comment.update", "comment.delete"):
            comments[comment_owner.get(int(r.path.rsplit("/", 1)[1]), "?")] += 1
        elif r.kind == "check.create":
            checks[r.json["external_id"]] += 1
        elif r.kind == "check.update":
            checks[run_owner[int(r.path.rsplit("/", 1)[1])]] += 1
    return comments, checks, kinds


def _spread(counts: Counter[str]) -> dict[str, int]:
    values = list(counts.values())
    return {"min": min(values, default=0), "max": max(values, default=0), "prs": len(values)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--prs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--debounce", type=float, default=3.0)
    parser.add_argument("--pace", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report, indent=2))
    ok = (report["comment_writes_per_pr"]["max"] <= 2 and report["check_run_writes_per_pr"]["max"] <= 2
          and report["peak_writes_in_any_60s"] < 80)
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
