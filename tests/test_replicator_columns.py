"""The columnar fast path gives exactly the rows of the per-record path, and leaves it everything else."""

from __future__ import annotations

import copy
import dataclasses
import random
import shutil
import sys
from datetime import datetime
from typing import Any

import pytest

import replicator.columns
from replicator.columns import convert_columns, milliseconds
from replicator.convert import PoisonRecord, convert_record
from replicator.pipeline import Replicator
from replicator.sink import RetryPolicy, WarehouseSink
from sql.records import (
    COLUMN_NAMES,
    COLUMN_SPECS,
    JOB_RESULTS_TABLE,
    UINT64_MAX,
    PrRef,
    canonical_times,
    item_to_row,
)
from sql.warehouse import Warehouse, WarehouseError
from tests.stream_records import TABLE, completed, item, job, latest, stream_record

ROUTES = {TABLE: JOB_RESULTS_TABLE, "other-results": "other_job_results"}
ABSENT = object()  # an edit that removes the attribute
BUILT = replicator.columns._c_wire_texts is not None


@pytest.fixture(autouse=True, params=["c", "python"])
def extraction(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs with the C extraction (replicator/_speedups.c) and with the Python one."""
    if request.param == "python":
        monkeypatch.setattr(replicator.columns, "_c_wire_texts", None)
    elif not BUILT:
        pytest.skip("replicator._speedups is not built (no C compiler): the Python path only")
    return str(request.param)


def plain(n: int, *, done: bool = True, version: int = 2, table: str | None = TABLE) -> dict[str, Any]:
    """A record as the store writes it: completed (or in progress, with fewer attributes)."""
    record = job(f"acme/npu/d{n}/ci/test/{n}", delivery_id=f"d{n}", check_run_id=str(n), pr_number=1000 + n % 7)
    if done:
        record = dataclasses.replace(completed(record), tests_passed=n % 13)
    return stream_record("MODIFY" if done else "INSERT", new=item(record, version), seq=n, table=table)


def strict(row: Any) -> list[tuple[type, str]]:
    """A row compared by type and repr: 1 == 1.0 and 0.0 == -0.0 would hide a difference."""
    return [(type(value), repr(value)) for value in row]


def exact(record: Any, source_table: str | None = None) -> tuple[Any, ...]:
    """What the per-record path makes of ``record``."""
    try:
        change = convert_record(record, ROUTES, source_table)
    except PoisonRecord as exc:
        return ("poison", exc.reason)
    except Exception as exc:
        return ("unexpected", type(exc).__name__)
    return ("skip",) if change is None else ("row", change.table, strict(change.row))


def check(records: list[Any], source_table: str | None = None) -> tuple[set[int], list[int]]:
    """Every fast-path row equals the exact path's; every record is in exactly one place."""
    batches, rest = convert_columns(records, ROUTES, source_table)
    fast: dict[int, tuple[Any, ...]] = {}
    for batch in batches:
        assert batch.indexes == sorted(batch.indexes)
        assert driver_view(batch.columns) == batch.driver_columns
        for index, row in zip(batch.indexes, batch.rows(), strict=True):
            assert index not in fast
            fast[index] = ("row", batch.table, strict(row))
    assert sorted([*fast, *rest]) == list(range(len(records))) and rest == sorted(rest)
    for index, outcome in fast.items():
        assert exact(records[index], source_table) == outcome, f"record {index}"
    return set(fast), rest


def driver_view(columns: list[list[Any]]) -> list[list[Any]]:
    """What the driver should get for ``columns``: time columns as milliseconds since the epoch."""
    return [[None if value is None else milliseconds(value) for value in column] if spec.kind == "time"
            else column for spec, column in zip(COLUMN_SPECS, columns, strict=True)]


def edited(record: dict[str, Any], name: str, wire: Any) -> dict[str, Any]:
    record = copy.deepcopy(record)
    image = record["dynamodb"]["NewImage"]
    if wire is ABSENT:
        image.pop(name, None)
    else:
        image[name] = wire
    return record


def test_plain_batches_take_the_fast_path_with_the_exact_rows() -> None:
    records = [plain(n, done=n % 3 != 0) for n in range(50)]  # completed and in-progress images mixed
    fast, rest = check(records)
    assert rest == [] and len(fast) == 50
    # The rows are item_to_row's for the same items (the embedded store's mapping).
    (batch,), _ = convert_columns(records, ROUTES)
    first = item(dataclasses.replace(completed(job("acme/npu/d1/ci/test/1", delivery_id="d1", check_run_id="1",
                                                   pr_number=1001)), tests_passed=1), 2)
    assert list(batch.rows()[1]) == item_to_row(first)


EDGES: list[tuple[str, Any]] = [
    # numbers that are not plain decimals, or not finite, or out of range
    *[("queue_time_s", {"N": text}) for text in (
        "NaN", "Infinity", "-Infinity", "1e400", "1" * 400, "-0.0", "0.0", "-1.5", "1.5e3", "2.0", "5.", ".5",
        "00.25", "1_000", " 5", "", ".", "1.2.3", "0x10", "0.1000000000000000055511151231257827")],
    *[("tests_total", {"N": text}) for text in (
        str(2**70), str(UINT64_MAX), str(UINT64_MAX + 1), "-1", "1e2", "1.5", "2.0", "007", "\u0663", "\u00b2",
        "0" * 25 + "1", "NaN", "", "+5", "1_0")],
    ("pr_number", {"N": str(UINT64_MAX)}), ("run_attempt", {"N": "0"}), ("run_attempt", ABSENT),
    ("tests_total", {"S": "5"}), ("tests_total", {"BOOL": True}), ("tests_total", {"NULL": True}),
    ("tests_total", ABSENT), ("execution_time_s", {"N": "0"}), ("execution_time_s", ABSENT),
    # the version: absent or NULL means a partial write (skipped), odd values are poison
    ("version", ABSENT), ("version", {"NULL": True}), ("version", {"N": "0"}), ("version", {"N": "-1"}),
    ("version", {"S": "2"}),
    # strings: binary (as boto3 and as a Lambda event carry it), other tags and shapes
    *[("job_name", wire) for wire in (
        {"B": b"\x01"}, {"B": "AQ=="}, {"BS": [b"\x01"]}, {"N": "5"}, {"S": None}, {"S": 5}, {"S": ""},
        {"S": "ünïcødé ✓ \u0000"}, {"S": "x", "N": "1"}, {}, None, ["S", "x"], "x", {"L": [{"S": "x"}]},
        {"M": {}}, {"NULL": True}, {"SS": ["a"]}, ABSENT)],
    ("conclusion", {"NULL": True}), ("conclusion", ABSENT), ("ref", {"S": "refs/heads/main"}),
    ("event_type", ABSENT), ("upstream_repo", ABSENT), ("downstream_repo", ABSENT), ("key", ABSENT),
    ("key", {"S": "another/key"}),
    # timestamps: other offsets, naive, date only, microseconds, junk, numbers
    *[(name, {"S": text}) for name in ("received_at", "started_at") for text in (
        "2026-11-27T14:00:00+02:00", "2026-11-27", "2026-11-27T12:00:00", "2026-11-27T12:00:00.123456Z",
        "garbage", "", "2026-13-01T00:00:00Z")],
    ("received_at", {"N": "1800000000"}), ("started_at", {"NULL": True}), ("started_at", ABSENT),
    ("first_received_at", {"NULL": True}), ("first_received_at", ABSENT), ("completed_at", {"S": None}),
    # attributes no column reads, and the deleted flag that INSERT/MODIFY rows always clear
    ("ttl", {"N": "1800000000"}), ("blob", {"B": b"\x01"}), ("note", {"S": "x"}), ("weird", None),
    ("deleted", {"N": "1"}), ("deleted", {"S": "x"}),
]


@pytest.mark.parametrize(("name", "wire"), EDGES, ids=[f"{name}={wire!r}"[:60] for name, wire in EDGES])
def test_an_unusual_value_gives_the_exact_outcome_and_spares_its_neighbours(name: str, wire: Any) -> None:
    records = [plain(1), edited(plain(2), name, wire), plain(3, done=False)]
    fast, rest = check(records)
    assert {0, 2} <= fast
    if exact(records[1])[0] != "row":
        assert rest == [1]  # poison and skips are the exact path's business


def record_level_oddities() -> list[tuple[str, Any]]:
    remove = stream_record("REMOVE", old=item(job("acme/npu/d9/ci/test/9"), 3), seq=9)
    no_arn = plain(10, table=None)
    other_key = plain(11)
    other_key["dynamodb"]["Keys"]["key"] = {"S": "acme/else"}
    no_keys = plain(12)
    del no_keys["dynamodb"]["Keys"]
    number_key = plain(13)
    number_key["dynamodb"]["Keys"]["key"] = {"N": "13"}
    no_image = plain(14)
    del no_image["dynamodb"]["NewImage"]
    list_image = plain(15)
    list_image["dynamodb"]["NewImage"] = [1]
    no_section = plain(16)
    del no_section["dynamodb"]
    unknown_event = plain(17)
    unknown_event["eventName"] = "TRUNCATE"
    list_event = plain(18)
    list_event["eventName"] = ["MODIFY"]
    return [("remove", remove), ("no ARN", no_arn), ("other key", other_key), ("no Keys", no_keys),
            ("number key", number_key), ("no NewImage", no_image), ("list NewImage", list_image),
            ("no dynamodb", no_section), ("unknown event", unknown_event), ("list event", list_event),
            ("unrouted table", plain(19, table="nowhere")), ("other route", plain(20, table="other-results")),
            ("not a dict", ["MODIFY"]), ("None", None)]


@pytest.mark.parametrize(("label", "odd"), record_level_oddities(), ids=[label for label, _ in record_level_oddities()])
@pytest.mark.parametrize("source_table", [None, TABLE])
def test_an_unusual_record_gives_the_exact_outcome(label: str, odd: Any, source_table: str | None) -> None:
    records = [plain(1), odd, plain(3)]
    fast, _ = check(records, source_table)
    assert {0, 2} <= fast
    if label == "other route" or (label == "no ARN" and source_table):
        assert 1 in fast  # a second table, or the table named by the caller, is still the fast path


def test_random_batches_match_the_exact_path() -> None:
    chooser = random.Random(20261127)
    oddities = [odd for _, odd in record_level_oddities()]
    for _ in range(40):
        records: list[Any] = []
        for n in range(chooser.randint(1, 60)):
            roll = chooser.random()
            if roll < 0.15:
                records.append(copy.deepcopy(chooser.choice(oddities)))
            elif roll < 0.45:
                record = plain(n, done=chooser.random() < 0.5)
                for name, wire in chooser.sample(EDGES, chooser.randint(1, 3)):
                    record = edited(record, name, wire)
                records.append(record)
            else:
                records.append(plain(chooser.randint(0, 30), done=chooser.random() < 0.6,
                                     version=chooser.randint(1, 4)))
        check(records, chooser.choice([None, TABLE]))


def test_batches_of_several_blocks_match_the_exact_path_block_by_block() -> None:
    # 256 images per block: an odd record sends only its own block column by column (or, without the
    # extension, only its own column); the other blocks keep the fast reading.
    records = [plain(n) for n in range(700)]
    records[300] = edited(records[300], "note", {"S": "an attribute no column reads"})
    records[301] = edited(records[301], "tests_total", {"N": "-1"})
    records[650] = edited(records[650], "job_name", {"S": "x", "N": "1"})
    fast, rest = check(records)
    assert rest == [300, 301, 650] and len(fast) == 697  # each left to the exact path, and only it
    assert [exact(records[i])[0] for i in rest] == ["row", "poison", "poison"]


def test_the_extension_is_built_wherever_a_c_compiler_is() -> None:
    # `make` installs with `pip install -e .`, which builds it; a silent build failure would leave the
    # slower path in place without anyone noticing.
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine")
    assert BUILT, "replicator._speedups did not build: run `pip install -e .` and read the compiler's error"


@pytest.mark.skipif(not BUILT, reason="replicator._speedups is not built")
def test_wire_texts_reads_regular_images_and_refuses_the_rest(extraction: str) -> None:
    from replicator._speedups import wire_texts

    names = {"a": 0, "b": 1, "c": 2}
    tags = ["S", "N", "S"]
    text = "ünï" * 3
    images = [{"a": {"S": text}, "b": {"N": "7"}}, {"c": {"S": ""}, "a": {"S": "x"}}]
    before = sys.getrefcount(text)
    for _ in range(1000):
        columns, absent = wire_texts(images, names, tags)
    assert columns == [[text, "x"], ["7", None], [None, ""]] and absent == [0, 1, 1]
    assert sys.getrefcount(text) == before + 1  # held once, by the last result: nothing leaked
    del columns
    assert wire_texts([], names, tags) == ([[], [], []], [0, 0, 0])
    for odd in ({"d": {"S": "x"}}, {"a": {"N": "1"}}, {"a": {"S": "x", "N": "1"}}, {"a": {}}, {"a": {"S": 1}},
                {"a": {"S": None}}, {"a": ["S", "x"]}, {"a": "x"}, {"b": {"N": 5}}):
        assert wire_texts([images[0], odd], names, tags) is None, odd
    assert wire_texts([images[0], ["a"]], names, tags) is None
    with pytest.raises(TypeError):
        wire_texts((images[0],), names, tags)
    with pytest.raises(ValueError, match="out of range"):
        wire_texts([{"a": {"S": "x"}}], {"a": 5}, tags)


def test_column_specs_hold_the_contract_the_fast_path_relies_on() -> None:
    assert tuple(spec.name for spec in COLUMN_SPECS) == COLUMN_NAMES
    samples: dict[str, list[Any]] = {"string": ["", "x", "ünï"], "int": [0, 1, UINT64_MAX],
                                     "float": [0.0, 1.5, 1e300]}
    for spec in COLUMN_SPECS:
        for value in samples.get(spec.kind, []):
            converted = spec.convert(spec.name, value)
            assert type(converted) is type(value) and converted == value, spec.name
        if spec.kind == "time":
            assert isinstance(spec.convert(spec.name, "2026-11-27T12:00:00.000Z"), datetime)
        if not spec.required:
            assert spec.convert(spec.name, None) == spec.default, spec.name


@pytest.mark.parametrize(("texts", "accepted"), [
    (["2026-11-27T12:00:00.000Z", "2026-11-27T12:00:00.123Z", "1999-01-01T00:00:00Z",
      "2026-11-27T12:00:00.123456Z"], True),
    (["2026-11-27T12:00:00.000Z", "2026-11-27T14:00:00+02:00"], False),
    (["2026-11-27T12:00:00.000Z", "2026-11-27"], False),
    (["2026-13-01T00:00:00.000Z"], False), (["garbageZ"], False), ([""], False),
])
def test_canonical_times_is_the_time_converters_rule_in_bulk(texts: list[str], accepted: bool) -> None:
    spec = next(spec for spec in COLUMN_SPECS if spec.name == "received_at")
    if not accepted:
        with pytest.raises(ValueError):
            canonical_times(texts)  # refused: the fast path converts such texts one by one
        return
    assert strict(canonical_times(texts)) == strict(spec.convert(spec.name, text) for text in texts)


def test_the_driver_columns_store_exactly_what_the_rows_store(warehouse: Warehouse) -> None:
    # Times with microseconds (stored truncated), offsets, naive, before 1970 and absent: the fast path's
    # milliseconds must land as the same DateTime64(3) values the driver makes of the datetimes.
    times = ["2026-11-27T12:00:00.123456Z", "2026-11-27T14:00:00.999999+02:00", "2026-11-27T12:00:00",
             "1969-12-31T23:59:59.999500Z", "1999-01-01T00:00:00Z", "2026-11-27T12:00:00.000Z", ABSENT]
    records = []
    for n, text in enumerate(times * 3):
        record = plain(n)
        for name in ("started_at", "completed_at") if text is ABSENT else ("started_at", "received_at"):
            record = edited(record, name, text if text is ABSENT else {"S": text})
        records.append(record)
    (batch,), rest = convert_columns(records, ROUTES)
    assert rest == [] and len(batch.indexes) == len(records)
    warehouse.command(f"CREATE TABLE rows_copy AS {JOB_RESULTS_TABLE}")
    warehouse.insert(JOB_RESULTS_TABLE, batch.driver_columns, COLUMN_NAMES, column_oriented=True)
    warehouse.insert("rows_copy", batch.rows(), COLUMN_NAMES)
    read = "SELECT * FROM {table:Identifier} ORDER BY key"
    stored = warehouse.query(read, {"table": JOB_RESULTS_TABLE})
    assert stored == warehouse.query(read, {"table": "rows_copy"}) and len(stored) == len(records)
    assert {row["started_at"] for row in stored} >= {  # the read gives naive UTC
        None, datetime(2026, 11, 27, 12, 0, 0, 123000), datetime(1969, 12, 31, 23, 59, 59, 999000)}


# ---- through the pipeline: the fast write, its chunks and their failure reporting ----

class FailingSecondInsert:
    def __init__(self, real: Warehouse) -> None:
        self.real = real
        self.calls = 0

    def insert(self, table: str, rows: Any, column_names: Any, *, column_oriented: bool = False) -> None:
        self.calls += 1
        if self.calls == 2:
            raise WarehouseError("Connection refused")
        self.real.insert(table, rows, column_names, column_oriented=column_oriented)


def test_fast_batches_land_in_chunks_and_report_the_first_record_of_a_failed_chunk(warehouse: Warehouse) -> None:
    records = [plain(n) for n in range(7)]
    announced: list[PrRef] = []
    policy = RetryPolicy(attempts=1, sleep=lambda _: None)
    replicator = Replicator(WarehouseSink(FailingSecondInsert(warehouse), retry=policy), {TABLE: JOB_RESULTS_TABLE},
                            on_change=announced.append, max_rows_per_insert=3)
    result = replicator.process(records)
    assert (result.ok, result.failed_index, result.first_failed_sequence, result.landed) == (False, 3, "3", 3)
    assert [row[0] for row in latest(warehouse)] == sorted(f"acme/npu/d{n}/ci/test/{n}" for n in range(3))
    assert announced == [PrRef("pytorch/pytorch", 1000 + n, "a" * 40) for n in range(3)]
    retried = Replicator.for_warehouse(warehouse, {TABLE: JOB_RESULTS_TABLE}).process(records[3:])
    assert retried.ok and retried.landed == 4 and len(latest(warehouse)) == 7


def test_a_repeated_key_in_a_fast_batch_lands_its_newest_version_once(warehouse: Warehouse) -> None:
    older, newer = plain(1, done=False, version=1), plain(1, version=2)
    records = [plain(2), newer, plain(3), older]  # out of order: the newer version comes first
    result = Replicator.for_warehouse(warehouse, {TABLE: JOB_RESULTS_TABLE}).process(records)
    assert result.ok and result.landed == 3
    assert [row[1:] for row in latest(warehouse)] == [("completed", "success", 1, 2)] * 3
