"""Saved queries, PyTorch HUD style: ``sql/queries/<name>/query.sql`` + ``params.json``.

``params.json`` is ``{"params": {name: ClickHouse type}, "defaults": {name: value}, "tests": [{name: value}, ...]}``.
Only declared parameters are passed; an undeclared or mistyped one is refused (``QueryParamError``), never
dropped. A parameter with a natural default (``now``: ``""`` = the server's clock, ``silence_hours``) declares
it in ``defaults`` and may then be left out; every other declared parameter is required.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from sql.warehouse import Warehouse

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_INT_RANGES = {"UInt8": (0, 2**8 - 1), "UInt16": (0, 2**16 - 1), "UInt32": (0, 2**32 - 1),
               "UInt64": (0, 2**64 - 1), "Int32": (-(2**31), 2**31 - 1), "Int64": (-(2**63), 2**63 - 1)}


class QueryNotFound(LookupError):
    pass


class QueryParamError(ValueError):
    """A parameter is undeclared, missing or of the wrong type; the message says which."""


@dataclasses.dataclass(frozen=True)
class SavedQuery:
    name: str
    sql: str
    params: dict[str, str]
    tests: list[dict[str, Any]]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)

    def bind(self, given: Mapping[str, Any], *, from_text: bool = False) -> dict[str, Any]:
        """Check ``given`` against the declared parameters; with ``from_text``, parse strings (HTTP)."""
        undeclared = sorted(set(given) - set(self.params))
        if undeclared:
            raise QueryParamError(f"{self.name} takes no parameter {', '.join(undeclared)}; "
                                  f"it takes {', '.join(sorted(self.params)) or 'none'}")
        missing = sorted(set(self.params) - set(given) - set(self.defaults))
        if missing:
            raise QueryParamError(f"{self.name} needs parameter {', '.join(missing)}")
        return {name: _coerce(name, self.params[name], given[name], from_text) if name in given
                else self.defaults[name] for name in self.params}

    def run(self, warehouse: Warehouse, given: Mapping[str, Any], *, from_text: bool = False) -> list[dict[str, Any]]:
        return warehouse.query(self.sql, self.bind(given, from_text=from_text))


@functools.cache
def load(name: str) -> SavedQuery:
    if not _NAME.match(name):
        raise QueryNotFound(name)
    folder = resources.files("sql") / "queries" / name
    try:
        sql = (folder / "query.sql").read_text()
        spec = json.loads((folder / "params.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise QueryNotFound(name) from None
    params = dict(spec.get("params", {}))
    defaults = dict(spec.get("defaults", {}))
    stray = sorted(set(defaults) - set(params))
    if stray:  # a packaging mistake, caught by the tests that load every query
        raise ValueError(f"{name}/params.json: defaults for undeclared parameters {', '.join(stray)}")
    defaults = {key: _coerce(key, params[key], value, False) for key, value in defaults.items()}
    return SavedQuery(name=name, sql=sql, params=params, tests=list(spec.get("tests", [])), defaults=defaults)


def names() -> list[str]:
    folder = resources.files("sql") / "queries"
    return sorted(entry.name for entry in folder.iterdir() if (entry / "query.sql").is_file())


def run_saved_query(warehouse: Warehouse, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    return load(name).run(warehouse, params)


def _coerce(name: str, ch_type: str, value: Any, from_text: bool) -> Any:
    if ch_type in _INT_RANGES:
        if from_text and isinstance(value, str) and re.fullmatch(r"-?\d{1,20}", value.strip()):
            value = int(value)
        low, high = _INT_RANGES[ch_type]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise QueryParamError(f"parameter {name} must be an integer of type {ch_type}")
        return value
    if ch_type in ("Float32", "Float64"):
        if from_text and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise QueryParamError(f"parameter {name} must be a number")
        return float(value)
    if ch_type == "String":
        if not isinstance(value, str):
            raise QueryParamError(f"parameter {name} must be a string")
        if len(value) > 1024:
            raise QueryParamError(f"parameter {name} is longer than 1024 characters")
        return value
    if ch_type == "Array(String)":
        if from_text and isinstance(value, str):
            value = [part for part in value.split(",") if part]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise QueryParamError(f"parameter {name} must be a list of strings")
        return value
    raise QueryParamError(f"parameter {name} has an unsupported declared type {ch_type}")
