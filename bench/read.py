"""Read-path benchmark: 1,000,000 synthetic job rows (100 backends, 5,000 PRs, re-runs, matrix legs, trunk
runs) in an embedded warehouse of its own, then the latency of every saved query and page render, and the
time to publish the whole static site.

    .venv/bin/python bench/read.py [--rows 1000000] [--keep DIR] [--pr-only]

Targets (issue 4): PR query + Markdown < 50 ms; summary page < 300 ms; backend matrix < 300 ms; publishing
the site for 100 backends < 60 s. Latencies are the median of several warm runs.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from oot_hud.pages import backend_html, badge_svg, summary_html, trends_html
from oot_hud.publish import render_site, write_site
from renderers.backend import MAX_TRUNK, PER_PAGE, BackendView
from renderers.frame import Site
from sql.records import COLUMN_NAMES, format_time
from sql.saved import load
from sql.warehouse import Warehouse

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BACKENDS = 100
PRS = 5_000
CHUNK = 100_000
LEVELS = ["L4"] * 10 + ["L3"] * 30 + ["L2"] * 50 + ["L1"] * 10
CONCLUSIONS = ["success"] * 85 + ["failure"] * 8 + ["timed_out"] * 2 + ["cancelled"] * 4 + ["skipped"]


def backend_name(index: int) -> str:
    return f"vendor{index:03d}/pytorch-backend-{index:03d}"


def synthetic_rows(target: int, seed: int = 7) -> Iterator[list[Any]]:
    """Rows in ``COLUMN_NAMES`` order until ``target``: PR runs by ~20 backends each, then trunk runs."""
    rng = random.Random(seed)
    col = {name: i for i, name in enumerate(COLUMN_NAMES)}
    produced = 0
    version = 1
    jobs_per_backend = {b: [f"job-{j}" for j in range(rng.randint(3, 8))] for b in range(BACKENDS)}
    legs_per_job = {(b, j): rng.choice([1, 1, 1, 2, 3]) for b in range(BACKENDS) for j in range(8)}

    def make(b: int, pr: int, sha: str, job_index: int, job: str, attempt: int, leg: int, at: datetime,
             event: str) -> list[Any]:
        nonlocal version
        version += 1
        repo = backend_name(b)
        out: list[Any] = [None] * len(COLUMN_NAMES)
        delivery = f"{sha[:12]}-{pr}"
        in_progress = at > NOW - timedelta(hours=2) and rng.random() < 0.5
        conclusion = "" if in_progress else rng.choice(CONCLUSIONS)
        started = at - timedelta(seconds=rng.randint(300, 5400))
        values = {
            "key": f"{repo}/{delivery}/ci/{job}/{pr}{attempt}{leg}{job_index}", "downstream_repo": repo,
            "downstream_level": LEVELS[b], "event_type": event, "delivery_id": delivery,
            "upstream_repo": "pytorch/pytorch", "pr_number": pr, "head_sha": sha,
            "ref": "refs/heads/main" if pr == 0 else "", "workflow_name": "ci", "job_name": job,
            "check_run_id": f"{pr}{attempt}{leg}{job_index}", "run_id": f"{pr}{b}", "run_attempt": attempt,
            "workflow_url": f"https://github.com/{repo}/actions/runs/{pr}{b}",
            "artifact_url": f"https://example.com/{repo}/{pr}" if leg == 0 else "", "schema_version": "1",
            "status": "in_progress" if in_progress else "completed", "conclusion": conclusion,
            "started_at": started, "completed_at": None if in_progress else at,
            "queue_time_s": float(rng.randint(1, 600)), "execution_time_s": None if in_progress else
            (at - started).total_seconds(),
            "tests_passed": None if in_progress else rng.randint(100, 5000),
            "tests_failed": None if in_progress else (0 if conclusion == "success" else rng.randint(1, 20)),
            "tests_skipped": None if in_progress else rng.randint(0, 50), "tests_total": None,
            "first_received_at": started, "received_at": at, "version": version, "deleted": 0,
        }
        for name, value in values.items():
            out[col[name]] = value
        return out

    trunk_share = target // 12
    pr = 0
    while produced < target - trunk_share:
        # PR numbers grow with time (as on GitHub): PR n opens at a time proportional to n over 30 days;
        # ~15 backends x ~6 jobs x legs x re-runs x heads is ~185 rows a PR, so 5,000 PRs make ~920,000 rows
        pr = pr % PRS + 1
        heads = [f"{rng.getrandbits(160):040x}" for _ in range(rng.choice([1, 1, 2]))]
        start = NOW - timedelta(days=30 * (1 - pr / PRS), hours=rng.random() * 12)
        for b in rng.sample(range(BACKENDS), 15):
            for h, sha in enumerate(heads):
                at = start + timedelta(hours=6 * h)
                for j, job in enumerate(jobs_per_backend[b]):
                    attempts = 2 if rng.random() < 0.08 else 1
                    for attempt in range(1, attempts + 1):
                        for leg in range(legs_per_job[(b, j)]):
                            yield make(b, pr, sha, j, job, attempt, leg,
                                       min(at + timedelta(minutes=40 * attempt), NOW), "pull_request")
                            produced += 1
    while produced < target:
        b = rng.randrange(BACKENDS)
        sha = f"{rng.getrandbits(160):040x}"
        at = NOW - timedelta(days=30 * rng.random())
        for j, job in enumerate(jobs_per_backend[b][:3]):
            yield make(b, 0, sha, j, job, 1, 0, at, rng.choice(["push", "push", "nightly", "periodic"]))
            produced += 1


def load_rows(warehouse: Warehouse, target: int) -> float:
    started = time.perf_counter()
    chunk: list[list[Any]] = []
    for produced, r in enumerate(synthetic_rows(target), 1):
        chunk.append(r)
        if len(chunk) >= CHUNK:
            warehouse.insert_job_rows(chunk)
            chunk = []
            print(f"  loaded {produced:,} rows", file=sys.stderr, flush=True)
        if produced >= target:
            break
    warehouse.insert_job_rows(chunk)
    return time.perf_counter() - started


def median_ms(fn: Callable[[], Any], runs: int = 7) -> tuple[float, float]:
    """Median wall time and median CPU time (all threads of this process) of warm runs, in ms. On a shared,
    loaded machine the CPU time is the steadier figure: it does not count time spent waiting for a core."""
    fn()  # warm
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="data dir to reuse/keep (default: a temp dir)")
    parser.add_argument("--pr-only", action="store_true", help="only the PR query and Markdown (no pages, no site)")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="oot-bench-read-"))
    warehouse = Warehouse.connect(url=None, data_dir=data_dir, database="bench_read")
    warehouse.apply_schema()
    have = warehouse.query("SELECT count() AS n FROM oot_job_results")[0]["n"]
    if have < args.rows:
        warehouse.command("TRUNCATE TABLE oot_job_results")
        warehouse.command("TRUNCATE TABLE oot_summary_legs")  # the summary's copy (011), not emptied by the above
        print(f"loading {args.rows:,} rows into {data_dir} ...", file=sys.stderr)
        seconds = load_rows(warehouse, args.rows)
        print(f"load: {args.rows:,} rows in {seconds:.1f} s")
    stats = warehouse.query("SELECT count() AS n, uniqExact(downstream_repo) AS b, uniqExact(pr_number) AS p, "
                            "countIf(run_attempt > 1) AS reruns "
                            "FROM oot_job_results")[0]
    print(f"data: {stats['n']:,} rows, {stats['b']} backends, {stats['p']:,} PR numbers (0 = trunk), "
          f"{stats['reruns']:,} re-run rows")

    now = format_time(NOW)
    repo = warehouse.query("SELECT downstream_repo AS r FROM oot_job_results WHERE downstream_level = 'L4' "
                           "GROUP BY r ORDER BY count() DESC LIMIT 1")[0]["r"]
    pr = warehouse.query("SELECT pr_number AS p FROM oot_job_results WHERE pr_number != 0 "
                         "GROUP BY p ORDER BY count() DESC LIMIT 1")[0]["p"]
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 shared cores: wall times grow with it)")
    print(f"{'':<52} {'wall':>9} {'cpu':>9}")

    def measure(label: str, fn: Callable[[], Any], target: float | None = None, runs: int = 7) -> None:
        wall, cpu = median_ms(fn, runs)
        mark = "" if target is None else (f"  < {target:.0f} ms: " + ("ok" if min(wall, cpu) < target else "MISSED"))
        print(f"{label:<52} {wall:6.1f} ms {cpu:6.1f} ms{mark}", flush=True)

    if not args.pr_only:
        for days in (1, 7, 30):
            measure(f"query oot_summary days={days}",
                    lambda d=days: load("oot_summary").run(warehouse, {"days": d, "now": now, "silence_hours": 6}))
        for days in (7, 30):
            measure(f"query oot_backend_dashboard days={days}", lambda d=days: load("oot_backend_dashboard").run(
                warehouse, {"repo": repo, "days": d, "now": now, "offset": 0, "max_prs": PER_PAGE,
                            "max_trunk": MAX_TRUNK, "event": ""}))
        for days in (1, 7, 30):
            measure(f"page summary (query+build+render) days={days}",
                    lambda d=days: summary_html(warehouse, days=d, now=NOW, silence_hours=6, site=Site()), 300)
        for days in (7, 30):
            # the whole page: cards, trends, the first 50 PRs with shards grouped, the trunk (side queries on a
            # second connection beside the dashboard's)
            measure(f"page backend (cards, trends, PR page 1) days={days}",
                    lambda d=days: backend_html(warehouse, repo, days=d, now=NOW, silence_hours=6, site=Site(),
                                                public_url="https://hud.example"), 300)
        measure("page backend, PR page 5, days=30",
                lambda: backend_html(warehouse, repo, days=30, now=NOW, silence_hours=6, site=Site(),
                                     view=BackendView(page=5)), 300)
        measure("page backend, trunk view event=nightly, days=30",
                lambda: backend_html(warehouse, repo, days=30, now=NOW, silence_hours=6, site=Site(),
                                     view=BackendView(event="nightly")), 300)
        for days in (30, 90):
            measure(f"page trends (every backend) days={days}",
                    lambda d=days: trends_html(warehouse, days=d, now=NOW, site=Site()))
        measure("badge (one backend, 7 days)", lambda: badge_svg(warehouse, repo, now=NOW))
    try:
        from renderers.markdown import render_check_run, render_pr_comment
        from renderers.pr_view import build_pr_view
        from sql.pr_results import (
            TRUNK_FINGERPRINT_SQL,
            TrunkFailingCache,
            backends_needing_trunk,
            fetch_pr_rows,
            pr_rows_sql,
            trunk_failing_sql,
        )
    except ImportError:
        print("(PR view / Markdown renderer not available: skipped)")
    else:
        # The PR path as the bot (bot/render.py) and the PR page run it: fetch_pr_rows (the body of view
        # oot_pr_rows inline, timezone-aware rows, + the trunk-failing set of the backends with a failed job from
        # the warehouse's cache) -> build_pr_view -> comment + check run. "cold": a fresh cache per call (the
        # first render after a trunk change: PR rows + fingerprint + trunk set); "warm": the shared cache hits
        # (PR rows + fingerprint). Cheap, so more runs for steadier medians.
        def pr_view(rows: list[dict[str, Any]], number: int) -> Any:
            return build_pr_view(rows, now=NOW, silence_hours=6, public_url="https://hud.example",
                                 upstream_repo="pytorch/pytorch", pr_number=number)

        def markdown(view: Any) -> None:
            render_pr_comment(view)
            render_check_run(view)

        def render(number: int, cold: bool) -> None:
            cache = TrunkFailingCache() if cold else None
            markdown(pr_view(fetch_pr_rows(warehouse, "pytorch/pytorch", number, trunk=cache), number))

        rows = fetch_pr_rows(warehouse, "pytorch/pytorch", pr)
        needing = sorted(backends_needing_trunk(rows))
        print(f"heaviest PR: #{pr}, {len(rows)} rows, {len({r['downstream_repo'] for r in rows})} backends, "
              f"{len(needing)} with a failed job (the trunk set is looked up for those)")
        pr_params = {"upstream_repo": "pytorch/pytorch", "pr": pr}
        measure("query oot_pr_results (saved query, JSON API path)",
                lambda: load("oot_pr_results").run(warehouse, pr_params), runs=21)
        measure("  view oot_trunk_failing (saved query, all backends)",
                lambda: load("oot_trunk_failing").run(warehouse, {"upstream_repo": "pytorch/pytorch"}), runs=21)
        measure("  saved query oot_pr_rows",
                lambda: load("oot_pr_rows").run(warehouse, pr_params), runs=21)
        measure("PR rows (oot_pr_rows' body inline, aware times)",
                lambda: warehouse.query_aware(pr_rows_sql(), pr_params), runs=21)
        measure("  trunk fingerprint",
                lambda: warehouse.query(TRUNK_FINGERPRINT_SQL, {"upstream_repo": "pytorch/pytorch"}), runs=21)
        measure(f"  trunk set of the {len(needing)} backends (body inline)",
                lambda: warehouse.query(trunk_failing_sql(True), {"upstream_repo": "pytorch/pytorch",
                                                                  "backends": needing}), runs=21)
        measure("fetch_pr_rows cold (trunk cache miss)",
                lambda: fetch_pr_rows(warehouse, "pytorch/pytorch", pr, trunk=TrunkFailingCache()), runs=21)
        measure("fetch_pr_rows warm (trunk cache hit)",
                lambda: fetch_pr_rows(warehouse, "pytorch/pytorch", pr), runs=21)
        measure("build_pr_view", lambda: pr_view(rows, pr), runs=21)
        view = pr_view(rows, pr)
        measure("comment + check-run Markdown", lambda: markdown(view), runs=21)
        measure("PR query + view + Markdown, cold", lambda: render(pr, True), 50, runs=21)
        measure("PR query + view + Markdown, warm", lambda: render(pr, False), 50, runs=21)
        # A mix of PRs (numbers spread over the 30 days, sizes and failure counts as they come): the median
        # over PRs of each PR's median; the heaviest PR above is the figure the target is judged on.
        mix = [number for number in range(250, PRS + 1, 500)]
        skipped = sum(not backends_needing_trunk(fetch_pr_rows(warehouse, "pytorch/pytorch", n)) for n in mix)
        for cold in (True, False):
            per_pr = [median_ms(lambda n=number, c=cold: render(n, c), runs=7) for number in mix]
            wall = statistics.median(w for w, _ in per_pr)
            cpu = statistics.median(c for _, c in per_pr)
            label = f"PR mix ({len(mix)} PRs, {skipped} without a failed job), {'cold' if cold else 'warm'}"
            print(f"{label:<52} {wall:6.1f} ms {cpu:6.1f} ms  (median of the PRs' medians; max "
                  f"{max(w for w, _ in per_pr):.1f} ms wall)", flush=True)

    if not args.pr_only:
        out = Path(tempfile.mkdtemp(prefix="oot-bench-site-"))
        started, started_cpu = time.perf_counter(), time.process_time()
        files = render_site(warehouse, ranges=(1, 7, 30), now=NOW, silence_hours=6, public_url="https://hud.example")
        write_site(files, out)
        publish_s, publish_cpu = time.perf_counter() - started, time.process_time() - started_cpu
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        ok = "ok" if min(publish_s, publish_cpu) < 60 else "MISSED"
        print(f"{'publish whole site (1/7/30 days)':<52} {publish_s:6.1f} s  {publish_cpu:6.1f} s   < 60 s: {ok}; "
              f"{len(files)} pages, {size / 1e6:.1f} MB")
        shutil.rmtree(out)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    warehouse.close()
    if args.keep is None:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
