"""The embedded engine gives back what a burst took (docs/soak.md): idle threads beyond a few exit, outdated
parts are removed without a pool of 128 threads that then stays, and marks load in a pool of a few threads
(each thread that ran a query also holds three /proc files open, so threads are descriptors too)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ingest.stores.embedded import prepare_tables
from sql.warehouse import ENGINE_OPTIONS, Warehouse


def test_the_engine_keeps_few_idle_threads_and_removes_parts_one_by_one(warehouse: Warehouse) -> None:
    free = warehouse.query("SELECT value FROM system.server_settings WHERE name = 'max_thread_pool_free_size'")
    assert int(free[0]["value"]) == ENGINE_OPTIONS["max_thread_pool_free_size"] <= 32
    prepare_tables(warehouse)  # what serve does before it answers anything
    tables = warehouse.query("SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() "
                             "AND engine LIKE '%MergeTree'")
    assert {"oot_job_results", "oot_summary_legs", "oot_dead_letters"} <= {table["name"] for table in tables}
    for table in tables:
        assert "concurrent_part_removal_threshold = 1000000" in table["create_table_query"], table["name"]


def _engine_threads() -> int:
    """Threads of this process the engine's pools started (they are all named "ThreadPool" while idle)."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/self/task/{tid}/comm").read_text().strip())
    return names.count("ThreadPool")


def test_reading_a_wide_part_leaves_few_threads_behind(warehouse: Warehouse) -> None:
    """The soak's step at minute 8: the first read of a Wide part loads one marks file per column, and the
    marks pool (50 threads by default) kept every thread it started. Bounded, 60 columns leave few behind."""
    assert int(warehouse.query("SELECT value FROM system.server_settings WHERE name = "
                               "'load_marks_threadpool_pool_size'")[0]["value"]) == ENGINE_OPTIONS[
        "load_marks_threadpool_pool_size"] <= 8
    columns = [f"c{i}" for i in range(60)]
    warehouse.command(f"CREATE TABLE wide ({', '.join(f'{c} String' for c in columns)}) ENGINE = MergeTree "
                      "ORDER BY c0 SETTINGS min_bytes_for_wide_part = 0, min_rows_for_wide_part = 0")
    warehouse.command(f"INSERT INTO wide SELECT {', '.join('toString(number)' for _ in columns)} "
                      "FROM numbers(20000)")
    assert warehouse.query("SELECT part_type FROM system.parts WHERE database = currentDatabase() "
                           "AND table = 'wide' AND active")[0]["part_type"] == "Wide"
    before = _engine_threads()
    for _ in range(3):
        warehouse.command("SYSTEM DROP MARK CACHE")
        total = warehouse.query(f"SELECT count() AS n FROM wide WHERE {' OR '.join(f'{c} = {c}' for c in columns)}")
        assert total[0]["n"] == 20000
    grown = _engine_threads() - before
    assert grown <= ENGINE_OPTIONS["max_thread_pool_free_size"] + ENGINE_OPTIONS["load_marks_threadpool_pool_size"], (
        f"{grown} more engine threads after reading a 60-column Wide part")
