"""The job record (one relay callback's facts), the PR reference, and the one record -> row mapping.

A record is also a DynamoDB item: attribute names equal warehouse column names, so the embedded store
and the replicator both turn a stored item into a warehouse row with ``item_to_row``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from itertools import repeat
from typing import Any

JOB_RESULTS_TABLE = "oot_job_results"
DEAD_LETTER_TABLE = "oot_dead_letters"

STATUS_IN_PROGRESS = "in_progress"
STATUS_COMPLETED = "completed"
STATUSES = (STATUS_IN_PROGRESS, STATUS_COMPLETED)

# Written only by the first callback that carries them (DynamoDB: if_not_exists).
FIRST_ONLY_FIELDS = frozenset({"first_received_at", "started_at", "queue_time_s"})


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class PrRef:
    """A pull request of an upstream repository; ``head_sha`` is the commit a change concerned."""

    upstream_repo: str
    pr_number: int
    head_sha: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class JobRecord:
    """One job execution's facts from one callback. ``None`` means "absent: do not write"."""

    key: str
    downstream_repo: str
    event_type: str
    delivery_id: str
    upstream_repo: str
    pr_number: int
    head_sha: str
    workflow_name: str
    job_name: str
    check_run_id: str
    run_attempt: int
    status: str
    received_at: datetime
    downstream_level: str | None = None
    ref: str | None = None
    run_id: str | None = None
    workflow_url: str | None = None
    artifact_url: str | None = None
    schema_version: str | None = None
    conclusion: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    queue_time_s: float | None = None
    execution_time_s: float | None = None
    tests_passed: int | None = None
    tests_failed: int | None = None
    tests_skipped: int | None = None
    tests_total: int | None = None

    def present_fields(self) -> dict[str, Any]:
        """The fields this callback carries, as item attributes (datetimes as ISO-8601 strings)."""
        out: dict[str, Any] = {}
        for name in _RECORD_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            out[name] = format_time(value) if isinstance(value, datetime) else value
        out["first_received_at"] = out["received_at"]
        return out

    @property
    def pr(self) -> PrRef:
        return PrRef(self.upstream_repo, self.pr_number, self.head_sha)


_RECORD_FIELDS = tuple(field.name for field in dataclasses.fields(JobRecord))  # fields() per call is slow


