"""Benchmark: stream records/second converted + inserted by the replicator vs a bare ``client.insert``.

Run: ``.venv/bin/python bench/replicate.py [--records N] [--repeat R]``. Both paths write the same rows
into their own fresh ``oot_job_results`` table of one embedded engine, interleaved batch by batch (which
goes first alternates); each path's figure comes from its median batch time, which resists the noise of a
shared machine. Overhead = replicator batch time / bare batch time - 1, in wall time and in CPU time of the
calling thread (the embedded engine runs an insert in the caller's thread). A slow disk stretches the bare
insert's wall time more than the replicator's Python work and flatters the wall ratio; the CPU ratio does
not depend on the disk, so the bench prints both, and the disk's pressure (``/proc/pressure/io``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boto3.dynamodb.types import TypeSerializer

from replicator.columns import convert_columns
from replicator.convert import convert_record
from replicator.pipeline import Replicator
from sql.records import COLUMN_NAMES, JOB_RESULTS_TABLE, JobRecord, item_to_row
from sql.warehouse import INSERT_SETTINGS, Warehouse

SOURCE = "oot-results"
ARN = f"arn:aws:dynamodb:us-east-1:123456789012:table/{SOURCE}/stream/2026-11-27T00:00:00.000"


def make_records(count: int) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """``count`` MODIFY records of completed jobs (distinct keys) and the rows they must become.

    Times, durations and test counts vary from record to record, so caches of repeated values in the
    conversion get no more help than real results would give them.
    """
    serializer = TypeSerializer()
    base = datetime(2026, 11, 27, 12, tzinfo=UTC)
    records, rows = [], []
    for n in range(count):
        received = base + timedelta(seconds=n, milliseconds=n % 1000)
        passed, failed, skipped = 50 + n % 400, n % 3, n % 7
        record = JobRecord(
            key=f"acme/npu/d{n}/ci/test/{n}", downstream_repo="acme/npu", event_type="pull_request",
            delivery_id=f"d{n}", upstream_repo="pytorch/pytorch", pr_number=1000 + n % 50, head_sha=f"{n:040x}",
            workflow_name="ci", job_name=f"test ({n % 8})", check_run_id=str(n), run_attempt=1 + n % 2,
            status="completed", received_at=received, downstream_level="L3",
            conclusion="success" if not failed else "failure", started_at=received - timedelta(seconds=n % 900),
            completed_at=received, queue_time_s=(n % 600) / 10, execution_time_s=60 + (n * 37 % 10_000) / 100,
            tests_passed=passed, tests_failed=failed, tests_skipped=skipped, tests_total=passed + failed + skipped)
        item = record.present_fields()
        item["version"] = 2
        image = {k: serializer.serialize(Decimal(str(v)) if isinstance(v, float) else v) for k, v in item.items()}
        records.append({"eventID": str(n), "eventName": "MODIFY", "eventSourceARN": ARN,
                        "dynamodb": {"Keys": {"key": image["key"]}, "NewImage": image,
                                     "SequenceNumber": str(10**20 + n)}})
        rows.append(item_to_row(item))
    return records, rows


def io_pressure() -> str:
    """The share of the last 10 s in which every task waited on I/O (Linux PSI), for reading the figures."""
    try:
        full = Path("/proc/pressure/io").read_text().splitlines()[1]
    except (OSError, IndexError):
        return "n/a"
    return full.split()[1].removeprefix("avg10=") + " %"


def run(data_dir: Path, records: list[dict[str, Any]], rows: list[list[Any]], batch: int,
        repeat: int) -> dict[str, float]:
    """Per-batch timings of both paths, alternating which goes first; throughput from the median batch."""
    replicated: list[float] = []
    bare: list[float] = []
    replicated_cpu: list[float] = []
    bare_cpu: list[float] = []
    for attempt in range(repeat):
        target = Warehouse.connect(url=None, data_dir=data_dir, database=f"bench_rep_{batch}_{attempt}")
        target.apply_schema()
        plain = Warehouse.connect(url=None, data_dir=data_dir, database=f"bench_bare_{batch}_{attempt}")
        plain.apply_schema()
        client = plain._client  # the bare clickhouse-connect client, no wrapper
        replicator = Replicator.for_warehouse(target, {SOURCE: JOB_RESULTS_TABLE})

        def replicate(start: int, replicator: Replicator = replicator) -> None:
            result = replicator.process(records[start:start + batch])
            assert result.ok and result.landed == len(records[start:start + batch])

        def insert(start: int, client: Any = client) -> None:
            client.insert(JOB_RESULTS_TABLE, rows[start:start + batch], column_names=list(COLUMN_NAMES),
                          settings=INSERT_SETTINGS)  # the bare path names them per call

        # Warm up both tables (first part, caches) with the first batch, untimed; re-inserting it later is
        # idempotent for the replicator and only adds duplicate rows to the bare table.
        replicate(0)
        insert(0)
        for number, start in enumerate(range(0, len(records), batch)):
            order = [(replicate, replicated, replicated_cpu), (insert, bare, bare_cpu)]
            for step, timings, cpu in order if number % 2 == 0 else reversed(order):
                started, started_cpu = time.perf_counter(), time.thread_time()
                step(start)
                timings.append(time.perf_counter() - started)
                cpu.append(time.thread_time() - started_cpu)
        for wh in (target, plain):
            assert wh.query("SELECT count(DISTINCT key) AS n FROM oot_job_results")[0]["n"] == len(records)
            wh.command(f"DROP DATABASE {wh.database}")
            wh.close()
    rep, base = statistics.median(replicated), statistics.median(bare)
    rep_cpu, base_cpu = statistics.median(replicated_cpu), statistics.median(bare_cpu)
    return {"batch": batch, "replicator_rps": batch / rep, "bare_rps": batch / base,
            "overhead_pct": (rep / base - 1) * 100, "cpu_overhead_pct": (rep_cpu / base_cpu - 1) * 100}


def conversion_rates(records: list[dict[str, Any]], batch: int = 1000) -> tuple[float, float]:
    """Records/second through ``convert_record`` (one by one) and ``convert_columns`` (batches): best of 3."""
    routes = {SOURCE: JOB_RESULTS_TABLE}
    best = [float("inf"), float("inf")]
    for _ in range(3):
        started = time.perf_counter()
        for record in records:
            convert_record(record, routes)
        best[0] = min(best[0], time.perf_counter() - started)
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            convert_columns(records[start:start + batch], routes)[0][0].rows()
        best[1] = min(best[1], time.perf_counter() - started)
    return len(records) / best[0], len(records) / best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    records, rows = make_records(args.records)
    print(f"{args.records} stream records x {args.repeat} runs, embedded chDB; throughput of the median batch")
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), f"io pressure: {io_pressure()}")
    one_by_one, columnar = conversion_rates(records)
    print(f"conversion alone: convert_record {one_by_one:,.0f} rec/s, convert_columns {columnar:,.0f} rec/s")
    print(f"{'batch':>6} {'replicator rec/s':>17} {'bare insert rec/s':>18} {'overhead':>9} {'CPU overhead':>13}")
    with tempfile.TemporaryDirectory(prefix="oot-bench-") as tmp:
        for batch in (100, 1000):
            figures = run(Path(tmp), records, rows, batch, args.repeat)
            print(f"{figures['batch']:>6} {figures['replicator_rps']:>17,.0f} {figures['bare_rps']:>18,.0f} "
                  f"{figures['overhead_pct']:>8.1f}% {figures['cpu_overhead_pct']:>12.1f}%", flush=True)
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), f"io pressure: {io_pressure()}")


if __name__ == "__main__":
    main()
