"""The stream follower: moto server mode end to end into the embedded warehouse (with a restart), and a
fake streams client for closed shards, splits, expired iterators, trimmed data and idle back-off."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingest.dynamo_schema import stream_arn
from ingest.stores.dynamo import DynamoStore
from replicator.checkpoints import CheckpointError, FileCheckpoints, MemoryCheckpoints, ShardCheckpoint
from replicator.follower import FollowerConfig, StreamFollower
from replicator.pipeline import Replicator
from sql.records import JOB_RESULTS_TABLE, JobRecord
from sql.warehouse import Warehouse
from tests.fake_streams import STREAM_ARN, FakeStreams

# ---- helpers ----


@dataclasses.dataclass
class Result:
    failed_index: int | None = None


class RecordingProcessor:
    """Stands in for the Replicator: remembers what landed; can fail a batch at a given sequence number."""

    def __init__(self) -> None:
        self.landed: list[str] = []
        self.fail_at: set[str] = set()  # fail (once each) when a batch reaches one of these

    def process(self, records: Sequence[Mapping[str, Any]], *, source_table: str | None = None) -> Result:
        assert source_table == "fake-results"
        for index, record in enumerate(records):
            sequence = record["dynamodb"]["SequenceNumber"]
            if sequence in self.fail_at:
                self.fail_at.discard(sequence)
                return Result(failed_index=index)
            self.landed.append(sequence)
        return Result()


class Reconciles:
    def __init__(self, failures: int = 0) -> None:
        self.calls = 0
        self.failures = failures

    def __call__(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("warehouse down")


def follower(streams: FakeStreams, processor: RecordingProcessor, checkpoints: Any = None,
             reconcile: Callable[[], object] | None = None, **kwargs: Any) -> StreamFollower:
    return StreamFollower(streams, streams.stream_arn, "fake-results", processor,
                          checkpoints if checkpoints is not None else MemoryCheckpoints(),
                          reconcile or Reconciles(), **kwargs)


def drain(f: StreamFollower, limit: int = 50) -> int:
    """Poll until a pass makes no progress; returns the number of passes."""
    for passes in range(1, limit + 1):
        if not f.poll_once():
            return passes
    raise AssertionError("the follower never went idle")


# ---- (b) the fake stream client ----


def test_closed_shard_is_finished_and_never_polled_again() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    sequences = [streams.put("shard-a", f"k{i}") for i in range(3)]
    streams.close("shard-a")
    processor = RecordingProcessor()
    checkpoints = MemoryCheckpoints()
    f = follower(streams, processor, checkpoints)
    drain(f)
    assert processor.landed == sequences
    assert checkpoints.shards["shard-a"] == ShardCheckpoint(sequences[-1], done=True)
    reads = streams.count("get_records")
    drain(f)
    assert streams.count("get_records") == reads  # a finished shard costs nothing
    assert f.stats.shards_finished == 1


def test_split_reads_the_parent_before_either_child_across_describe_pages() -> None:
    streams = FakeStreams(page_size=1)  # one shard a page: the follower must paginate
    streams.add_shard("shard-9-parent")
    parent = [streams.put("shard-9-parent", f"p{i}") for i in range(3)]
    streams.split("shard-9-parent", ("shard-1-left", "shard-2-right"))
    left = [streams.put("shard-1-left", f"l{i}") for i in range(2)]
    right = [streams.put("shard-2-right", f"r{i}") for i in range(2)]
    processor = RecordingProcessor()
    f = follower(streams, processor)
    # Children sort (and would list) before the parent; their records must still come after the parent's.
    drain(f)
    assert processor.landed[:3] == parent
    assert sorted(processor.landed[3:]) == sorted(left + right)
    assert len(processor.landed) == len(set(processor.landed)) == 7
    starts = [args["ExclusiveStartShardId"] for name, args in streams.calls if name == "describe_stream"]
    assert "shard-9-parent" in starts and "shard-1-left" in starts  # pages were followed
    # Later writes to the open children keep flowing.
    more = streams.put("shard-2-right", "r9")
    drain(f)
    assert processor.landed[-1] == more


def test_a_child_created_after_its_parent_closed_is_discovered() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    first = streams.put("shard-a")
    processor = RecordingProcessor()
    f = follower(streams, processor, config=FollowerConfig(refresh_s=3600))
    drain(f)
    streams.split("shard-a", ("shard-b", "shard-c"))
    second = streams.put("shard-c")
    drain(f)  # the parent's end triggers a DescribeStream at once, not after refresh_s
    assert processor.landed == [first, second]


def test_expired_iterator_is_reacquired_from_the_checkpoint() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    first = [streams.put("shard-a", f"k{i}") for i in range(3)]
    processor = RecordingProcessor()
    f = follower(streams, processor)
    drain(f)
    streams.expire_iterators()
    second = [streams.put("shard-a", f"k{i}") for i in range(3, 5)]
    drain(f)
    assert processor.landed == first + second  # nothing lost, nothing twice
    assert f.stats.expired_iterators == 1
    reacquired = [args for name, args in streams.calls if name == "get_shard_iterator"][-1]
    assert reacquired["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert reacquired["SequenceNumber"] == first[-1]


def test_trimmed_checkpoint_falls_back_to_a_reconcile_then_reads_what_is_kept() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    old = [streams.put("shard-a", f"k{i}") for i in range(6)]
    checkpoints = MemoryCheckpoints()
    checkpoints.save(STREAM_ARN, {"shard-a": ShardCheckpoint(old[1])})  # stopped long ago after record 2
    streams.trim("shard-a", old[3])  # records 3 and 4 are gone for good
    processor = RecordingProcessor()
    reconcile = Reconciles(failures=1)
    f = follower(streams, processor, checkpoints, reconcile)
    assert f.poll_once() is False  # detected; the reconcile fails: nothing delivered past the gap
    assert processor.landed == [] and reconcile.calls == 1
    assert checkpoints.shards["shard-a"].sequence == old[1]  # untouched until a reconcile succeeds
    assert f.poll_once() is True  # the reconcile is retried first, then the shard is read again
    drain(f)
    assert reconcile.calls == 2 and f.stats.reconciles == 1
    assert processor.landed == old[4:]  # resumed at the oldest record the stream still keeps
    assert checkpoints.shards["shard-a"].sequence == old[-1]


def test_trimmed_while_reading_is_detected_by_get_records() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    first = streams.put("shard-a")
    processor = RecordingProcessor()
    reconcile = Reconciles()
    f = follower(streams, processor, reconcile=reconcile)
    drain(f)
    lost = [streams.put("shard-a") for _ in range(2)]
    kept = streams.put("shard-a")
    streams.trim("shard-a", lost[-1])  # the follower's iterator now points into trimmed data
    drain(f)
    assert reconcile.calls == 1
    assert processor.landed == [first, kept]


def test_a_shard_that_vanished_mid_way_means_lost_records() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-new")
    fresh = streams.put("shard-new")
    checkpoints = MemoryCheckpoints()
    checkpoints.save(STREAM_ARN, {"shard-old": ShardCheckpoint("42"), "shard-done": ShardCheckpoint("7", True)})
    reconcile = Reconciles()
    processor = RecordingProcessor()
    drain(follower(streams, processor, checkpoints, reconcile))
    assert reconcile.calls == 1
    assert processor.landed == [fresh]
    assert set(checkpoints.shards) == {"shard-new"}  # trimmed-away shards are forgotten


def test_a_replaced_stream_triggers_a_reconcile() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    checkpoints = MemoryCheckpoints()
    checkpoints.save("arn:aws:dynamodb:us-east-1:1:table/fake-results/stream/old", {"s": ShardCheckpoint("1")})
    reconcile = Reconciles()
    drain(follower(streams, RecordingProcessor(), checkpoints, reconcile))
    assert reconcile.calls == 1 and checkpoints.stream_arn == STREAM_ARN


def test_a_failed_batch_is_delivered_again_from_the_first_failed_record() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    sequences = [streams.put("shard-a", f"k{i}") for i in range(5)]
    processor = RecordingProcessor()
    processor.fail_at = {sequences[2]}
    checkpoints = MemoryCheckpoints()
    f = follower(streams, processor, checkpoints)
    assert f.poll_once() is False
    assert checkpoints.shards["shard-a"].sequence == sequences[1]  # what landed is checkpointed
    drain(f)
    assert processor.landed == sequences
    assert f.stats.failed_batches == 1


def test_restart_resumes_from_the_checkpoint_file(tmp_path: Path) -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    first = [streams.put("shard-a", f"k{i}") for i in range(3)]
    processor = RecordingProcessor()
    drain(follower(streams, processor, FileCheckpoints(tmp_path, "fake-results")))
    second = [streams.put("shard-a", f"k{i}") for i in range(3)]
    again = follower(streams, processor, FileCheckpoints(tmp_path, "fake-results"))
    drain(again)
    assert processor.landed == first + second
    assert again.stats.records == 3


def test_idle_backoff_grows_to_the_cap_and_resets_after_progress() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    processor = RecordingProcessor()
    waits: list[float] = []
    stop = threading.Event()

    def sleep(seconds: float) -> None:  # no real sleeping: record, and write once to end the idle spell
        waits.append(seconds)
        if len(waits) == 6:
            streams.put("shard-a")
        if len(waits) == 9:
            stop.set()

    f = follower(streams, processor, stop=stop, sleep=sleep,
                 config=FollowerConfig(idle_initial_s=0.5, idle_max_s=4.0, idle_factor=2.0))
    started = time.monotonic()
    f.run()
    assert time.monotonic() - started < 2
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 0.5, 1.0, 2.0]
    assert len(processor.landed) == 1


def test_stop_ends_a_long_idle_wait_at_once() -> None:
    streams = FakeStreams()
    streams.add_shard("shard-a")
    f = follower(streams, RecordingProcessor(), config=FollowerConfig(idle_initial_s=30, idle_max_s=30))
    thread = threading.Thread(target=f.run)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    f.stop.set()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 2


# ---- checkpoint file ----


def test_checkpoint_file_is_replaced_atomically_and_locked(tmp_path: Path) -> None:
    store = FileCheckpoints(tmp_path, "oot/results")  # odd characters never escape the state dir
    assert store.load(STREAM_ARN) == ({}, None)
    store.save(STREAM_ARN, {"s1": ShardCheckpoint("5"), "s0": ShardCheckpoint("9", done=True)})
    assert store.path.parent == tmp_path
    assert json.loads(store.path.read_text())["shards"]["s0"] == {"sequence": "9", "done": True}
    assert store.load(STREAM_ARN) == ({"s0": ShardCheckpoint("9", True), "s1": ShardCheckpoint("5")}, STREAM_ARN)
    assert store.load("arn:other") == ({}, STREAM_ARN)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with store.exclusive():
        with pytest.raises(CheckpointError), FileCheckpoints(tmp_path, "oot/results").exclusive():
            pass
    with FileCheckpoints(tmp_path, "oot/results").exclusive():
        pass  # released
    store.path.write_text("{not json")
    with pytest.raises(CheckpointError):
        store.load(STREAM_ARN)


# ---- (a) moto server mode, streams on, into the embedded warehouse ----


T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def job(key: str, status: str, minutes: int = 0, pr: int = 170001) -> JobRecord:
    return JobRecord(
        key=key, downstream_repo="acme-accel/torch-acme", event_type="pull_request", delivery_id=f"d-{key}",
        upstream_repo="pytorch/pytorch", pr_number=pr, head_sha="3f2a9c1d", workflow_name="acme-ci",
        job_name=f"job-{key}", check_run_id="1", run_attempt=1, status=status,
        received_at=T0 + timedelta(minutes=minutes), started_at=T0 if status == "in_progress" else None,
        conclusion="success" if status == "completed" else None)


def final_state(warehouse: Warehouse) -> dict[str, tuple[str, int]]:
    rows = warehouse.query(f"SELECT key, status, version FROM {JOB_RESULTS_TABLE} FINAL ORDER BY key")
    return {row["key"]: (row["status"], row["version"]) for row in rows}


def doubled_rows(warehouse: Warehouse) -> int:
    rows = warehouse.query(f"SELECT count() - uniqExact(key, version) AS doubled FROM {JOB_RESULTS_TABLE}")
    return int(rows[0]["doubled"])


async def test_moto_stream_into_the_warehouse_survives_a_restart(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str, streams_client: Any,
        warehouse: Warehouse, tmp_path: Path) -> None:
    arn = stream_arn(dynamodb_client, dynamo_table)
    assert arn
    announced: list[Any] = []
    replicator = Replicator.for_warehouse(warehouse, {dynamo_table: JOB_RESULTS_TABLE}, on_change=announced.append)

    def never() -> None:
        raise AssertionError("no data was lost: no reconcile expected")

    def new_follower() -> StreamFollower:
        return StreamFollower(streams_client, arn, dynamo_table, replicator,
                              FileCheckpoints(tmp_path, dynamo_table), never)

    await dynamo_store.upsert(job("a", "in_progress"))
    await dynamo_store.upsert(job("b", "in_progress"))
    await dynamo_store.upsert(job("a", "completed", 5))
    first = new_follower()
    drain(first)
    assert final_state(warehouse) == {"a": ("completed", 2), "b": ("in_progress", 1)}
    assert announced  # the replicator announced the PR after the rows landed

    # Restart: a new follower (as after a process restart) resumes from the file, not from the start.
    await dynamo_store.upsert(job("b", "completed", 9))
    await dynamo_store.upsert(job("c", "in_progress", 10))
    await dynamo_store.upsert(job("a", "in_progress", 11))  # refused by DynamoDB: no stream record at all
    second = new_follower()
    drain(second)
    assert final_state(warehouse) == {"a": ("completed", 2), "b": ("completed", 2), "c": ("in_progress", 1)}
    assert doubled_rows(warehouse) == 0
    # moto emits a key-only INSERT before each new item's full image; the second follower saw only the
    # records written after the first one's checkpoint: b's MODIFY and c's two INSERTs.
    assert second.stats.records == 3
    argmax = warehouse.query(
        f"SELECT key, argMax(status, version) AS status FROM {JOB_RESULTS_TABLE} GROUP BY key ORDER BY key")
    assert [row["status"] for row in argmax] == ["completed", "completed", "in_progress"]


# ---- the command ----


def test_replicate_follow_command_follows_every_routed_table_and_stops_on_sigterm(
        dynamodb_client: Any, dynamo_table: str, streams_client: Any, tmp_path: Path) -> None:
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import uuid

    from ingest.dynamo_schema import create_table

    second_table = f"oot-second-{uuid.uuid4().hex[:8]}"
    create_table(dynamodb_client, second_table)
    expected: dict[str, tuple[str, str, str]] = {}  # table -> (stream ARN, shard, last sequence number)
    for table in (dynamo_table, second_table):
        store = DynamoStore(dynamodb_client, table)
        asyncio.run(store.upsert(job("a", "in_progress")))
        asyncio.run(store.upsert(job("a", "completed", 3)))
        arn = stream_arn(dynamodb_client, table)
        assert arn
        shard = streams_client.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        iterator = streams_client.get_shard_iterator(StreamArn=arn, ShardId=shard,
                                                     ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records = streams_client.get_records(ShardIterator=iterator)["Records"]
        expected[table] = (arn, shard, records[-1]["dynamodb"]["SequenceNumber"])
    env = {**os.environ, "OOT_HUD_DATA_DIR": str(tmp_path / "data"),
           "OOT_HUD_REPLICATOR_ROUTES": f"{dynamo_table}=oot_job_results,{second_table}=oot_job_results"}
    env.pop("OOT_HUD_DYNAMO_TABLE", None)
    process = subprocess.Popen([sys.executable, "-m", "oot_hud", "replicate", "--follow",
                                "--state-dir", str(tmp_path / "state")], env=env, cwd=Path(__file__).parents[1],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def position(table: str) -> str | None:
        arn, shard, _ = expected[table]
        store = FileCheckpoints(tmp_path / "state", table)
        return store.load(arn)[0].get(shard, ShardCheckpoint()).sequence if store.path.exists() else None

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if all(position(table) == last for table, (_, _, last) in expected.items()):
                break
            time.sleep(0.1)
        assert {table: position(table) for table in expected} == {t: e[2] for t, e in expected.items()}
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert all(f"following {arn}" in out for arn, _, _ in expected.values())


def test_replicate_follow_refuses_without_a_table_or_a_stream(
        moto_endpoint: str, dynamodb_client: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import uuid

    from oot_hud.cli import main as cli_main

    monkeypatch.delenv("OOT_HUD_DYNAMO_TABLE", raising=False)
    assert cli_main(["replicate", "--follow"]) == 2
    name = f"oot-nostream-{uuid.uuid4().hex[:8]}"
    dynamodb_client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                                 AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
                                 KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}])
    monkeypatch.setenv("OOT_HUD_DYNAMO_TABLE", name)
    assert cli_main(["replicate", "--follow"]) == 2
    assert "has no stream" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["replicate", "--follow", "--reconcile"])  # one mode at a time


async def test_trimmed_stream_recovers_through_the_real_reconcile(
        dynamo_store: DynamoStore, dynamodb_client: Any, dynamo_table: str, warehouse: Warehouse) -> None:
    from replicator.reconcile import reconcile

    # The items exist in DynamoDB, but the (fake) stream lost the records that carried them.
    await dynamo_store.upsert(job("a", "in_progress"))
    await dynamo_store.upsert(job("a", "completed", 5))
    await dynamo_store.upsert(job("b", "in_progress"))
    streams = FakeStreams()
    streams.add_shard("shard-a")
    lost = [streams.put("shard-a") for _ in range(3)]
    streams.trim("shard-a", lost[-1])
    checkpoints = MemoryCheckpoints()
    checkpoints.save(STREAM_ARN, {"shard-a": ShardCheckpoint(lost[0])})
    replicator = Replicator.for_warehouse(warehouse, {dynamo_table: JOB_RESULTS_TABLE})
    f = StreamFollower(streams, STREAM_ARN, dynamo_table, replicator, checkpoints,
                       lambda: reconcile(dynamodb_client, warehouse, replicator, dynamo_table))
    drain(f)
    assert f.stats.reconciles == 1
    assert final_state(warehouse) == {"a": ("completed", 2), "b": ("in_progress", 1)}
    assert "shard-a" not in checkpoints.shards  # reset: the shard is read from what the stream still keeps
