"""Create (idempotently) the DynamoDB tables: the results table (hash key ``key``, on-demand, a stream with
both images) and the bot's state table (``pk``/``sk``, on-demand, TTL on ``expires_at``, no stream)."""

from __future__ import annotations

from typing import Any

STREAM_VIEW = "NEW_AND_OLD_IMAGES"
TTL_ATTRIBUTE = "expires_at"
STATE_TABLE_SUFFIX = "-state"


def state_table_name(results_table: str) -> str:
    """The bot's state table beside a results table (when ``OOT_HUD_DYNAMO_STATE_TABLE`` names none)."""
    return results_table + STATE_TABLE_SUFFIX


def create_table(client: Any, name: str, *, wait_delay_s: float = 1.0, wait_attempts: int = 60) -> bool:
    """Make sure table ``name`` exists, is ACTIVE and streams NEW_AND_OLD_IMAGES. True if it was created."""
    from botocore.exceptions import ClientError

    created = False
    description = _describe(client, name)
    if description is None:
        try:
            client.create_table(
                TableName=name,
                AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
                StreamSpecification={"StreamEnabled": True, "StreamViewType": STREAM_VIEW},
            )
            created = True
        except ClientError as exc:
            # Another process created it between our describe and create: that is fine.
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
    _wait_active(client, name, wait_delay_s, wait_attempts)
    if not created:
        description = _describe(client, name) or {}
        spec = description.get("StreamSpecification") or {}
        if not spec.get("StreamEnabled"):
            # An existing table without a stream would silently never replicate: switch it on.
            client.update_table(TableName=name,
                                StreamSpecification={"StreamEnabled": True, "StreamViewType": STREAM_VIEW})
            _wait_active(client, name, wait_delay_s, wait_attempts)
        elif spec.get("StreamViewType") != STREAM_VIEW:
            raise RuntimeError(f"table {name} streams {spec.get('StreamViewType')}, the replicator needs "
                               f"{STREAM_VIEW}; disable its stream and run create-table again")
    return created


def create_state_table(client: Any, name: str, *, wait_delay_s: float = 1.0, wait_attempts: int = 60) -> bool:
    """Make sure the bot's state table ``name`` exists, is ACTIVE and expires items by ``expires_at``.

    No stream: the bot's items must never reach the replicator. True if it was created."""
    from botocore.exceptions import ClientError

    created = False
    if _describe(client, name) is None:
        try:
            client.create_table(
                TableName=name,
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                      {"AttributeName": "sk", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                BillingMode="PAY_PER_REQUEST",
            )
            created = True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
    _wait_active(client, name, wait_delay_s, wait_attempts)
    ttl = client.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        # TTL only bounds the table's size: every read and conditional write compares expires_at itself.
        client.update_time_to_live(TableName=name, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": TTL_ATTRIBUTE})
    return created


def stream_arn(client: Any, name: str) -> str | None:
    """The table's latest stream ARN, or None when streams are off."""
    description = _describe(client, name) or {}
    return description.get("LatestStreamArn")


def _describe(client: Any, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return client.describe_table(TableName=name)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return None
        raise


def _wait_active(client: Any, name: str, delay_s: float, attempts: int) -> None:
    waiter = client.get_waiter("table_exists")
    waiter.wait(TableName=name, WaiterConfig={"Delay": max(1, round(delay_s)), "MaxAttempts": attempts})
