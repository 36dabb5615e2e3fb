"""Schemathesis over the service's own OpenAPI document: every operation the live app publishes (ingest, the
query API, the pages, the webhook, and whatever routes are added later) gets generated requests, valid and
invalid, on a real uvicorn server on loopback with the embedded warehouse. No answer may be a 5xx, carry a
status code the operation does not declare, or violate the declared content type or schema.

Bounded for ``make test`` (``FUZZ_API_EXAMPLES`` per operation, default 12); ``scripts/fuzz-long`` runs it
with many more.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.service import Bot
from ingest.stores.embedded import EmbeddedStore
from oot_hud.app import create_app
from oot_hud.services import Services
from oot_hud.settings import Settings
from sql.warehouse import Warehouse
from tests.conftest import relay_payload
from tests.readpath_data import NOW, record, row
from tests.servers import serve

TOKEN = "fuzz-relay-token-0123456789abcdef"
EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "12"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "unused", relay_tokens=[TOKEN])


# The document as the app factory builds it (the test below checks the server serves exactly this one).
schema = schemathesis.openapi.from_dict(create_app(_settings(Path("/nonexistent"))).openapi())


@pytest.fixture
def base_url(warehouse: Warehouse, tmp_path: Path) -> Iterator[str]:
    """The real app (embedded store, a dry-run bot with a webhook secret) served on loopback."""
    warehouse.insert_job_rows([row(record()), row(record(job="b", conclusion="failure")),
                               row(record(pr=0, sha="c" * 40, received=NOW))])
    config = _settings(tmp_path)
    store = EmbeddedStore(warehouse, commit_window_ms=1)
    store.load_known_keys()
    bot = Bot(warehouse=warehouse, webhook_secret="fuzz-webhook-secret", debounce=0.0)
    services = Services(settings=config, warehouse=warehouse, store=store, relay_tokens=[TOKEN], bot=bot)
    with serve(create_app(config, services=services)) as url:
        yield url


schema.config.generation.update(max_examples=EXAMPLES, modes=["positive", "negative"])


@schema.parametrize()
@hypothesis_settings(deadline=None, suppress_health_check=list(HealthCheck), max_examples=EXAMPLES)
def test_every_operation_answers_as_documented(case: Any, base_url: str) -> None:
    # Half the ingest requests carry the relay token, so valid bodies reach the store, not only the 401.
    tokened = case.path == "/api/oot/results" and zlib.crc32(repr(case.body).encode()) % 2
    headers = {"X-OOT-Relay-Token": TOKEN} if tokened else {}
    case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)


def test_the_document_declares_every_answer_of_every_operation(base_url: str) -> None:
    """The fuzz above is only as good as the document: the server serves the document fuzzed, every
    operation declares its error answers, and ingest, query API, pages and webhook are all in it."""
    import httpx

    assert httpx.get(f"{base_url}/openapi.json", timeout=30).json() == schema.raw_schema
    operations = {(op.ok().method.upper(), op.ok().path): op.ok() for op in schema.get_all_operations()}
    for needed in [("POST", "/api/oot/results"), ("GET", "/api/oot/query/{name}"), ("GET", "/oot"),
                   ("GET", "/oot/{org}/{repo}"), ("GET", "/oot/pr/{owner}/{repo}/{number}"),
                   ("POST", "/api/github/webhook"), ("GET", "/healthz")]:
        assert needed in operations, f"{needed} is missing from the OpenAPI document"
    for key, operation in operations.items():
        declared = set(operation.definition.raw.get("responses", {}))
        assert "200" in declared or "202" in declared, key
        assert declared & {"400", "401", "403", "404", "503"}, f"{key} declares no error answer: {declared}"


def test_a_valid_relay_body_is_stored(base_url: str) -> None:
    """A sanity check of the harness: a contract body with the token gets a 200 through the same server."""
    import httpx

    response = httpx.post(f"{base_url}/api/oot/results", json=relay_payload("02_pr_completed_success"),
                          headers={"X-OOT-Relay-Token": TOKEN}, timeout=30)
    assert response.status_code == 200 and response.json()["status"] == "completed"
