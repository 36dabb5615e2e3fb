"""Shared fixtures. One embedded engine per test process (chDB allows one data path per process), a fresh
database per test; payload fixtures are loaded fresh for each use so no test can mutate another's."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sql.warehouse import Warehouse

FIXTURES = Path(__file__).parent / "fixtures"
RELAY_FIXTURES = FIXTURES / "relay"


def relay_payload(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/fixtures/relay/<name>.json``."""
    path = RELAY_FIXTURES / (name if name.endswith(".json") else f"{name}.json")
    return copy.deepcopy(json.loads(path.read_text()))


@pytest.fixture(scope="session")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb-engine")


@pytest.fixture
def warehouse(engine_dir: Path) -> Iterator[Warehouse]:
    """An embedded warehouse in a database of its own, schema applied."""
    wh = Warehouse.connect(url=None, data_dir=engine_dir, database=f"t_{uuid.uuid4().hex[:12]}")
    wh.apply_schema()
    try:
        yield wh
    finally:
        wh.command(f"DROP DATABASE IF EXISTS {wh.database}")
        wh.close()
