"""Every saved query x every sample in its params.json runs on the embedded warehouse; declarations match
the SQL; and results are the same before and after the table's parts are merged (replays collapse)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from sql.records import COLUMN_NAMES, JOB_RESULTS_TABLE, format_time
from sql.saved import load, names
from sql.warehouse import Warehouse
from tests.readpath_data import NOW, record, row

CASES = [(name, index) for name in names() for index in range(len(load(name).tests))]
PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*):([A-Za-z0-9()', ]+)\}")
# Parameters that make each query read the seeded data (queries added later fall back to their first sample).
SEEDED_PARAMS: dict[str, dict[str, Any]] = {
    "oot_summary": {"days": 7, "now": format_time(NOW), "silence_hours": 6},
    "oot_backend_dashboard": {"repo": "acme/torch-acme", "days": 7, "now": format_time(NOW),
                              "offset": 0, "max_prs": 200, "max_trunk": 30, "event": ""},
    "oot_pr_results": {"upstream_repo": "pytorch/pytorch", "pr": 100},
    "oot_pr_rows": {"upstream_repo": "pytorch/pytorch", "pr": 100},
}


def seed_rows() -> list[list[Any]]:
    """A small history: re-runs, legs, a silent job, trunk, an L1 backend, two head SHAs."""
    return [
        row(record(attempt=1, conclusion="failure")), row(record(attempt=2, conclusion="success")),
        row(record(job="legs", leg="a")), row(record(job="legs", leg="b", conclusion="timed_out")),
        row(record(job="silent", status="in_progress", started=NOW - timedelta(hours=9))),
        row(record(sha="b" * 40, job="test", received=NOW - timedelta(minutes=5))),
        row(record(pr=0, sha="c" * 40, conclusion="failure")),
        row(record(backend="other/backend", level="L3", pr=101, conclusion="cancelled")),
        row(record(backend="onboarding/l1", level="L1")),
    ]


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_every_sample_runs(warehouse: Warehouse, name: str, index: int) -> None:
    warehouse.insert_job_rows(seed_rows())
    query = load(name)
    rows = query.run(warehouse, query.tests[index])
    assert isinstance(rows, list)
    assert all(isinstance(r, dict) for r in rows)


@pytest.mark.parametrize("name", names())
def test_declared_params_match_the_sql(name: str) -> None:
    query = load(name)
    assert query.tests, f"{name} has no samples in params.json"
    used = dict(PLACEHOLDER.findall(query.sql))
    assert used == query.params, f"{name}: SQL placeholders {used} != params.json {query.params}"


def _run_all(warehouse: Warehouse) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in names():
        query = load(name)
        out[name] = query.run(warehouse, SEEDED_PARAMS.get(name, query.tests[0]))
    return out


def test_results_identical_merged_or_not(warehouse: Warehouse) -> None:
    """Insert in several parts with replays and superseded versions, read, merge, read again."""
    rows = seed_rows()
    # Older versions of the same keys (an in_progress before each completion), inserted in a separate part
    # AFTER the newer ones, plus an exact replay of every row in a third part.
    older = []
    for r in rows:
        stale = list(r)
        stale[-2] = r[-2] - 1_000_000  # version column: strictly older
        older.append(stale)
    warehouse.insert_job_rows(rows[:4])
    warehouse.insert_job_rows(rows[4:])
    warehouse.insert_job_rows(older)
    warehouse.insert_job_rows(rows)
    parts = warehouse.query("SELECT count() AS n FROM system.parts WHERE database = currentDatabase() "
                            "AND table = {t:String} AND active", {"t": JOB_RESULTS_TABLE})[0]["n"]
    assert parts >= 2, "the test needs unmerged parts"
    before = _run_all(warehouse)
    warehouse.command(f"OPTIMIZE TABLE {JOB_RESULTS_TABLE} FINAL")
    after = _run_all(warehouse)
    assert before == after
    assert before["oot_summary"], "the seeded data must be visible"
    # and equal to a table that never saw a replay
    warehouse.command(f"TRUNCATE TABLE {JOB_RESULTS_TABLE}")
    warehouse.insert_job_rows(rows)
    assert _run_all(warehouse) == before


def test_summary_copy_backfills_an_existing_database(warehouse: Warehouse) -> None:
    """A data dir from before sql/schema/011 (no narrow copy, no view) gets its history copied on the next
    schema application, and a record written while the view was missing is caught up; the summary is equal."""
    rows = seed_rows()
    warehouse.insert_job_rows(rows[:5])
    params = SEEDED_PARAMS["oot_summary"]
    warehouse.insert_job_rows(rows[5:])
    expected = load("oot_summary").run(warehouse, params)
    warehouse.command("DROP VIEW oot_summary_legs_mv")
    warehouse.command("DROP TABLE oot_summary_legs")
    warehouse.apply_schema()
    assert load("oot_summary").run(warehouse, params) == expected
    # a newer version written between the full copy and the view's creation (a concurrent writer)
    warehouse.command("DROP VIEW oot_summary_legs_mv")
    newer = list(rows[0])
    newer[-2] += 1_000_000  # version
    newer[COLUMN_NAMES.index("conclusion")] = "success"  # attempt 1 no longer failed: not flaky any more
    newer[COLUMN_NAMES.index("received_at")] = NOW
    warehouse.insert_job_rows([newer])
    warehouse.apply_schema()
    assert load("oot_summary").run(warehouse, params) != expected
    after_catch_up = load("oot_summary").run(warehouse, params)
    warehouse.command(f"OPTIMIZE TABLE {JOB_RESULTS_TABLE} FINAL")
    warehouse.command("OPTIMIZE TABLE oot_summary_legs FINAL")
    assert load("oot_summary").run(warehouse, params) == after_catch_up


def test_summary_copy_view_and_materialized_view_project_alike(warehouse: Warehouse) -> None:
    """sql/schema/011 writes its projection twice (the backfill view and the materialized view, which must
    read the table itself): every row the materialized view wrote equals the view's row for that version."""
    warehouse.insert_job_rows(seed_rows())
    order = " ORDER BY key_id, version"
    by_mv = warehouse.query("SELECT * FROM oot_summary_legs" + order)
    by_view = warehouse.query("SELECT * FROM oot_summary_legs_source" + order)
    assert by_mv and by_mv == by_view


@pytest.mark.parametrize("name", names())
def test_defaults_are_declared_parameters_of_their_type(name: str) -> None:
    """A default stands in for a left-out parameter only; the value passed is the declared one, typed."""
    query = load(name)
    assert set(query.defaults) <= set(query.params)
    required = {key: value for key, value in query.tests[0].items() if key not in query.defaults}
    bound = query.bind(required)
    assert set(bound) == set(query.params)
    assert all(bound[key] == value for key, value in query.defaults.items())


@pytest.mark.parametrize("name", names())
def test_every_query_runs_again_and_again(warehouse: Warehouse, name: str) -> None:
    """chDB's materialized CTEs read by other materialized CTEs failed about two runs in three ("Reading from
    materialized CTE before its materialization completed", LOGICAL_ERROR), on an empty table as on a full
    one: a page served a 503 at random. Ten runs of each query's first sample catch such a plan."""
    query = load(name)
    for _ in range(10):
        assert isinstance(query.run(warehouse, query.tests[0]), list)
