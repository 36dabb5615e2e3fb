"""The batch pipeline against the embedded warehouse: at-least-once in, exactly-once visible."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from replicator.pipeline import Replicator
from replicator.sink import RetryPolicy, WarehouseSink
from sql.bot_state import Announcement, Watermark
from sql.records import JOB_RESULTS_TABLE, PrRef
from sql.warehouse import Warehouse, WarehouseError
from tests.stream_records import (
    TABLE,
    completed,
    dead_letters,
    item,
    job,
    latest,
    lifecycle,
    stream_record,
)

ROUTES = {TABLE: JOB_RESULTS_TABLE}
A, B, C = (f"acme/npu/d1/ci/test/{n}" for n in (1, 2, 3))


class FlakyWarehouse:
    """Delegates to the real warehouse; insert number ``n`` (1-based) fails while ``n in failing``."""

    def __init__(self, real: Warehouse, failing: set[int] | None = None, fail_all: bool = False) -> None:
        self.real = real
        self.failing = failing or set()
        self.fail_all = fail_all
        self.calls: list[tuple[str, int]] = []

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str], *,
               column_oriented: bool = False) -> None:
        self.calls.append((table, len(rows[0]) if column_oriented else len(rows)))
        if self.fail_all or len(self.calls) in self.failing:
            raise WarehouseError("Connection refused")
        self.real.insert(table, rows, column_names, column_oriented=column_oriented)


class HangingWarehouse:
    """Every insert blocks until ``release`` is set, then lands."""

    def __init__(self, real: Warehouse) -> None:
        self.real = real
        self.release = threading.Event()

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str], *,
               column_oriented: bool = False) -> None:
        self.release.wait(10)
        self.real.insert(table, rows, column_names, column_oriented=column_oriented)


def replicator(target: Any, *, attempts: int = 3, timeout: float | None = None, chunk: int = 10_000,
               sleeps: list[float] | None = None, announced: list[PrRef] | None = None) -> Replicator:
    sleeps = sleeps if sleeps is not None else []
    policy = RetryPolicy(attempts=attempts, base_delay=0.1, max_delay=0.4, timeout=timeout, sleep=sleeps.append)
    on_change = announced.append if announced is not None else None
    return Replicator(WarehouseSink(target, retry=policy), ROUTES, on_change=on_change, max_rows_per_insert=chunk)


def rows_stored(warehouse: Warehouse) -> int:
    return warehouse.query("SELECT count() AS n FROM oot_job_results")[0]["n"]


def test_lifecycle_rerun_and_removal_show_exactly_the_latest_state(warehouse: Warehouse) -> None:
    announced: list[PrRef] = []
    rerun = job(B, run_attempt=2, check_run_id="2")
    batch = [*lifecycle(job(A), 100), *lifecycle(rerun, 200), *lifecycle(job(C), 300),
             stream_record("REMOVE", old=item(completed(job(C)), 2), seq=400)]
    result = replicator(warehouse, announced=announced).process(batch)
    assert result.ok and result.first_failed_sequence is None
    assert (result.records, result.landed, result.dead_lettered, result.skipped) == (7, 3, 0, 0)
    assert latest(warehouse) == [(A, "completed", "success", 1, 2), (B, "completed", "success", 2, 2)]
    assert announced == [PrRef("pytorch/pytorch", 4242, "a" * 40)]  # deduplicated per batch
    assert result.announced == tuple(announced)


def test_same_batch_twice_shows_no_duplicates(warehouse: Warehouse) -> None:
    batch = [*lifecycle(job(A), 100), *lifecycle(job(B), 200)]
    for _ in range(2):
        assert replicator(warehouse).process(batch).ok
    assert latest(warehouse) == [(A, "completed", "success", 1, 2), (B, "completed", "success", 1, 2)]


def test_out_of_order_across_batches_never_regresses(warehouse: Warehouse) -> None:
    first, second = lifecycle(job(A), 100)
    assert replicator(warehouse).process([second]).ok  # completed (v2) arrives first
    assert replicator(warehouse).process([first]).ok  # then the stale in_progress (v1)
    assert latest(warehouse) == [(A, "completed", "success", 1, 2)]
    # A tombstone overtaken by a late MODIFY still wins: its version is higher.
    remove = stream_record("REMOVE", old=item(completed(job(A)), 2), seq=102)
    assert replicator(warehouse).process([remove]).ok
    assert replicator(warehouse).process([second]).ok
    assert latest(warehouse) == []


def test_batch_failing_half_way_then_retried_lands_once(warehouse: Warehouse) -> None:
    flaky = FlakyWarehouse(warehouse, failing={2, 3})  # the second insert fails every attempt
    batch = [*lifecycle(job(A), 100), *lifecycle(job(B), 200), *lifecycle(job(C), 300)]
    result = replicator(flaky, attempts=2, chunk=1).process(batch)
    assert not result.ok
    # A landed (chunk 1); B's chunk failed: re-delivery starts at B's first record.
    assert (result.failed_index, result.first_failed_sequence, result.landed) == (2, "200", 1)
    assert latest(warehouse) == [(A, "completed", "success", 1, 2)]
    retried = replicator(flaky, chunk=1).process(batch[result.failed_index:])
    assert retried.ok
    assert latest(warehouse) == [(A, "completed", "success", 1, 2), (B, "completed", "success", 1, 2),
                                 (C, "completed", "success", 1, 2)]


def test_poison_goes_to_dead_letters_and_the_rest_lands(warehouse: Warehouse) -> None:
    from decimal import Decimal

    def poison(seq: int, **fields: Any) -> dict[str, Any]:
        return stream_record("INSERT", new=item(job(f"poison-{seq}"), 1, **fields), seq=seq)

    no_key = stream_record("INSERT", new=item(job("poison-5"), 1), seq=5)
    del no_key["dynamodb"]["Keys"]
    batch = [poison(1, tests_total=Decimal("NaN")), *lifecycle(job(A), 100), poison(2, tests_failed=2**70),
             poison(3, job_name=b"\x01"), stream_record("INSERT", new=item(job("x"), 1), seq=4, table="other"),
             no_key, *lifecycle(job(B), 200)]
    result = replicator(warehouse).process(batch)
    assert result.ok and (result.landed, result.dead_lettered) == (2, 5)
    assert latest(warehouse) == [(A, "completed", "success", 1, 2), (B, "completed", "success", 1, 2)]
    letters = dead_letters(warehouse)
    assert [(row["sequence"], row["reason"]) for row in letters] == [
        ("1", "attribute 'tests_total' is not a finite number"),
        ("2", "tests_failed is out of range"),
        ("3", "binary attribute 'job_name'"),
        ("4", "no route for table 'other'"),
        ("5", "record has no key"),
    ]
    assert {row["source_table"] for row in letters} == {TABLE, "other"}
    assert '"NaN"' in letters[0]["raw"] and letters[0]["raw"].startswith("{")


def test_warehouse_down_reports_the_first_record_and_the_retry_lands_once(warehouse: Warehouse) -> None:
    sleeps: list[float] = []
    down = FlakyWarehouse(warehouse, fail_all=True)
    batch = [*lifecycle(job(A), 100), *lifecycle(job(B), 200)]
    result = replicator(down, attempts=4, sleeps=sleeps).process(batch)
    assert (result.ok, result.failed_index, result.first_failed_sequence) == (False, 0, "100")
    assert sleeps == [0.1, 0.2, 0.4]  # exponential backoff, capped
    assert rows_stored(warehouse) == 0
    down.fail_all = False
    assert replicator(down).process(batch).ok
    assert rows_stored(warehouse) == 2  # newest version of each key only
    assert latest(warehouse) == [(A, "completed", "success", 1, 2), (B, "completed", "success", 1, 2)]


def test_transient_failure_is_retried_inside_the_batch(warehouse: Warehouse) -> None:
    sleeps: list[float] = []
    flaky = FlakyWarehouse(warehouse, failing={1})
    assert replicator(flaky, sleeps=sleeps).process(lifecycle(job(A))).ok
    assert sleeps == [0.1] and len(flaky.calls) == 2
    assert latest(warehouse) == [(A, "completed", "success", 1, 2)]


def test_hanging_warehouse_times_out_and_the_retry_lands_once(warehouse: Warehouse) -> None:
    hanging = HangingWarehouse(warehouse)
    batch = lifecycle(job(A))
    result = replicator(hanging, attempts=2, timeout=0.2).process(batch)
    assert (result.ok, result.first_failed_sequence) == (False, "100")
    hanging.release.set()  # the warehouse recovers; the abandoned inserts may land late, harmlessly
    assert replicator(hanging, timeout=5).process(batch).ok
    assert latest(warehouse) == [(A, "completed", "success", 1, 2)]


def test_dead_letter_failure_fails_from_the_first_poison_record(warehouse: Warehouse) -> None:
    flaky = FlakyWarehouse(warehouse, failing={2})  # rows land, the dead-letter insert fails
    batch = [*lifecycle(job(A), 100), stream_record("INSERT", new=item(job(B), 1), seq=150, table="other"),
             *lifecycle(job(C), 200)]
    result = replicator(flaky, attempts=1).process(batch)
    assert (result.failed_index, result.first_failed_sequence, result.landed) == (2, "150", 2)
    assert replicator(flaky).process(batch[2:]).ok
    assert len(dead_letters(warehouse)) == 1
    assert latest(warehouse) == [(A, "completed", "success", 1, 2), (C, "completed", "success", 1, 2)]


def test_a_failing_subscriber_does_not_fail_the_batch(warehouse: Warehouse) -> None:
    def broken(pr: PrRef) -> None:
        raise RuntimeError("bot is down")

    rep = Replicator(WarehouseSink(warehouse), ROUTES, on_change=broken)
    assert rep.process(lifecycle(job(A))).ok
    trunk = job(B, event_type="push", pr_number=0)
    announced: list[PrRef] = []
    assert replicator(warehouse, announced=announced).process(lifecycle(trunk)).ok
    # Trunk results are announced as PR 0, the same announcement the embedded store makes.
    assert announced == [PrRef("pytorch/pytorch", 0, "a" * 40)]


@pytest.mark.parametrize("repeat_key", [False, True], ids=["column path", "exact path"])
def test_the_bot_is_told_each_pr_once_a_batch_with_a_row_it_must_see(warehouse: Warehouse, repeat_key: bool) -> None:
    told: list[list[Announcement]] = []
    rep = Replicator(WarehouseSink(warehouse), ROUTES, on_changes=told.append)
    records = [stream_record("INSERT", new=item(job(A, pr_number=7), 1), seq=1),
               stream_record("INSERT", new=item(job(B, pr_number=7), 3), seq=2),
               stream_record("INSERT", new=item(job(C, pr_number=0, event_type="push"), 1), seq=3)]
    if repeat_key:  # a key twice in one batch takes the exact path; the newest version is what lands
        records.append(stream_record("MODIFY", new=item(completed(job(B, pr_number=7)), 4), seq=4))
    assert rep.process(records).ok
    version = 4 if repeat_key else 3
    assert told == [[Announcement(PrRef("pytorch/pytorch", 7), Watermark(B, version))]], "trunk results are no PR"
    shown = warehouse.query("SELECT count() AS n FROM oot_job_results WHERE key = {k:String} AND version = {v:UInt64}",
                            {"k": B, "v": version})
    assert shown[0]["n"] == 1, "announced after the row landed"


def test_a_failed_announcement_fails_the_batch_so_it_is_delivered_again(warehouse: Warehouse) -> None:
    calls: list[int] = []

    def flaky(announcements: Sequence[Announcement]) -> None:
        calls.append(len(announcements))
        if len(calls) == 1:
            raise RuntimeError("DynamoDB throttled")

    rep = Replicator(WarehouseSink(warehouse), ROUTES, on_changes=flaky)
    records = lifecycle(job(A, pr_number=7))
    first = rep.process(records)
    assert (first.ok, first.failed_index, first.first_failed_sequence) == (False, 0, "100")
    assert rows_stored(warehouse) == 1, "the rows landed; only the announcement is missing"
    assert rep.process(records).ok and calls == [1, 1]
    assert [row[:2] for row in latest(warehouse)] == [(A, "completed")]


def test_records_without_arn_take_the_source_table_argument(warehouse: Warehouse) -> None:
    batch = [stream_record("INSERT", new={"key": A}, seq=1, table=None),
             stream_record("MODIFY", new=item(job(A), 1), seq=2, table=None)]
    result = replicator(warehouse).process(batch, source_table=TABLE)
    assert result.ok and (result.skipped, result.landed) == (1, 1)
    assert latest(warehouse) == [(A, "in_progress", "", 1, 1)]


def test_empty_routes_are_refused() -> None:
    with pytest.raises(ValueError, match="route"):
        Replicator(WarehouseSink(FlakyWarehouse(None)), {})  # type: ignore[arg-type]