def format_time(value: datetime) -> str:
    """Canonical stored form: UTC, millisecond precision, ``Z`` suffix."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    """Parse an ISO-8601 timestamp; naive values are UTC."""
    return as_utc(datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value))


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive one (as the warehouse's driver returns them) is UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Warehouse columns in table order: (name, ClickHouse type). The schema file must agree (a test checks).
COLUMNS: tuple[tuple[str, str], ...] = (
    ("key", "String"),
    ("downstream_repo", "String"),
    ("downstream_level", "LowCardinality(String)"),
    ("event_type", "LowCardinality(String)"),
    ("delivery_id", "String"),
    ("upstream_repo", "LowCardinality(String)"),
    ("pr_number", "UInt64"),
    ("head_sha", "String"),
    ("ref", "String"),
    ("workflow_name", "String"),
    ("job_name", "String"),
    ("check_run_id", "String"),
    ("run_id", "String"),
    ("run_attempt", "UInt32"),
    ("workflow_url", "String"),
    ("artifact_url", "String"),
    ("schema_version", "String"),
    ("status", "LowCardinality(String)"),
    ("conclusion", "LowCardinality(String)"),
    ("started_at", "Nullable(DateTime64(3, 'UTC'))"),
    ("completed_at", "Nullable(DateTime64(3, 'UTC'))"),
    ("queue_time_s", "Nullable(Float64)"),
    ("execution_time_s", "Nullable(Float64)"),
    ("tests_passed", "Nullable(UInt64)"),
    ("tests_failed", "Nullable(UInt64)"),
    ("tests_skipped", "Nullable(UInt64)"),
    ("tests_total", "Nullable(UInt64)"),
    ("first_received_at", "DateTime64(3, 'UTC')"),
    ("received_at", "DateTime64(3, 'UTC')"),
    ("version", "UInt64"),
    ("deleted", "UInt8"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(name for name, _ in COLUMNS)

_REQUIRED = ("key", "downstream_repo", "delivery_id", "workflow_name", "job_name", "check_run_id",
             "status", "received_at", "version")
_TIME_COLUMNS = frozenset({"started_at", "completed_at", "first_received_at", "received_at"})
_INT_COLUMNS = frozenset({"pr_number", "run_attempt", "tests_passed", "tests_failed", "tests_skipped",
                          "tests_total", "version", "deleted"})
_FLOAT_COLUMNS = frozenset({"queue_time_s", "execution_time_s"})
UINT64_MAX = 2**64 - 1
_STRING_DEFAULTS = {"event_type": "pull_request", "upstream_repo": "pytorch/pytorch"}


class RowConversionError(ValueError):
    """An item cannot become a warehouse row (a poison record)."""


def item_to_row(item: Mapping[str, Any], *, deleted: bool = False, version: int | None = None) -> list[Any]:
    """A stored item (plain Python values; Decimals allowed) -> a row in ``COLUMN_NAMES`` order."""
    missing = [name for name in _REQUIRED if item.get(name) is None and not (name == "version" and version)]
    if missing:
        raise RowConversionError(f"item lacks {', '.join(missing)}")
    # One precompiled converter per column: this runs once per replicated record, so it stays lean.
    row = [convert(name, item.get(name)) for name, convert in _CONVERTERS]
    if version is not None:
        row[_VERSION_INDEX] = _to_int("version", version)
    row[_DELETED_INDEX] = 1 if deleted else 0
    return row


def canonical_times(texts: Sequence[str]) -> list[datetime]:
    """Many timestamps in the canonical stored form ("…Z") -> what a time column's converter makes of each.

    The batch form of the converters' first rule, in C-level passes; raises ValueError (TypeError for a
    non-string) unless every text is canonical and parses: the caller then converts them one by one.
    """
    if sum(map(str.endswith, texts, repeat("Z"))) != len(texts):
        raise ValueError("not every timestamp is in the canonical form")
    return list(map(datetime.fromisoformat, texts))


def _time_converter(*, required: bool) -> Callable[[str, Any], Any]:
    def convert(name: str, value: Any) -> Any:
        if type(value) is str:
            # The canonical stored form ("…Z") parses straight to an aware UTC datetime.
            if value.endswith("Z"):
                try:
                    return datetime.fromisoformat(value)
                except ValueError:
                    pass
            try:
                return parse_time(value)
            except ValueError as exc:
                raise RowConversionError(f"{name} is not ISO-8601: {value[:40]!r}") from exc
        if value is None:
            if required:
                raise RowConversionError(f"item lacks {name}")
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        raise RowConversionError(f"{name} is not a timestamp string")
    return convert


def _int_converter(default: int | None) -> Callable[[str, Any], Any]:
    def convert(name: str, value: Any) -> Any:
        if type(value) is int and 0 <= value <= UINT64_MAX:
            return value
        if value is None:
            return default
        return _to_int(name, value)
    return convert


def _float_converter(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
        raise RowConversionError(f"{name} is not a finite number")
    number = float(value)
    if not math.isfinite(number):
        raise RowConversionError(f"{name} is not a finite number")
    return number


def _string_converter(default: str) -> Callable[[str, Any], Any]:
    def convert(name: str, value: Any) -> Any:
        if type(value) is str:
            return value
        if value is None:
            return default
        raise RowConversionError(f"{name} is not a string")
    return convert


@dataclasses.dataclass(frozen=True, slots=True)
class ColumnSpec:
    """How one warehouse column is filled from an item attribute.

    ``item_to_row`` and the replicator's batch converter both derive from these specs, so there is one
    mapping. ``convert(name, value)`` is the exact per-value rule (``None`` = absent -> ``default``; raises
    ``RowConversionError``). Contract the batch converter relies on (tests check it): a ``str`` for a
    "string" column, an ``int`` in ``0..UINT64_MAX`` for an "int" column and a finite ``float`` for a
    "float" column convert to themselves.
    """

    name: str
    type: str  # the ClickHouse type
    kind: str  # "string", "int", "float" or "time"
    default: Any  # the value of an absent attribute
    required: bool  # an absent attribute is poison
    convert: Callable[[str, Any], Any]


def _spec_for(name: str, type_: str) -> ColumnSpec:
    required = name in _REQUIRED or name == "first_received_at"
    if name in _TIME_COLUMNS:
        return ColumnSpec(name, type_, "time", None, required,
                          _time_converter(required=name == "first_received_at"))
    if name in _INT_COLUMNS:
        default = 1 if name == "run_attempt" else (0 if name in {"pr_number", "version", "deleted"} else None)
        return ColumnSpec(name, type_, "int", default, required, _int_converter(default))
    if name in _FLOAT_COLUMNS:
        return ColumnSpec(name, type_, "float", None, required, _float_converter)
    default = _STRING_DEFAULTS.get(name, "")
    return ColumnSpec(name, type_, "string", default, required, _string_converter(default))


COLUMN_SPECS: tuple[ColumnSpec, ...] = tuple(_spec_for(name, type_) for name, type_ in COLUMNS)
_CONVERTERS: tuple[tuple[str, Callable[[str, Any], Any]], ...] = tuple(
    (spec.name, spec.convert) for spec in COLUMN_SPECS)
_VERSION_INDEX = COLUMN_NAMES.index("version")
_DELETED_INDEX = COLUMN_NAMES.index("deleted")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise RowConversionError(f"{name} is not an integer")
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise RowConversionError(f"{name} is not an integer")
        value = int(value)
    if not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
        raise RowConversionError(f"{name} is out of range")
    return value


def row_to_pr(row: Mapping[str, Any]) -> PrRef:
    return PrRef(str(row["upstream_repo"]), int(row["pr_number"]), str(row["head_sha"]))
