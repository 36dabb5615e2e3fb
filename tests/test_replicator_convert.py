"""Stream record -> warehouse row: the pure conversion, its skips and its poison."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from replicator.convert import (
    PoisonRecord,
    convert_record,
    deserialize_image,
    raw_json,
    sequence_number,
    source_table_of,
)
from sql.records import COLUMN_NAMES, JOB_RESULTS_TABLE, PrRef, item_to_row
from tests.stream_records import TABLE, completed, item, job, stream_record, wire

ROUTES = {TABLE: JOB_RESULTS_TABLE}


def column(row: list, name: str):
    return row[COLUMN_NAMES.index(name)]


def test_insert_becomes_the_same_row_the_embedded_store_would_write() -> None:
    values = item(job(), 1)
    change = convert_record(stream_record("INSERT", new=values), ROUTES)
    assert change is not None
    assert change.table == JOB_RESULTS_TABLE
    assert change.row == item_to_row(values)  # one mapping, shared with the embedded store
    assert (change.key, change.version, change.deleted) == (values["key"], 1, False)
    assert change.pr == PrRef("pytorch/pytorch", 4242, "a" * 40)


def test_numbers_come_back_as_int_and_float_not_decimal() -> None:
    values = item(completed(job()), 7)
    row = convert_record(stream_record("MODIFY", new=values, old=item(job(), 6)), ROUTES).row
    assert column(row, "version") == 7 and type(column(row, "version")) is int
    assert column(row, "tests_total") == 11 and type(column(row, "tests_total")) is int
    assert column(row, "execution_time_s") == 300.25 and type(column(row, "execution_time_s")) is float
    assert column(row, "status") == "completed"
    assert column(row, "completed_at") == datetime(2026, 11, 27, 12, 5, tzinfo=UTC)
    assert not any(isinstance(value, Decimal) for value in row)


def test_remove_becomes_a_tombstone_one_version_above_the_old_image() -> None:
    old = item(completed(job()), 2)
    change = convert_record(stream_record("REMOVE", old=old), ROUTES)
    assert change is not None and change.deleted
    assert change.version == 3
    assert column(change.row, "status") == "completed"  # the tombstone keeps the old facts


@pytest.mark.parametrize("event", ["INSERT", "MODIFY"])
def test_image_without_version_is_skipped(event: str) -> None:
    # moto's first INSERT for an UpdateItem on a new key holds only the key.
    record = stream_record(event, new={"key": "k"}, old={"key": "k"} if event == "MODIFY" else None)
    assert convert_record(record, ROUTES) is None


def test_source_table_from_arn_or_argument() -> None:
    with_arn = stream_record("INSERT", new=item(job(), 1))
    without = stream_record("INSERT", new=item(job(), 1), table=None)
    assert source_table_of(with_arn) == TABLE
    assert source_table_of(without) is None
    assert convert_record(without, ROUTES, source_table=TABLE) is not None
    with pytest.raises(PoisonRecord, match="no source table"):
        convert_record(without, ROUTES)


def test_routes_choose_the_destination_table() -> None:
    change = convert_record(stream_record("INSERT", new=item(job(), 1), table="staging"),
                            {TABLE: JOB_RESULTS_TABLE, "staging": "staging_results"})
    assert change is not None and change.table == "staging_results"


def _poison(**overrides) -> dict:
    values = item(job(), 1)
    values.update(overrides)
    return stream_record("INSERT", new=values)


@pytest.mark.parametrize(("record", "reason"), [
    (_poison(tests_total=Decimal("NaN")), "not a finite number"),
    (_poison(tests_total=2**70), "out of range"),
    (_poison(version=2**70), "out of range"),
    (_poison(tests_total=-1), "out of range"),
    (_poison(status=b"\x00\x01"), "binary attribute 'status'"),
    (_poison(blob=b"\x00\x01"), "binary attribute 'blob'"),
    (_poison(job_name=None), "lacks job_name"),
    (_poison(received_at="yesterday"), "not ISO-8601"),
    (stream_record("INSERT", new=item(job(), 1), table="someone-elses"), "no route"),
    (stream_record("REMOVE", new=item(job(), 1)), "REMOVE record has no OldImage"),
    (stream_record("TRUNCATE", new=item(job(), 1)), "unknown eventName"),
    (stream_record("INSERT", new={k: v for k, v in item(job(), 1).items() if k != "key"}, key="k"),
     "differs"),
    ({"eventName": "INSERT", "eventSourceARN": stream_record("INSERT")["eventSourceARN"]}, "no dynamodb"),
])
def test_poison_records_raise_with_a_reason(record: dict, reason: str) -> None:
    with pytest.raises(PoisonRecord, match=reason):
        convert_record(record, ROUTES)


def test_missing_key_is_poison() -> None:
    record = stream_record("INSERT", new=item(job(), 1))
    del record["dynamodb"]["Keys"]
    with pytest.raises(PoisonRecord, match="no key"):
        convert_record(record, ROUTES)


def test_binary_as_the_lambda_event_carries_it_is_poison() -> None:
    # Lambda events carry binary values as base64 text; GetRecords gives bytes. Both are poison.
    image = wire(item(job(), 1))
    image["job_name"] = {"B": "AAE="}
    with pytest.raises(PoisonRecord, match="binary attribute 'job_name'"):
        convert_record(stream_record("INSERT", raw_new=image, key=job().key), ROUTES)
    with pytest.raises(PoisonRecord, match="not a typed value"):
        deserialize_image({"key": "plain"})


def test_raw_json_keeps_bytes_and_decimals_readable() -> None:
    record = {"dynamodb": {"NewImage": {"b": {"B": b"\x00\x01"}, "n": Decimal("1.5")},
                           "SequenceNumber": "42"}}
    text = raw_json(record)
    assert '"AAE="' in text and '"1.5"' in text
    assert sequence_number(record) == "42"
    assert sequence_number({}) == ""
