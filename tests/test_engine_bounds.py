"""The embedded engine gives back what a burst took (docs/soak.md): idle threads beyond a few exit, and outdated
parts are removed without a pool of 128 threads that then stays (each thread that ran a query also holds three
/proc files open, so threads are descriptors too)."""

from __future__ import annotations

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
