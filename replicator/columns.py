"""Batch conversion of stream records column by column: the fast path beside ``convert_record``.

A batch of INSERT/MODIFY records of plain shape (every attribute one ``{"S": str}`` or ``{"N": digits}``,
no unknown attributes) converts one column at a time, mostly in C-level loops (``map``, ``set``,
``str.join``): about 6 us a record instead of 18 (9 without the optional C reader of the images,
``replicator/_speedups.c``). Anything unusual in a record (a poison value, a missing
version, a NULL, a REMOVE, a number with a sign or an exponent) sends that record to the exact per-record
path, ``convert_record``, so the rows and the dead-letter reasons are exactly that path's.

The columns come from ``sql.records.COLUMN_SPECS``, the specs ``item_to_row`` is built from: this module
only decodes DynamoDB's wire format per column kind; defaults, required columns, range limits and
timestamp parsing are the specs'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import repeat
from operator import floordiv, itemgetter, sub
from typing import Any

from replicator.convert import source_table_of
from sql.bot_state import Announcement, Watermark
from sql.records import (
    COLUMN_NAMES,
    COLUMN_SPECS,
    UINT64_MAX,
    ColumnSpec,
    PrRef,
    RowConversionError,
    canonical_times,
)

try:  # the optional C extraction (replicator/_speedups.c): built by `pip install`, absent otherwise
    from replicator._speedups import wire_texts as _c_wire_texts
except ImportError:  # pragma: no cover - depends on the build
    _c_wire_texts = None

_UPSERTS = frozenset({"INSERT", "MODIFY"})
_KNOWN = frozenset(COLUMN_NAMES)
_KEY = COLUMN_NAMES.index("key")
_UPSTREAM = COLUMN_NAMES.index("upstream_repo")
_PR_NUMBER = COLUMN_NAMES.index("pr_number")
_HEAD_SHA = COLUMN_NAMES.index("head_sha")
_VERSION = COLUMN_NAMES.index("version")
_DELETED = COLUMN_NAMES.index("deleted")
_DICT_ONLY = {dict}
_STR_ONLY = {str}
_ONE = {1}
_MAX_SAFE_DIGITS = 19  # any 19-digit number is below 2**64; longer ones take the exact range check
_TAG_OF = {"string": "S", "time": "S", "int": "N", "float": "N"}
_WIRE_TAGS = [_TAG_OF[spec.kind] for spec in COLUMN_SPECS]
_GETTERS = {"S": itemgetter("S"), "N": itemgetter("N")}
_KEYS, _KEY_ATTR, _S = itemgetter("Keys"), itemgetter("key"), _GETTERS["S"]
_BLOCK = 256
_COLUMN_OF = {name: index for index, name in enumerate(COLUMN_NAMES)}
_TIME_INDEXES = tuple(index for index, spec in enumerate(COLUMN_SPECS) if spec.kind == "time")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)

# Whatever a vectorised decoder trips over sends its column through the per-value decoder.
_DECODE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError)


class _Slow(Exception):
    """This value (or, from a column decoder, some value of the column) needs the exact path."""


@dataclasses.dataclass(frozen=True, slots=True)
class ColumnBatch:
    """Converted records bound for one table: batch positions (ascending) and ``COLUMN_NAMES`` columns.

    ``columns`` hold exactly what ``item_to_row`` would (datetimes in the time columns). ``driver_columns``
    are the same columns as handed to the driver: the time columns as whole milliseconds since the epoch,
    which is what a ``DateTime64(3)`` column stores. The driver takes such integers as they are; for a
    datetime it computes them in Python, value by value, which costs more than a third of the conversion.
    """

    table: str
    indexes: list[int]
    columns: list[list[Any]]
    driver_columns: list[list[Any]]

    @property
    def keys(self) -> list[str]:
        return self.columns[_KEY]

    def rows(self) -> list[tuple[Any, ...]]:
        """The rows in ``COLUMN_NAMES`` order (tuples holding what ``item_to_row``'s lists hold)."""
        return list(zip(*self.columns, strict=True))

    def slice(self, start: int, stop: int) -> ColumnBatch:
        return ColumnBatch(self.table, self.indexes[start:stop], [column[start:stop] for column in self.columns],
                           [column[start:stop] for column in self.driver_columns])

    def prs(self) -> list[PrRef]:
        """The distinct PRs of these rows in first-seen order."""
        triples = dict.fromkeys(zip(self.columns[_UPSTREAM], self.columns[_PR_NUMBER], self.columns[_HEAD_SHA],
                                    strict=True))
        return [PrRef(*triple) for triple in triples]

    def announcements(self) -> list[Announcement]:
        """One per PR (pull requests only): the PR's last row here as the watermark a render must see."""
        last: dict[tuple[str, int], Watermark] = {}
        for repo, number, key, version in zip(self.columns[_UPSTREAM], self.columns[_PR_NUMBER], self.columns[_KEY],
                                              self.columns[_VERSION], strict=True):
            if number > 0:
                last[(repo, number)] = Watermark(key, int(version))
        return [Announcement(PrRef(repo, number), mark) for (repo, number), mark in last.items()]


def convert_columns(records: Sequence[Any], routes: Mapping[str, str],
                    source_table: str | None = None) -> tuple[list[ColumnBatch], list[int]]:
    """Convert what the fast path can; return one batch per table and the positions left for the exact path.

    Every record appears exactly once: in a batch or in the returned positions (ascending).
    """
    groups, rest = _eligible(records, routes, source_table)
    batches: list[ColumnBatch] = []
    for table, (indexes, images, wire_keys) in groups.items():
        columns, ticks, bad = convert_images(images, wire_keys)
        if bad:
            rest.extend(indexes[i] for i in bad)
            keep = [i for i in range(len(indexes)) if i not in bad]
            indexes = [indexes[i] for i in keep]
            columns = [[column[i] for i in keep] for column in columns]
            ticks = {index: [column[i] for i in keep] for index, column in ticks.items()}
        if indexes:
            driver_columns = list(columns)
            for index, column in ticks.items():
                driver_columns[index] = column
            batches.append(ColumnBatch(table, indexes, columns, driver_columns))
    rest.sort()
    return batches, rest


def convert_images(images: list[dict[str, Any]], wire_keys: list[str]
                   ) -> tuple[list[list[Any]], dict[int, list[Any]], set[int]]:
    """NewImages (dicts) -> ``COLUMN_NAMES`` columns, the time columns again as milliseconds since the epoch
    (by column index), and the positions that need the exact path.

    ``wire_keys`` are the records' ``Keys.key`` strings; an image whose key differs is left to the exact
    path. Values at the returned positions are placeholders.
    """
    count = len(images)
    bad: set[int] = set()
    # text -> value, shared by a batch's columns ("ticks": a time text -> its milliseconds since the epoch)
    caches: dict[str, dict[str, Any]] = {"time": {}, "ticks": {}}
    present = 0
    columns: list[list[Any]] = [[] for _ in COLUMN_SPECS]
    ticks: dict[int, list[Any]] = {index: [] for index in _TIME_INDEXES}
    # Column by column within blocks that stay in the CPU cache: a batch of 1,000 images is ~10 MB of
    # small objects, and a pass per column over all of it would miss the cache on every wire.
    for start in range(0, count, _BLOCK):
        block = images[start:start + _BLOCK] if count > _BLOCK else images
        # Every image of the block read once, in C, when the extension is built and the block is regular
        # (known attributes, each exactly {tag: str}); else column by column below.
        extracted = wire_texts(block)
        for index, (spec, column) in enumerate(zip(COLUMN_SPECS, columns, strict=True)):
            wires = None
            try:
                if extracted is None:
                    wires = list(map(dict.get, block, repeat(spec.name)))
                    texts, absent = _texts(spec, wires)
                else:
                    texts, absent = extracted[0][index], extracted[1][index]
                    if absent and spec.required:
                        raise _Slow
                if absent == len(texts):
                    values = [spec.default] * absent
                elif extracted is not None and spec.kind == "string" and not absent:
                    values = texts  # the C reading checked that each is a str: nothing left to decode
                else:
                    values = _COLUMN_DECODERS[spec.kind](spec, texts, absent, caches)
                if index in ticks:
                    ticks[index] += _tick_column(texts, absent, caches)
            except (_Slow, *_DECODE_ERRORS):
                if wires is None:
                    wires = list(map(dict.get, block, repeat(spec.name)))
                values, absent = _decode_each(spec, wires, caches["time"], bad, start)
                if index in ticks:
                    ticks[index] += [None if value is None else milliseconds(value) for value in values]
            present += len(block) - absent
            column += values
    if sum(map(len, images)) != present:
        # An attribute no column reads, or a None where a typed value belongs: the exact path decides.
        bad.update(i for i, image in enumerate(images)
                   if not image.keys() <= _KNOWN or any(wire is None for wire in image.values()))
    columns[_DELETED] = [0] * count  # INSERT/MODIFY rows are never tombstones (item_to_row's deleted=False)
    if columns[_KEY] != wire_keys:
        bad.update(i for i, (key, wire_key) in enumerate(zip(columns[_KEY], wire_keys, strict=True))
                   if key != wire_key)
    return columns, ticks, bad


def wire_texts(images: list[dict[str, Any]]) -> tuple[list[list[Any]], list[int]] | None:
    """Each column's wire texts (None where absent) and absent counts, read in C; None when the extension
    is not built or some image is irregular (the caller then reads column by column)."""
    if _c_wire_texts is None:
        return None
    return _c_wire_texts(images, _COLUMN_OF, _WIRE_TAGS)


def milliseconds(value: datetime) -> int:
    """Whole milliseconds since the epoch, rounded down: the value a ``DateTime64(3)`` column stores, and
    exactly what clickhouse-connect computes from an aware datetime (its seconds, floored, plus the
    microseconds, scaled and floored)."""
    return (value - _EPOCH) // _MILLISECOND


def _eligible(records: Sequence[Any], routes: Mapping[str, str], source_table: str | None
              ) -> tuple[dict[str, tuple[list[int], list[dict[str, Any]], list[str]]], list[int]]:
    """Group fast-path candidates per destination table: (positions, NewImages, Keys.key strings)."""
    uniform = _uniform(records, routes, source_table)
    if uniform is not None:
        return uniform, []
    groups: dict[str, tuple[list[int], list[dict[str, Any]], list[str]]] = {}
    rest: list[int] = []
    for index, record in enumerate(records):
        try:
            if type(record) is not dict or record.get("eventName") not in _UPSERTS:
                raise _Slow
            table = routes.get(source_table_of(record) or source_table)  # type: ignore[arg-type]
            section = record["dynamodb"]
            image = section["NewImage"]
            key = section["Keys"]["key"]["S"]
            if table is None or type(section) is not dict or type(image) is not dict or type(key) is not str:
                raise _Slow
        except (_Slow, *_DECODE_ERRORS):
            rest.append(index)
            continue
        indexes, images, keys = groups.setdefault(table, ([], [], []))
        indexes.append(index)
        images.append(image)
        keys.append(key)
    return groups, rest


def _uniform(records: Sequence[Any], routes: Mapping[str, str], source_table: str | None
             ) -> dict[str, tuple[list[int], list[dict[str, Any]], list[str]]] | None:
    """The common batch (one table, INSERT/MODIFY only, plain shape) checked in C-level passes, else None.

    ``dict.get`` raises TypeError for anything but a dict, which is the type check; the wire keys are
    compared with the images' (string-checked) keys later, which checks them.
    """
    if not records:
        return None
    try:
        if not set(map(dict.get, records, repeat("eventName"))) <= _UPSERTS:
            return None
        if len(set(map(dict.get, records, repeat("eventSourceARN")))) != 1:
            return None
        table = routes.get(source_table_of(records[0]) or source_table)  # type: ignore[arg-type]
        sections = list(map(dict.get, records, repeat("dynamodb")))
        images = list(map(dict.get, sections, repeat("NewImage")))
        if table is None or set(map(type, images)) != _DICT_ONLY:
            return None
        keys = list(map(_S, map(_KEY_ATTR, map(_KEYS, sections))))
    except _DECODE_ERRORS:
        return None
    return {table: (list(range(len(records))), images, keys)}


# ---- column decoders: (spec, texts (None: absent), number absent, caches) -> values ----
# The texts' type check is ``"".join`` (TypeError for anything but str) or the spec's own converter.

def _texts(spec: ColumnSpec, wires: list[Any]) -> tuple[list[Any], int]:
    """The column's wire texts (None where absent); raises unless every present wire is one plain tag."""
    tag = _TAG_OF[spec.kind]
    try:
        texts = list(map(_GETTERS[tag], wires))  # TypeError: an absent attribute (None)
    except TypeError:
        absent = wires.count(None)
        if spec.required:
            raise _Slow from None
        if absent == len(wires):
            return wires, absent
        present = [wire for wire in wires if wire is not None]
        if set(map(len, present)) != _ONE:
            raise _Slow from None
        texts = [None if wire is None else wire[tag] for wire in wires]
        if texts.count(None) != absent:  # {"S": None}: the exact path decides what it means
            raise _Slow from None
        return texts, absent
    if set(map(len, wires)) != _ONE:
        raise _Slow
    return texts, 0


def _string_column(spec: ColumnSpec, texts: list[Any], absent: int, caches: dict[str, dict[str, Any]]
                   ) -> list[Any]:
    if absent:
        "".join([text for text in texts if text is not None])
        default = spec.default
        return [default if text is None else text for text in texts]
    "".join(texts)
    return texts


def _time_column(spec: ColumnSpec, texts: list[Any], absent: int, caches: dict[str, dict[str, Any]]
                 ) -> list[Any]:
    # Timestamps repeat (first_received_at = received_at, completed_at = received_at of the completion):
    # convert each distinct text once, canonical ones in one batch (sql.records.canonical_times), and note
    # its milliseconds for the driver (_tick_column) at the same time.
    times = caches["time"]
    new = [text for text in set(texts).difference(times) if text is not None]
    if new:
        try:
            converted = canonical_times(new)
        except (ValueError, TypeError):  # not all canonical: the spec's converter, one text at a time
            if set(map(type, new)) != _STR_ONLY:
                raise _Slow from None
            converted = [spec.convert(spec.name, text) for text in new]
        times.update(zip(new, converted, strict=True))
        caches["ticks"].update(zip(new, map(floordiv, map(sub, converted, repeat(_EPOCH)), repeat(_MILLISECOND)),
                                   strict=True))
    if absent:
        return [None if text is None else times[text] for text in texts]
    return list(map(times.__getitem__, texts))


def _tick_column(texts: list[Any], absent: int, caches: dict[str, dict[str, Any]]) -> list[Any]:
    """A decoded time column's texts -> milliseconds since the epoch (None where absent)."""
    ticks = caches["ticks"]
    if absent:
        return [None if text is None else ticks[text] for text in texts]
    return list(map(ticks.__getitem__, texts))


def _int_column(spec: ColumnSpec, texts: list[Any], absent: int, caches: dict[str, dict[str, Any]]
                ) -> list[Any]:
    present = [text for text in texts if text is not None] if absent else texts
    digits = "".join(present)
    if not (digits.isascii() and digits.isdigit()) or "" in present or max(map(len, present)) > _MAX_SAFE_DIGITS:
        raise _Slow
    if absent:
        default = spec.default
        return [default if text is None else int(text) for text in texts]
    return list(map(int, texts))


def _float_column(spec: ColumnSpec, texts: list[Any], absent: int, caches: dict[str, dict[str, Any]]
                  ) -> list[Any]:
    present = [text for text in texts if text is not None] if absent else texts
    digits = "".join(present)
    # Plain decimals only (no sign, exponent, blanks or underscores): float() then equals the exact path's
    # int/Decimal detour, and every value is >= 0, so the largest one tells whether all are finite.
    if not (digits.isascii() and digits.replace(".", "").isdigit()):
        raise _Slow
    if absent:
        values = [None if text is None else float(text) for text in texts]
        largest = max(value for value in values if value is not None)
    else:
        values = list(map(float, texts))
        largest = max(values)
    if largest == math.inf:
        raise _Slow
    return values


_Decoder = Callable[[ColumnSpec, list[Any], int, dict[str, dict[str, Any]]], list[Any]]
_COLUMN_DECODERS: dict[str, _Decoder] = {
    "string": _string_column, "time": _time_column, "int": _int_column, "float": _float_column}


# ---- the per-value decoder: the same rules one value at a time, marking the values it cannot take ----

def _decode_each(spec: ColumnSpec, wires: list[Any], times: dict[str, Any], bad: set[int],
                 offset: int = 0) -> tuple[list[Any], int]:
    values: list[Any] = []
    absent = 0
    for index, wire in enumerate(wires, offset):
        if wire is None:
            absent += 1
        try:
            values.append(_decode_value(spec, wire, times))
        except (_Slow, *_DECODE_ERRORS):
            bad.add(index)
            values.append(None)
    return values, absent


def _decode_value(spec: ColumnSpec, wire: Any, times: dict[str, Any] | None = None) -> Any:
    """One wire value of ``spec``'s column -> its column value; raises ``_Slow`` for the exact path."""
    if wire is None:
        if spec.required:
            raise _Slow
        return spec.default
    if type(wire) is not dict or len(wire) != 1:
        raise _Slow
    text = wire.get(_TAG_OF[spec.kind])
    if type(text) is not str:
        raise _Slow
    kind = spec.kind
    if kind == "string":
        return text
    if kind == "time":
        if times is None:
            times = {}
        if text not in times:
            try:
                times[text] = spec.convert(spec.name, text)
            except RowConversionError as exc:
                raise _Slow from exc
        return times[text]
    if not text.isascii():
        raise _Slow
    if kind == "int":
        if not text.isdigit() or int(text) > UINT64_MAX:
            raise _Slow
        return int(text)
    if not text.replace(".", "").isdigit():
        raise _Slow
    value = float(text)  # ValueError ("1.2.3") -> the exact path
    if value == math.inf:
        raise _Slow
    return value
