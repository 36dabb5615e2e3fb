"""The trunk check beside the PR read: a second connection, the same rows, the same freshness."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sql.pr_results import Checked, TrunkFailingCache, failed_backends, fetch_pr_rows
from sql.warehouse import Warehouse, WarehouseError
from tests.readpath_data import NOW, record
from tests.test_pr_view import PR, PR_FIXTURES, TRUNK_FIXTURES, ingest
from tests.test_trunk_cache import UPSTREAM, pr_job, saved_flags, trunk


@pytest.fixture
def connected(warehouse: Warehouse, engine_dir: Path) -> Iterator[Warehouse]:
    """A warehouse opened like the server's (it can open its side connection), on the test's database."""
    opened = Warehouse.connect(url=None, data_dir=engine_dir, database=warehouse.database)
    yield opened
    opened.close()


class RecordingCache(TrunkFailingCache):
    """Notes where each check ran: on which thread, through which connection."""

    def __init__(self) -> None:
        super().__init__(ttl_seconds=3600)
        self.checks: list[tuple[str, Warehouse]] = []

    def check(self, warehouse: Warehouse, upstream_repo: str, candidates: Callable[[], Iterable[str]]) -> Checked:
        self.checks.append((threading.current_thread().name, warehouse))
        return super().check(warehouse, upstream_repo, candidates)


def flags(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(row["key"], row["also_failing_on_trunk"]) for row in rows]


async def test_the_check_runs_beside_the_read_on_the_side_connection_and_changes_nothing(
        warehouse: Warehouse, connected: Warehouse) -> None:
    await ingest(warehouse, [*PR_FIXTURES, *TRUNK_FIXTURES])
    cache = RecordingCache()
    rows = fetch_pr_rows(connected, UPSTREAM, PR, trunk=cache)
    side = connected.side_reader()
    assert side is not None and side is not connected and connected.side_reader() is side
    assert [(name.startswith("trunk-check"), used) for name, used in cache.checks] == [(True, side)]
    # the same rows and flags as the one-connection path (the tests' borrowed warehouse has no side)
    assert warehouse.side_reader() is None
    assert rows == fetch_pr_rows(warehouse, UPSTREAM, PR, trunk=TrunkFailingCache())
    assert flags(rows) == saved_flags(warehouse, PR)
    assert any(flag for _, flag in saved_flags(warehouse, PR, narrowed=False)), "a job failing on trunk"
    # a miss fetched every backend under the fingerprint it read: the next render is a hit
    hits = cache.hits
    assert fetch_pr_rows(connected, UPSTREAM, PR, trunk=cache) == rows
    assert cache.hits == hits + 1 and cache.misses == 1  # the check finds the entry fresh: one lookup


def test_a_trunk_change_is_seen_on_the_next_render(warehouse: Warehouse, connected: Warehouse) -> None:
    cache = RecordingCache()
    warehouse.insert_job_rows([pr_job("test"), pr_job("build"),
                               trunk("test", "success", "1" * 40, NOW - timedelta(hours=3)),
                               trunk("build", "success", "1" * 40, NOW - timedelta(hours=3))])
    failing = {key for key, flag in flags(fetch_pr_rows(connected, UPSTREAM, 100, trunk=cache)) if flag}
    assert failing == set()
    warehouse.insert_job_rows([trunk("test", "failure", "2" * 40, NOW - timedelta(hours=2)),
                               trunk("build", "success", "2" * 40, NOW - timedelta(hours=2))])
    failing = {key for key, flag in flags(fetch_pr_rows(connected, UPSTREAM, 100, trunk=cache)) if flag}
    assert failing == {record(pr=100, job="test").key}
    assert cache.misses == 2 and len(cache.checks) == 2


def test_a_miss_fetches_only_the_backends_with_a_failed_row(warehouse: Warehouse, connected: Warehouse) -> None:
    at = NOW - timedelta(hours=3)
    warehouse.insert_job_rows([pr_job("test"), pr_job("lint", "success", backend="other/torch-other"),
                               trunk("test", "failure", "1" * 40, at),
                               trunk("lint", "failure", "1" * 40, at, backend="other/torch-other")])
    assert failed_backends(connected, UPSTREAM, 100) == ["acme/torch-acme"]
    cache = RecordingCache()
    rows = fetch_pr_rows(connected, UPSTREAM, 100, trunk=cache)
    assert {row["job_name"]: row["also_failing_on_trunk"] for row in rows} == {"test": 1, "lint": 0}
    assert flags(rows) == saved_flags(warehouse, 100)
    entry = cache._entries[UPSTREAM]
    assert set(entry.by_backend) == {"acme/torch-acme"} and not entry.complete  # the other one: not read


class BrokenSide(Warehouse):
    def __init__(self) -> None:
        pass

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        raise WarehouseError("Connection refused")


def test_a_failed_check_fails_a_render_that_needs_the_trunk_and_spares_one_that_does_not(
        warehouse: Warehouse, connected: Warehouse, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    warehouse.insert_job_rows([pr_job("test", pr=100), pr_job("test", "success", pr=101),
                               trunk("test", "failure", "1" * 40, NOW - timedelta(hours=3))])
    monkeypatch.setattr(connected, "side_reader", BrokenSide)
    with pytest.raises(WarehouseError, match="refused"):
        fetch_pr_rows(connected, UPSTREAM, 100, trunk=TrunkFailingCache())
    rows = fetch_pr_rows(connected, UPSTREAM, 101, trunk=TrunkFailingCache())  # nothing failed: no trunk needed
    assert [row["also_failing_on_trunk"] for row in rows] == [0]


def test_the_side_connection_closes_with_its_warehouse(warehouse: Warehouse, engine_dir: Path) -> None:
    opened = Warehouse.connect(url=None, data_dir=engine_dir, database=warehouse.database)
    side = opened.side_reader()
    assert side is not None and side.query("SELECT 1 AS ok") == [{"ok": 1}]
    opened.close()
    assert opened.side_reader() is None
    with pytest.raises(WarehouseError):
        side.query("SELECT 1 AS ok")
