"""Shared fixtures. One embedded engine per test process (chDB allows one data path per process), a fresh
database per test; payload fixtures are loaded fresh for each use so no test can mutate another's."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import AsyncIterator, Iterator
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


class _BorrowedWarehouse(Warehouse):
    """A warehouse on the session's engine client: code under test may close it, the client stays open."""

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def engine_client(engine_dir: Path) -> Iterator[Any]:
    """One chDB client for the session: each new chDB connection leaks a few descriptors inside the engine."""
    seed = Warehouse.connect(url=None, data_dir=engine_dir, database="t_session")
    yield seed._client
    seed._client.close()


@pytest.fixture
def warehouse(engine_client: Any) -> Iterator[Warehouse]:
    """An embedded warehouse in a database of its own, schema applied."""
    database = f"t_{uuid.uuid4().hex[:12]}"
    engine_client.database = None
    engine_client.command(f"CREATE DATABASE {database}")
    engine_client.database = database
    wh = _BorrowedWarehouse(engine_client, database, kind="embedded")
    wh.apply_schema()
    try:
        yield wh
    finally:
        wh.command(f"DROP DATABASE IF EXISTS {database}")


# ---- DynamoDB (moto server mode over loopback HTTP) -- owned by the DynamoDB store engineer ----

@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's server on a free loopback port for the session; dummy AWS settings point boto3 at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    _make_moto_item_writes_atomic()
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    no_config = tmp_path_factory.mktemp("aws") / "none"  # never read a developer's real AWS files
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(no_config), "AWS_SHARED_CREDENTIALS_FILE": str(no_config),
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint, "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": endpoint,
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        try:
            yield endpoint
        finally:
            server.stop()


def _make_moto_item_writes_atomic() -> None:
    """DynamoDB applies each item write atomically (ADD counters, conditions, ALL_NEW); moto's threaded
    server does not: concurrent UpdateItems on one key lose increments. Serialise its DynamoDB write and
    read handlers (in this process, where the threaded server runs) so tests see DynamoDB's guarantee."""
    import functools
    import threading

    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler, "_oot_hud_atomic", False):
        return
    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "get_item", "batch_write_item",
                 "transact_write_items"):
        original = getattr(DynamoHandler, name)

        @functools.wraps(original)
        def serialised(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        setattr(DynamoHandler, name, serialised)
    DynamoHandler._oot_hud_atomic = True  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def dynamodb_client(moto_endpoint: str) -> Any:
    import boto3

    from ingest.stores.dynamo import client_config

    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1", config=client_config())


@pytest.fixture
def streams_client(moto_endpoint: str) -> Any:
    """DynamoDB Streams of the moto server (the replicator's reads)."""
    import boto3

    from ingest.stores.dynamo import client_config

    return boto3.client("dynamodbstreams", endpoint_url=moto_endpoint, region_name="us-east-1",
                        config=client_config())


@pytest.fixture
def dynamo_table(dynamodb_client: Any) -> str:
    """A fresh, uniquely named results table (streams on) in the moto server."""
    from ingest.dynamo_schema import create_table

    name = f"oot-results-{uuid.uuid4().hex[:12]}"
    create_table(dynamodb_client, name)
    return name


@pytest.fixture
async def dynamo_store(dynamodb_client: Any, dynamo_table: str) -> AsyncIterator[Any]:
    """A started ``DynamoStore`` on a fresh table."""
    from ingest.stores.dynamo import DynamoStore

    store = DynamoStore(dynamodb_client, dynamo_table)
    await store.start()
    try:
        yield store
    finally:
        await store.close()

# ---- end DynamoDB fixtures ----


# ---- GitHub App (respx fake GitHub, App key) -- owned by the GitHub App engineer ----
GITHUB_FIXTURES = FIXTURES / "github"


def github_payload(name: str) -> dict[str, Any]:
    """A fresh copy of ``tests/fixtures/github/<event>.<action>[-variant].json``."""
    path = GITHUB_FIXTURES / (name if name.endswith(".json") else f"{name}.json")
    return copy.deepcopy(json.loads(path.read_text()))


@pytest.fixture(scope="session")
def app_private_key() -> str:
    """A real RSA key for App authentication (githubkit signs real JWTs with it)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def github_fake() -> Iterator[Any]:
    """The one stateful GitHub fake (``tests/github_fake.py``) behind respx: every route must be used,
    and any request it does not serve fails the test (network stays off)."""
    import respx

    from tests.github_fake import FAKE_API, GitHubFake

    with respx.mock(assert_all_called=True, assert_all_mocked=True) as router:
        fake = GitHubFake(FAKE_API)
        fake.install(router)
        yield fake

# ---- end GitHub App fixtures ----
