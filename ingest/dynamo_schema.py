"""Create (idempotently) the DynamoDB results table: hash key ``key``, on-demand, stream with both images."""

from __future__ import annotations

from typing import Any

STREAM_VIEW = "NEW_AND_OLD_IMAGES"


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
