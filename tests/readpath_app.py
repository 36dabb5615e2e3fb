"""Read-path test helpers: the real app on the test's warehouse, served by uvicorn on loopback in a thread."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from ingest.stores.embedded import EmbeddedStore
from oot_hud.app import create_app
from oot_hud.pages import page_clock
from oot_hud.services import Services
from oot_hud.settings import Settings
from sql.warehouse import Warehouse
from tests.servers import serve

__all__ = ["TOKEN", "build_app", "serve"]

TOKEN = "read-path-relay-token-0123456789"


def build_app(warehouse: Warehouse, tmp_path: Path, *, now: datetime | None = None,
              **settings: Any) -> FastAPI:
    """``create_app`` with an ``EmbeddedStore`` on ``warehouse``; ``now`` pins the pages' clock."""
    config = Settings(data_dir=tmp_path / "unused", relay_tokens=[TOKEN], **settings)
    store = EmbeddedStore(warehouse, commit_window_ms=1)
    services = Services(settings=config, warehouse=warehouse, store=store, relay_tokens=[TOKEN])
    app = create_app(config, services=services)
    app.state.services = services  # also usable through ASGITransport, which runs no lifespan
    if now is not None:
        app.dependency_overrides[page_clock] = lambda: now
    return app

