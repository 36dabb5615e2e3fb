"""Durable to power loss: a group is fdatasynced (and a new segment's directory fsynced) before any of its
callers is answered; a failed write or sync is never a 200."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.routes import STORE_FAILED
from ingest.stores.embedded import EmbeddedStore, replay_journal
from ingest.stores.journal import Journal, read_items
from oot_hud.app import create_app
from oot_hud.services import Services
from oot_hud.settings import Settings
from sql.records import JOB_RESULTS_TABLE
from sql.warehouse import Warehouse
from tests.conftest import RELAY_FIXTURES
from tests.servers import serve

TOKEN = "relay-token-sync-0123456789"
PATH = "/api/oot/results"


# ---- the journal file ----

def test_each_group_is_synced_after_its_write_and_a_new_segment_syncs_its_directory(tmp_path: Path) -> None:
    calls: list[tuple[str, Any]] = []

    def sync(fd: int) -> None:  # what the file holds when its sync runs
        calls.append(("data", Path(f"/proc/self/fd/{fd}").read_bytes()))

    def sync_directory(fd: int) -> None:
        calls.append(("directory", sorted(os.listdir(f"/proc/self/fd/{fd}"))))

    directory = tmp_path / "journal"
    journal = Journal(directory, sync=sync, sync_directory=sync_directory)
    assert calls == [("directory", ["journal"])]  # the journal's own directory entry, when created
    calls.clear()
    journal.append([{"key": "a", "version": 1}])
    journal.append([{"key": "b", "version": 1}])
    journal.rotate()
    journal.append([{"key": "c", "version": 1}])
    assert calls == [
        ("directory", ["000000000001.jsonl"]),  # the new segment's name, before its first group is synced
        ("data", b'{"key":"a","version":1}\n'),
        ("data", b'{"key":"a","version":1}\n{"key":"b","version":1}\n'),
        ("directory", ["000000000001.jsonl", "000000000002.jsonl"]),
        ("data", b'{"key":"c","version":1}\n'),
    ]


def test_a_failed_sync_raises_and_the_segment_ends_at_its_last_synced_group(tmp_path: Path) -> None:
    failures = [OSError(errno.EIO, "Input/output error")]

    def sync(fd: int) -> None:
        if failures and os.fstat(fd).st_size > 30:  # the second group's sync fails
            raise failures.pop()

    journal = Journal(tmp_path, sync=sync, sync_directory=None)
    journal.append([{"key": "a", "version": 1}])
    with pytest.raises(OSError, match="Input/output error"):
        journal.append([{"key": "b", "version": 1}])
    journal.append([{"key": "c", "version": 1}])  # never into the segment whose sync failed
    first, second = journal.rotate()
    assert [item["key"] for item in read_items(first)] == ["a"]  # cut back to what was synced
    assert [item["key"] for item in read_items(second)] == ["c"]


def test_disk_full_on_write_raises_and_leaves_no_empty_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    (tmp_path / "000000000001.jsonl").symlink_to("/dev/full")  # the next segment: every write is ENOSPC
    with pytest.raises(OSError) as failed:
        journal.append([{"key": "a", "version": 1}])
    assert failed.value.errno == errno.ENOSPC
    assert not (tmp_path / "000000000001.jsonl").exists()
    journal.append([{"key": "b", "version": 1}])  # the next append starts a new segment
    [segment] = journal.rotate()
    assert segment.path.name == "000000000002.jsonl"
    assert [item["key"] for item in read_items(segment)] == ["b"]


def test_the_warehouse_tables_fsync_every_insert(warehouse: Warehouse, tmp_path: Path) -> None:
    """A segment is deleted once its rows are inserted: from then on the parts must be on stable storage.
    Opening the journal (the replay at every start) sets it on the embedded engine's tables."""
    assert replay_journal(Journal(tmp_path), warehouse) == 0
    rows = warehouse.query("SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
                           "AND name IN ('oot_job_results', 'oot_summary_legs')")
    assert len(rows) == 2
    for row in rows:
        assert "fsync_after_insert = 1" in row["engine_full"], row["name"]
        assert "fsync_part_directory = 1" in row["engine_full"], row["name"]


# ---- over HTTP: the answer waits for the sync ----

@contextlib.contextmanager
def served(warehouse: Warehouse, tmp_path: Path, sync: Callable[[int], None]) -> Iterator[str]:
    store = EmbeddedStore(warehouse, journal=Journal(tmp_path / "journal", sync=sync), flush_interval_ms=0)
    store.load_known_keys()
    config = Settings(data_dir=tmp_path / "unused", relay_tokens=[TOKEN])
    services = Services(settings=config, warehouse=warehouse, store=store, relay_tokens=[TOKEN])
    with serve(create_app(config, services=services)) as url:
        yield url


async def post(http: httpx.AsyncClient, name: str) -> httpx.Response:
    body = (RELAY_FIXTURES / f"{name}.json").read_bytes()
    return await http.post(PATH, content=body, headers={"X-OOT-Relay-Token": TOKEN,
                                                          "Content-Type": "application/json"})


def stored_versions(warehouse: Warehouse, deadline_s: float = 20.0, expect: int = 1) -> dict[str, int]:
    """The stored keys and versions once ``expect`` keys are there (the flusher inserts right after idle)."""
    deadline = time.monotonic() + deadline_s
    while True:
        rows = warehouse.query(f"SELECT key, version FROM {JOB_RESULTS_TABLE} FINAL")
        if len(rows) >= expect or time.monotonic() > deadline:
            return {row["key"]: row["version"] for row in rows}
        time.sleep(0.02)


async def test_no_200_before_the_sync_returns(warehouse: Warehouse, tmp_path: Path) -> None:
    entered, gate = threading.Event(), threading.Event()
    order: list[str] = []

    def slow_sync(fd: int) -> None:
        entered.set()
        assert gate.wait(30), "the test never opened the gate"
        os.fdatasync(fd)
        order.append("synced")

    with served(warehouse, tmp_path, slow_sync) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            posting = asyncio.create_task(post(http, "01_pr_in_progress"))
            assert await asyncio.to_thread(entered.wait, 20), "the group never reached its sync"
            [segment] = Journal(tmp_path / "journal").segments()
            assert b'"status":"in_progress"' in segment.path.read_bytes()  # written, not yet synced
            done, _ = await asyncio.wait({posting}, timeout=0.3)
            assert not done, "answered before the journal's sync returned"
            gate.set()
            response = await posting
            order.append("answered")
        assert response.status_code == 200, response.text
        assert order == ["synced", "answered"]
        assert stored_versions(warehouse) == {response.json()["dynamoKey"]: 1}


async def test_a_failed_sync_is_a_retryable_500_and_stores_nothing(warehouse: Warehouse, tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def failing_once(fd: int) -> None:
        if failures:
            raise failures.pop()
        os.fdatasync(fd)

    with served(warehouse, tmp_path, failing_once) as url, caplog.at_level(logging.INFO):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            refused = await post(http, "01_pr_in_progress")
            retried = await post(http, "01_pr_in_progress")  # what the relay does with a 5xx
        assert refused.status_code == 500
        assert refused.json() == {"ok": False, "error": STORE_FAILED}
        assert any("event=store_failed" in r.getMessage() and "No space left" in r.getMessage()
                   for r in caplog.records)
        # The refused write was not accepted: the retry is the record's first version, not its second.
        assert retried.status_code == 200 and json.loads(retried.text)["status"] == "in_progress"
        assert stored_versions(warehouse) == {retried.json()["dynamoKey"]: 1}
