"""The embedded store on the real engine: merge rules, group commit, cache, failures, announcements."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.extract import extract
from ingest.merge import merge
from ingest.stores.base import Outcome, StoreError
from ingest.stores.embedded import EmbeddedStore
from sql.records import COLUMN_NAMES, JOB_RESULTS_TABLE, JobRecord, PrRef, item_to_row
from sql.warehouse import Warehouse, WarehouseError
from tests.conftest import relay_payload

T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)


def record(name: str, *, at: datetime = T0, **changes: Any) -> JobRecord:
    extracted = extract(relay_payload(name), received_at=at)
    return dataclasses.replace(extracted, **changes) if changes else extracted


def stored(warehouse: Warehouse, key: str) -> dict[str, Any] | None:
    rows = warehouse.query(f"SELECT * FROM {JOB_RESULTS_TABLE} FINAL WHERE key = {{key:String}}", {"key": key})
    assert len(rows) <= 1
    return rows[0] if rows else None


def row_count(warehouse: Warehouse) -> int:
    return int(warehouse.query(f"SELECT count() AS n FROM {JOB_RESULTS_TABLE}")[0]["n"])


# ---- the pure merge rules ----

def test_merge_new_record_is_version_one() -> None:
    merged = merge(None, record("01_pr_in_progress"))
    assert (merged.outcome, merged.version, merged.status) == (Outcome.STORED, 1, "in_progress")
    assert merged.item["first_received_at"] == merged.item["received_at"]


def test_merge_completed_keeps_first_only_fields_and_fills_the_rest() -> None:
    first = merge(None, record("01_pr_in_progress")).item
    later = T0 + timedelta(minutes=40)
    completed = dataclasses.replace(record("02_pr_completed_success", at=later),
                                    started_at=datetime(2030, 1, 1, tzinfo=UTC), queue_time_s=1.0)
    merged = merge(first, completed)
    assert (merged.outcome, merged.version, merged.status) == (Outcome.STORED, 2, "completed")
    item = merged.item
    # First-only: the in_progress callback's values stay even when a later callback carries others.
    assert (item["started_at"], item["queue_time_s"]) == ("2026-11-20T10:03:11.000Z", 42.317)
    assert item["first_received_at"] == "2026-11-20T12:00:00.000Z"
    assert item["received_at"] == "2026-11-20T12:40:00.000Z"
    assert (item["conclusion"], item["tests_total"], item["execution_time_s"]) == ("success", 1220, 2499.6)


def test_merge_never_moves_completed_back() -> None:
    done = merge(None, record("02_pr_completed_success")).item
    merged = merge(done, record("01_pr_in_progress"))
    assert merged.outcome is Outcome.STALE
    assert merged.item == done


def test_merge_same_completed_twice_bumps_the_version_only() -> None:
    done = merge(None, record("02_pr_completed_success")).item
    again = merge(done, record("02_pr_completed_success")).item
    assert again == {**done, "version": 2}


def test_merge_does_not_mutate_the_stored_item() -> None:
    done = merge(None, record("01_pr_in_progress")).item
    snapshot = dict(done)
    merge(done, record("02_pr_completed_success"))
    assert done == snapshot


# ---- the store on the real engine ----

async def test_upsert_is_durable_when_it_returns(warehouse: Warehouse) -> None:
    store = EmbeddedStore(warehouse, commit_window_ms=1)
    result = await store.upsert(record("01_pr_in_progress"))
    assert (result.outcome, result.status, result.version) == (Outcome.STORED, "in_progress", 1)
    row = stored(warehouse, result.key)
    assert row is not None
    expected = dict(zip(COLUMN_NAMES, item_to_row(merge(None, record("01_pr_in_progress")).item), strict=True))
    assert {k: row[k] for k in ("status", "version", "head_sha", "pr_number", "queue_time_s")} == {
        k: expected[k] for k in ("status", "version", "head_sha", "pr_number", "queue_time_s")}
    await store.close()


async def test_in_progress_then_completed_then_stale(warehouse: Warehouse) -> None:
    store = EmbeddedStore(warehouse, commit_window_ms=1)
    await store.upsert(record("01_pr_in_progress"))
    done = await store.upsert(record("02_pr_completed_success"))
    stale = await store.upsert(record("01_pr_in_progress"))
    assert (done.outcome, done.version) == (Outcome.STORED, 2)
    assert (stale.outcome, stale.status, stale.version) == (Outcome.STALE, "completed", 2)
    row = stored(warehouse, done.key)
    assert row is not None
    assert (row["status"], row["conclusion"], row["version"], row["tests_total"]) == ("completed", "success", 2, 1220)
    assert row["started_at"] == datetime(2026, 11, 20, 10, 3, 11, tzinfo=UTC).replace(tzinfo=row["started_at"].tzinfo)
    assert row["queue_time_s"] == 42.317
    assert row_count(warehouse) == 2  # the stale write inserted nothing


async def test_a_fresh_store_reads_state_from_the_warehouse(warehouse: Warehouse) -> None:
    """A restarted server (empty cache) still refuses to regress and continues the version count."""
    first = EmbeddedStore(warehouse, commit_window_ms=1)
    await first.upsert(record("02_pr_completed_success"))
    await first.close()
    second = EmbeddedStore(warehouse, commit_window_ms=1, cache_size=0)
    await second.start()  # loads the digests of stored keys: the stored key must still be read
    stale = await second.upsert(record("01_pr_in_progress"))
    again = await second.upsert(record("12_numeric_ids_variant"))  # the same job, numeric ids
    assert (stale.outcome, stale.version) == (Outcome.STALE, 1)
    assert (again.outcome, again.version) == (Outcome.STORED, 2)
    row = stored(warehouse, again.key)
    assert row is not None and row["first_received_at"] is not None and row["version"] == 2


async def test_concurrent_writes_form_groups(warehouse: Warehouse) -> None:
    store = EmbeddedStore(warehouse, commit_window_ms=20)
    records = [record("03_pr_other_job_in_progress", check_run_id=str(i), key=f"k/{i}") for i in range(50)]
    results = await asyncio.gather(*(store.upsert(r) for r in records))
    assert all(r.outcome is Outcome.STORED and r.version == 1 for r in results)
    assert store.groups_committed <= 3  # 50 concurrent writes, a handful of inserts
    assert row_count(warehouse) == 50


async def test_same_key_in_one_group_merges_in_arrival_order(warehouse: Warehouse) -> None:
    store = EmbeddedStore(warehouse, commit_window_ms=20)
    order = ["01_pr_in_progress", "02_pr_completed_success", "01_pr_in_progress", "02_pr_completed_success"]
    results = await asyncio.gather(*(store.upsert(record(name)) for name in order))
    assert [r.outcome for r in results] == [Outcome.STORED, Outcome.STORED, Outcome.STALE, Outcome.STORED]
    assert [r.version for r in results] == [1, 2, 2, 3]
    assert store.groups_committed == 1
    rows = warehouse.query(f"SELECT version, status FROM {JOB_RESULTS_TABLE} WHERE key = {{k:String}}",
                           {"k": results[0].key})
    assert rows == [{"version": 3, "status": "completed"}]  # ONE row for the group's final state


async def test_tombstone_version_is_continued(warehouse: Warehouse) -> None:
    item = merge(None, record("02_pr_completed_success")).item
    warehouse.insert_job_rows([item_to_row(item, deleted=True, version=7)])
    result = await EmbeddedStore(warehouse, commit_window_ms=0).upsert(record("01_pr_in_progress"))
    assert (result.outcome, result.version) == (Outcome.STORED, 8)
    row = stored(warehouse, result.key)
    assert row is not None and (row["status"], row["version"], row["deleted"]) == ("in_progress", 8, 0)


async def test_store_failure_fails_the_group_and_recovers(warehouse: Warehouse,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddedStore(warehouse, commit_window_ms=5)
    first = await store.upsert(record("01_pr_in_progress"))
    real_insert = warehouse.insert_job_rows
    calls: list[int] = []

    def failing_insert(rows: Any) -> None:
        calls.append(1)
        raise WarehouseError("disk full")

    monkeypatch.setattr(warehouse, "insert_job_rows", failing_insert)
    outcomes = await asyncio.gather(store.upsert(record("02_pr_completed_success")),
                                    store.upsert(record("03_pr_other_job_in_progress")), return_exceptions=True)
    assert all(isinstance(o, StoreError) for o in outcomes)
    assert calls == [1]  # one insert for the group, and it failed
    row = stored(warehouse, first.key)
    assert row is not None and (row["status"], row["version"]) == ("in_progress", 1)  # nothing changed
    monkeypatch.setattr(warehouse, "insert_job_rows", real_insert)
    result = await store.upsert(record("02_pr_completed_success"))
    assert (result.outcome, result.version) == (Outcome.STORED, 2)


async def test_a_missing_table_is_a_store_error(warehouse: Warehouse) -> None:
    store = EmbeddedStore(warehouse, commit_window_ms=0)
    warehouse.command(f"DROP TABLE {JOB_RESULTS_TABLE}")
    with pytest.raises(StoreError):
        await store.upsert(record("01_pr_in_progress"))


async def test_on_change_after_commit_once_per_pr(warehouse: Warehouse) -> None:
    seen: list[tuple[PrRef, int]] = []

    def listener(pr: PrRef) -> None:
        seen.append((pr, row_count(warehouse)))  # the row is already readable when we are told

    store = EmbeddedStore(warehouse, on_change=listener, commit_window_ms=20)
    await asyncio.gather(store.upsert(record("01_pr_in_progress")), store.upsert(record("03_pr_other_job_in_progress")),
                         store.upsert(record("11_push_trunk_failure")))
    pr = PrRef("pytorch/pytorch", 170001, "3f2a9c1d7e5b4a6f8c0d2e4f6a8b0c1d2e3f4a5b")
    trunk = PrRef("pytorch/pytorch", 0, "c" * 40)
    assert sorted(p for p, _ in seen) == sorted([pr, trunk])
    assert all(count == 3 for _, count in seen)
    seen.clear()
    await store.upsert(record("01_pr_in_progress"))  # stored again (version 2): announced
    await store.upsert(record("02_pr_completed_success"))
    await store.upsert(record("01_pr_in_progress"))  # stale: nothing changed, nothing announced
    assert [p for p, _ in seen] == [pr, pr]


async def test_failing_listener_does_not_fail_the_write(warehouse: Warehouse) -> None:
    def listener(pr: PrRef) -> None:
        raise RuntimeError("boom")

    result = await EmbeddedStore(warehouse, on_change=listener, commit_window_ms=0).upsert(
        record("01_pr_in_progress"))
    assert result.outcome is Outcome.STORED


async def test_lru_cache_is_bounded_and_correct(warehouse: Warehouse) -> None:
    store = EmbeddedStore(warehouse, commit_window_ms=0, cache_size=3)
    for i in range(10):
        await store.upsert(record("02_pr_completed_success", key=f"k/{i}", check_run_id=str(i)))
    assert len(store._cache) == 3  # only the three most recent
    # An evicted key is read back from the warehouse: still no regression, version continues.
    stale = await store.upsert(record("01_pr_in_progress", key="k/0", check_run_id="0"))
    assert (stale.outcome, stale.version) == (Outcome.STALE, 1)


async def test_closed_store_refuses_writes(warehouse: Warehouse) -> None:
    store = EmbeddedStore(warehouse)
    await store.close()
    with pytest.raises(StoreError):
        await store.upsert(record("01_pr_in_progress"))
    assert await EmbeddedStore(warehouse).ping()


async def test_started_store_skips_the_read_for_new_keys(warehouse: Warehouse,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    await EmbeddedStore(warehouse, commit_window_ms=0).upsert(record("01_pr_in_progress"))
    store = EmbeddedStore(warehouse, commit_window_ms=0, cache_size=0)
    await store.start()
    reads: list[str] = []
    real_query = warehouse.query

    def counting_query(sql: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
        reads.append(sql)
        return real_query(sql, parameters, **kwargs)

    monkeypatch.setattr(warehouse, "query", counting_query)
    new = await store.upsert(record("03_pr_other_job_in_progress"))
    assert (new.outcome, new.version, reads) == (Outcome.STORED, 1, [])  # a key never stored: no read
    again = await store.upsert(record("03_pr_other_job_in_progress"))
    assert (again.version, len(reads)) == (2, 1)  # written since start (cache off): read, continued
    old = await store.upsert(record("02_pr_completed_success"))
    assert (old.version, len(reads)) == (2, 2)  # stored before start: read, continued
