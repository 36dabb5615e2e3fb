"""The production result store: one conditional DynamoDB ``UpdateItem`` per callback (boto3, in a thread)."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from typing import Any

from ingest.stores.base import Outcome, StoreError, UpsertResult
from sql.records import FIRST_ONLY_FIELDS, STATUS_COMPLETED, JobRecord

# Explicit client behaviour: boto3's defaults (60 s read timeout, "legacy" retries) would let one slow
# DynamoDB call hold a relay request for minutes.
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 10.0
MAX_ATTEMPTS = 3
RETRY_MODE = "standard"

_CONDITIONAL_FAILED = "ConditionalCheckFailedException"


def client_config() -> Any:
    """The botocore ``Config`` every oot-hud DynamoDB client uses."""
    from botocore.config import Config

    return Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                  retries={"mode": RETRY_MODE, "max_attempts": MAX_ATTEMPTS})


def to_dynamo_value(value: Any) -> Any:
    """A present field -> a value boto3 can serialise (floats become Decimal through ``str``)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("DynamoDB numbers must be finite")
        return Decimal(str(value))
    return value


def build_update(record: JobRecord) -> dict[str, Any]:
    """The ``UpdateItem`` arguments (minus table name) for one record; pure, so it is unit-testable."""
    fields = record.present_fields()
    key = fields.pop("key")
    names: dict[str, str] = {}
    values: dict[str, Any] = {":one": 1}
    assignments: list[str] = []
    aliases: dict[str, str] = {}
    for index, (name, value) in enumerate(sorted(fields.items())):
        alias, placeholder = f"#a{index}", f":v{index}"
        aliases[name] = alias
        names[alias] = name
        values[placeholder] = to_dynamo_value(value)
        if name in FIRST_ONLY_FIELDS:
            assignments.append(f"{alias} = if_not_exists({alias}, {placeholder})")
        else:
            assignments.append(f"{alias} = {placeholder}")
    names["#version"] = "version"
    status_alias = aliases["status"]  # status is a required field, so always present
    arguments: dict[str, Any] = {
        "Key": {"key": key},
        "UpdateExpression": f"SET {', '.join(assignments)} ADD #version :one",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ReturnValues": "ALL_NEW",
    }
    if record.status != STATUS_COMPLETED:
        # Only a non-completed write can regress a record; a completed write is always accepted.
        values[":completed"] = STATUS_COMPLETED
        arguments["ConditionExpression"] = (
            f"attribute_not_exists({status_alias}) OR {status_alias} <> :completed")
        # The stored item comes back with the refusal: no second read to learn its status.
        arguments["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    return arguments


class DynamoStore:
    """``ResultStore`` on a DynamoDB table. It never announces: the replicator does, after the warehouse has it."""

    name = "dynamodb"

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    @classmethod
    def from_environment(cls, table_name: str) -> DynamoStore:
        """A store whose client is configured by boto3's own variables (``AWS_ENDPOINT_URL_DYNAMODB``, ...)."""
        import boto3

        return cls(boto3.client("dynamodb", config=client_config()), table_name)

    async def start(self) -> None:
        return None

    async def upsert(self, record: JobRecord) -> UpsertResult:
        arguments = build_update(record)
        return await asyncio.to_thread(self._update, record.key, arguments)

    def _update(self, key: str, arguments: dict[str, Any]) -> UpsertResult:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.update_item(TableName=self.table_name, **to_wire(arguments))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == _CONDITIONAL_FAILED:
                stored = exc.response.get("Item") or self._get(key)
                return UpsertResult(Outcome.STALE, key, _status(stored), _version(stored))
            # The error code only: messages can echo request content.
            raise StoreError(f"DynamoDB UpdateItem failed: {code or type(exc).__name__}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {type(exc).__name__}") from exc
        item = response.get("Attributes", {})
        return UpsertResult(Outcome.STORED, key, _status(item), _version(item))

    def _get(self, key: str) -> dict[str, Any]:
        """The stored item (consistent read, wire form), for a refusal that did not carry it."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.get_item(TableName=self.table_name, Key={"key": {"S": key}},
                                              ConsistentRead=True)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"DynamoDB GetItem failed: {type(exc).__name__}") from exc
        return response.get("Item", {})

    async def flushed(self) -> bool:
        """Nothing to wait for here: the warehouse is fed by the stream replicator, in its own time."""
        return True

    async def ping(self) -> bool:
        def describe() -> bool:
            try:
                self._client.describe_table(TableName=self.table_name)
            except Exception:  # any failure means "not reachable" for /healthz
                return False
            return True

        return await asyncio.to_thread(describe)

    async def close(self) -> None:
        return None


def to_wire(arguments: dict[str, Any]) -> dict[str, Any]:
    """Serialise the plain-Python key and values of ``build_update``'s arguments into DynamoDB's wire form."""
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    wire = dict(arguments)
    wire["Key"] = {k: serializer.serialize(v) for k, v in arguments["Key"].items()}
    wire["ExpressionAttributeValues"] = {
        k: serializer.serialize(v) for k, v in arguments["ExpressionAttributeValues"].items()}
    return wire


def _status(item: dict[str, Any]) -> str:
    """The status of an item in wire form (``{"status": {"S": ...}}``)."""
    return str(item.get("status", {}).get("S", ""))


def _version(item: dict[str, Any]) -> int:
    return int(item.get("version", {}).get("N", "0"))
