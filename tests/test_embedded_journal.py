"""The embedded store's journal: answered once journaled, inserted in batches, replayed after a crash."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.extract import extract
from ingest.stores import embedded
from ingest.stores.base import Outcome
from ingest.stores.embedded import EmbeddedStore, replay_journal
from ingest.stores.journal import Journal, read_items
from sql.records import JOB_RESULTS_TABLE, JobRecord, PrRef
from sql.warehouse import Warehouse, WarehouseError
from tests.conftest import RELAY_FIXTURES, relay_payload
from tests.servers import ServerProcess

T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
PATH = "/api/oot/results"


def record(name: str, **changes: Any) -> JobRecord:
    extracted = extract(relay_payload(name), received_at=T0)
    return dataclasses.replace(extracted, **changes) if changes else extracted


def jobs(count: int, prefix: str = "j") -> list[JobRecord]:
    return [record("04_pr_other_job_failure", key=f"{prefix}-{i}", check_run_id=f"{prefix}-{i}")
            for i in range(count)]


def stored(warehouse: Warehouse) -> dict[str, dict[str, Any]]:
    rows = warehouse.query(f"SELECT key, status, version FROM {JOB_RESULTS_TABLE} FINAL")
    return {row["key"]: row for row in rows}


# ---- the journal file format ----

def test_segments_rotate_and_survive_a_reopen(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([{"key": "a", "version": 1}])
    journal.append([{"key": "b", "version": 1}, {"key": "a", "version": 2}])
    first = journal.rotate()
    assert len(first) == 1 and journal.rotate() == []  # nothing written since: no empty segment
    journal.append([{"key": "c", "version": 1}])
    journal.close()

    reopened = Journal(tmp_path)
    segments = reopened.segments()
    assert [s.path.name for s in segments] == ["000000000001.jsonl", "000000000002.jsonl"]
    assert [item["key"] for item in read_items(segments[0])] == ["a", "b", "a"]
    reopened.append([{"key": "d", "version": 1}])  # numbering continues after what is on disk
    assert [s.path.name for s in reopened.rotate()] == ["000000000003.jsonl"]
    reopened.discard(segments[0])
    assert [s.path.name for s in reopened.segments()] == ["000000000002.jsonl", "000000000003.jsonl"]


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append([{"key": "a", "version": 1}])
    [segment] = journal.rotate()
    with segment.path.open("ab") as handle:
        handle.write(b'{"key": "b", "vers')  # the process died inside this write
    assert [item["key"] for item in read_items(segment)] == ["a"]


def test_untrusted_text_round_trips(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    hostile = {"key": "k", "job_name": "a\nb\u202e\"}{\\\u0000 ✓", "version": 1}
    journal.append([hostile])
    assert list(read_items(journal.rotate()[0])) == [hostile]


# ---- the store with a journal, on the real engine ----

async def test_answered_when_journaled_then_inserted_and_the_segment_deleted(warehouse: Warehouse,
                                                                             tmp_path: Path) -> None:
    announced: list[PrRef] = []
    store = EmbeddedStore(warehouse, journal=Journal(tmp_path), commit_window_ms=1, flush_interval_ms=50,
                          on_change=announced.append)
    await store.start()
    result = await store.upsert(record("01_pr_in_progress"))
    assert result.outcome is Outcome.STORED
    assert await store.flushed()
    assert stored(warehouse)[result.key]["status"] == "in_progress"
    assert announced == [record("01_pr_in_progress").pr]  # after the insert, not at the answer
    assert Journal(tmp_path).segments() == []
    # The completed callback merges on the journaled state (no read), and a late in_progress is stale.
    done = await store.upsert(record("02_pr_completed_success"))
    late = await store.upsert(record("01_pr_in_progress"))
    assert (done.version, late.outcome) == (2, Outcome.STALE)
    await store.flushed()
    assert stored(warehouse)[result.key] == {"key": result.key, "status": "completed", "version": 2}
    await store.close()


async def test_writes_under_load_share_a_few_inserts(warehouse: Warehouse, tmp_path: Path) -> None:
    store = EmbeddedStore(warehouse, journal=Journal(tmp_path), commit_window_ms=1, flush_interval_ms=300)
    await store.start()
    first = jobs(100, "a")
    await asyncio.gather(*(store.upsert(r) for r in first))
    await asyncio.sleep(0.01)
    await asyncio.gather(*(store.upsert(r) for r in jobs(100, "b")))  # within the interval: one more insert
    await store.flushed()
    assert len(stored(warehouse)) == 200
    assert store.groups_committed <= 3
    await store.close()


async def test_a_crash_before_the_insert_loses_nothing(warehouse: Warehouse, tmp_path: Path) -> None:
    """Journaled but never inserted (the process died): the next start inserts it, exactly once."""
    store = EmbeddedStore(warehouse, journal=Journal(tmp_path), commit_window_ms=1, flush_interval_ms=60_000)
    await store.start()
    await store.upsert(record("01_pr_in_progress"))  # the first insert after idle goes at once
    assert await store.flushed()
    later = await asyncio.gather(*(store.upsert(r) for r in jobs(5)))
    done = await store.upsert(record("02_pr_completed_success"))
    assert all(r.outcome is Outcome.STORED for r in later)
    assert len(stored(warehouse)) == 1  # the rest waits for the interval; now the process "dies"
    if store._flusher is not None:  # simulate the crash: the flush never happens
        store._flusher.cancel()

    reborn = EmbeddedStore(warehouse, journal=Journal(tmp_path), commit_window_ms=1)
    await reborn.start()
    rows = stored(warehouse)
    assert len(rows) == 6 and rows[done.key]["version"] == 2 and rows[done.key]["status"] == "completed"
    assert Journal(tmp_path).segments() == []
    assert replay_journal(Journal(tmp_path), warehouse) == 0  # nothing left to replay
    # The new store knows the key is completed: an in_progress now is stale.
    assert (await reborn.upsert(record("01_pr_in_progress"))).outcome is Outcome.STALE
    await reborn.close()


async def test_a_failing_insert_is_retried_until_it_lands(warehouse: Warehouse, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "RETRY_DELAYS_S", (0.01,))
    failures = [WarehouseError("the engine is busy"), WarehouseError("still busy")]
    real_insert = warehouse.insert_job_rows

    def flaky(rows: Any) -> None:
        if failures:
            raise failures.pop(0)
        real_insert(rows)

    monkeypatch.setattr(warehouse, "insert_job_rows", flaky)
    store = EmbeddedStore(warehouse, journal=Journal(tmp_path), commit_window_ms=1, flush_interval_ms=0)
    await store.start()
    results = await asyncio.gather(*(store.upsert(r) for r in jobs(10)))
    assert all(r.outcome is Outcome.STORED for r in results)  # accepted although the insert failed
    assert await store.flushed()
    assert failures == [] and len(stored(warehouse)) == 10
    await store.close()


async def test_close_flushes_what_is_journaled(warehouse: Warehouse, tmp_path: Path) -> None:
    store = EmbeddedStore(warehouse, journal=Journal(tmp_path), commit_window_ms=1, flush_interval_ms=60_000)
    await store.start()
    await store.upsert(record("01_pr_in_progress"))
    await asyncio.gather(*(store.upsert(r) for r in jobs(3)))
    await store.close()  # does not wait out the interval
    assert len(stored(warehouse)) == 4
    assert Journal(tmp_path).segments() == []


# ---- the served process: reads see every accepted result; kill -9 between answer and insert ----

async def test_reads_wait_for_journaled_results_and_kill_9_keeps_them(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"OOT_HUD_FLUSH_INTERVAL_MS": "60000"}).start()
    pr = {"upstream_repo": "pytorch/pytorch", "pr": "170001"}
    try:
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
            first = await http.post(PATH, content=(RELAY_FIXTURES / "01_pr_in_progress.json").read_bytes())
            other = relay_payload("04_pr_other_job_failure")
            second = await http.post(PATH, content=json.dumps(other))
            assert (first.status_code, second.status_code) == (200, 200)
            assert list((tmp_path / "data" / "journal" / "oot_hud").glob("*.jsonl")), "journaled, not inserted"
            # A read waits for the journal to reach the warehouse (at most the store's bounded wait).
            rows = (await http.get("/api/oot/query/oot_pr_results", params=pr)).json()
            assert {row["key"] for row in rows} == {first.json()["dynamoKey"], second.json()["dynamoKey"]}
            third = relay_payload("02_pr_completed_success")
            done = await http.post(PATH, content=json.dumps(third))
            assert done.status_code == 200
        # serve keeps pyarrow (chDB's optional Arrow APIs, ~50 MiB of RSS) out of the process
        assert "libarrow" not in await asyncio.to_thread(Path(f"/proc/{server.pid}/maps").read_text)
        server.kill()  # answered, and the 60 s interval has not let it reach the warehouse yet

        server.start()
        async with httpx.AsyncClient(base_url=server.base_url, headers=server.headers, timeout=30) as http:
            rows = (await http.get("/api/oot/query/oot_pr_results", params=pr)).json()
        job = next(row for row in rows if row["key"] == done.json()["dynamoKey"])
        assert (job["status"], job["conclusion"]) == ("completed", "success")
        assert len(rows) == 2
    finally:
        server.kill()
