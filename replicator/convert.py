"""Pure conversion of one DynamoDB stream record into one warehouse row (or a skip, or a poison record)."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from sql.records import COLUMN_NAMES, PrRef, RowConversionError, item_to_row

_DESERIALIZER = TypeDeserializer()
_KEY = COLUMN_NAMES.index("key")
_UPSTREAM = COLUMN_NAMES.index("upstream_repo")
_PR_NUMBER = COLUMN_NAMES.index("pr_number")
_HEAD_SHA = COLUMN_NAMES.index("head_sha")
_VERSION = COLUMN_NAMES.index("version")
_DELETED = COLUMN_NAMES.index("deleted")
_EVENTS = frozenset({"INSERT", "MODIFY", "REMOVE"})


class PoisonRecord(ValueError):
    """A stream record that can never become a row; it goes to the dead-letter table with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One converted record: the destination table and the row (``COLUMN_NAMES`` order) to insert there."""

    table: str
    row: list[Any]

    @property
    def key(self) -> str:
        return self.row[_KEY]

    @property
    def version(self) -> int:
        return self.row[_VERSION]

    @property
    def deleted(self) -> bool:
        return self.row[_DELETED] == 1

    @property
    def pr(self) -> PrRef:
        return PrRef(self.row[_UPSTREAM], self.row[_PR_NUMBER], self.row[_HEAD_SHA])


def sequence_number(record: Mapping[str, Any]) -> str:
    """The record's shard sequence number ("" when absent: a malformed record, or a synthetic one)."""
    section = record.get("dynamodb")
    value = section.get("SequenceNumber") if isinstance(section, Mapping) else None
    return str(value) if value is not None else ""


def source_table_of(record: Mapping[str, Any]) -> str | None:
    """The table name inside ``eventSourceARN`` (``arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/...``)."""
    arn = record.get("eventSourceARN")
    if not isinstance(arn, str):
        return None
    _, _, resource = arn.partition(":table/")
    name = resource.split("/", 1)[0]
    return name or None


def convert_record(record: Mapping[str, Any], routes: Mapping[str, str],
                   source_table: str | None = None) -> Change | None:
    """A stream record -> a ``Change``; ``None`` for an image without a version (skip, not an error).

    ``source_table`` names the DynamoDB table when the record carries no ``eventSourceARN`` (GetRecords).
    Raises ``PoisonRecord`` for anything that cannot convert.
    """
    table_name = source_table_of(record) or source_table
    if table_name is None:
        raise PoisonRecord("record names no source table")
    destination = routes.get(table_name)
    if destination is None:
        raise PoisonRecord(f"no route for table {table_name!r}")
    event = record.get("eventName")
    if event not in _EVENTS:
        raise PoisonRecord(f"unknown eventName {str(event)[:40]!r}")
    section = record.get("dynamodb")
    if not isinstance(section, Mapping):
        raise PoisonRecord("record has no dynamodb section")
    keys = section.get("Keys")
    wire_key = keys.get("key") if isinstance(keys, Mapping) else None
    if not isinstance(wire_key, Mapping) or not isinstance(wire_key.get("S"), str):
        raise PoisonRecord("record has no key")
    image_name = "OldImage" if event == "REMOVE" else "NewImage"
    image = section.get(image_name)
    if not isinstance(image, Mapping):
        raise PoisonRecord(f"{event} record has no {image_name} (the stream must carry NEW_AND_OLD_IMAGES)")
    item = deserialize_image(image)
    if item.get("version") is None:
        return None  # a partial write (moto's key-only first INSERT): the complete image follows
    if item.get("key") != wire_key["S"]:
        raise PoisonRecord("image key differs from the record's key")
    try:
        if event == "REMOVE":
            old_version = item["version"]
            if not isinstance(old_version, int):
                raise PoisonRecord("version is not an integer")
            row = item_to_row(item, deleted=True, version=old_version + 1)
        else:
            row = item_to_row(item)
    except RowConversionError as exc:
        raise PoisonRecord(str(exc)) from exc
    return Change(destination, row)


def deserialize_image(image: Mapping[str, Any]) -> dict[str, Any]:
    """Wire-format attributes -> plain values: numbers become int or float, binary values are poison.

    Strings, numbers, nulls and booleans (every attribute the store writes) take a fast path; other types
    go through boto3's ``TypeDeserializer``.
    """
    item: dict[str, Any] = {}
    for name, wire in image.items():
        # Hot path (every record, every attribute): plain strings and plain integers, no exceptions raised.
        if type(wire) is dict and len(wire) == 1:
            text = wire.get("S")
            if type(text) is str:
                item[name] = text
                continue
            text = wire.get("N")
            if type(text) is str and len(text) < 19 and text.isascii() and text.isdigit():
                item[name] = int(text)
                continue
        if not isinstance(wire, dict) or len(wire) != 1:
            if isinstance(wire, Mapping) and len(wire) == 1:
                wire = dict(wire)
            else:
                raise PoisonRecord(f"attribute {str(name)[:40]!r} is not a typed value")
        ((tag, value),) = wire.items()
        if tag == "S" and type(value) is str:
            item[name] = value
        elif tag == "N" and type(value) is str:
            item[name] = _number(name, value)
        elif tag == "NULL":
            item[name] = None
        elif tag == "B" or tag == "BS":
            # Results are text and numbers only; a binary value means some other writer shares the table.
            raise PoisonRecord(f"binary attribute {str(name)[:40]!r}")
        else:
            try:
                item[name] = _plain(name, _DESERIALIZER.deserialize(wire))
            except (TypeError, ValueError, ArithmeticError, AttributeError) as exc:
                if isinstance(exc, PoisonRecord):
                    raise
                raise PoisonRecord(f"attribute {str(name)[:40]!r} cannot be read: {type(exc).__name__}") from exc
    return item


def _number(name: str, text: str) -> int | float:
    """A DynamoDB number: int when integral, else float; NaN, infinities and overflow are poison."""
    if "." not in text and "e" not in text.lower():
        try:
            return int(text)  # integral, exact at any size (range checks come with the column)
        except ValueError:
            pass
    try:
        number = Decimal(text)
    except ArithmeticError as exc:
        raise PoisonRecord(f"attribute {name[:40]!r} is not a number") from exc
    return _plain(name, number)


def _plain(name: str, value: Any) -> Any:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise PoisonRecord(f"attribute {name[:40]!r} is not a finite number")
        if value == value.to_integral_value():
            return int(value)
        number = float(value)
        if not math.isfinite(number):
            raise PoisonRecord(f"attribute {name[:40]!r} is out of range")
        return number
    if isinstance(value, list):
        return [_plain(name, element) for element in value]
    if isinstance(value, set):
        return {_plain(name, element) for element in value}
    if isinstance(value, dict):
        return {key: _plain(name, element) for key, element in value.items()}
    return value


def raw_json(record: Mapping[str, Any]) -> str:
    """The record as JSON for the dead-letter table; bytes (GetRecords' binary values) as base64."""
    return json.dumps(record, default=_json_default, sort_keys=True, ensure_ascii=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)
