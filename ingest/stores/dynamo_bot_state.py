"""``BotState`` on a second DynamoDB table (the state table): what every ``serve`` instance shares.

Items (hash key ``pk``, range key ``sk``; ``expires_at`` is the table's TTL attribute, epoch seconds):

| pk | sk | what |
|---|---|---|
| ``marks`` | ``<repo>#<number>`` | a PR waiting for a render: ``token``, ``wm_key``/``wm_version``, ``refresh`` |
| ``pr#<repo>#<number>`` | ``pr`` | the lease (``lease_owner``, ``lease_token``, ``lease_expires``) and the memo |
| ``pr#<repo>#<number>`` | ``once#<name>`` | a set-once record (``value``) |
| ``delivery#<id>`` | ``-`` | a webhook delivery seen |
| ``pace#<installation>`` | ``-`` | the next free write turn (``next_at``), GitHub's block (``blocked_until``) |

DynamoDB has no clock of its own in conditions and its TTL deletes days late (moto: never), so every
expiry is compared with this instance's wall clock inside the conditional write or after the read. A
separate table keeps these items off the results table's stream (the replicator never sees them).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ingest.stores.base import StoreError
from sql.bot_state import (
    DELIVERY_TTL_SECONDS,
    MARK_TTL_SECONDS,
    ONCE_TTL_SECONDS,
    PACE_TTL_SECONDS,
    PR_TTL_SECONDS,
    Announcement,
    Busy,
    Lease,
    LeaseLost,
    Mark,
    PrMemo,
    Watermark,
    WriteTurn,
)
from sql.records import PrRef

MARKS_PK = "marks"
PR_SK = "pr"
_CONDITIONAL_FAILED = "ConditionalCheckFailedException"
_RESERVE_ATTEMPTS = 4  # each failed condition returns the item, so the next attempt takes the right branch
# The memo's attributes (``PrMemo`` field -> DynamoDB attribute and type).
_MEMO = {"comment_id": "N", "comment_hash": "S", "source_hash": "S", "check_sha": "S", "check_run_id": "N",
         "check_hash": "S"}


class SystemClock:
    """The process clocks (``bot.clock.Clock``'s shape, without importing the bot)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()


def _n(value: float) -> dict[str, str]:
    return {"N": str(Decimal(str(round(value, 3))))}


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _num(item: dict[str, Any], name: str, default: float = 0.0) -> float:
    found = item.get(name)
    return float(found["N"]) if found and "N" in found else default


def _str(item: dict[str, Any], name: str) -> str | None:
    found = item.get(name)
    return str(found["S"]) if found and "S" in found else None


def pr_pk(pr: PrRef) -> str:
    return f"pr#{pr.upstream_repo}#{pr.pr_number}"


def _mark_sk(pr: PrRef) -> str:
    return f"{pr.upstream_repo}#{pr.pr_number}"


class DynamoBotState:
    """``BotState`` on the state table; ``clock`` gives the wall clock expiries are compared with."""

    def __init__(self, client: Any, table_name: str, *, clock: Any = None) -> None:
        self._client = client
        self.table_name = table_name
        self._clock = clock or SystemClock()
        self._next_at: dict[int, float] = {}  # per installation: the next free turn at the last look

    @classmethod
    def from_environment(cls, table_name: str) -> DynamoBotState:
        import boto3

        from ingest.stores.dynamo import client_config

        return cls(boto3.client("dynamodb", config=client_config()), table_name)

    def _call(self, operation: str, **arguments: Any) -> dict[str, Any] | None:
        """One DynamoDB call; None when its condition failed (the stored item, if asked for, is lost)."""
        return self._call_item(operation, **arguments)[0]

    def _call_item(self, operation: str, **arguments: Any) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(response or None when the condition failed, the stored item returned with a failed condition)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self._client, operation)(TableName=self.table_name, **arguments), {}
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == _CONDITIONAL_FAILED:
                return None, exc.response.get("Item") or {}
            # The error code only: messages can echo request content.
            raise StoreError(f"DynamoDB {operation} on the state table failed: {code or type(exc).__name__}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"DynamoDB unreachable: {type(exc).__name__}") from exc

    # --- marks -------------------------------------------------------------------------------------
    def announce(self, pr: PrRef, *, watermark: Watermark | None = None, refresh_check: bool = False) -> str:
        token = secrets.token_hex(8)
        names = {"#token": "token", "#exp": "expires_at"}
        values: dict[str, Any] = {":token": _s(token), ":exp": _n(self._clock.wall() + MARK_TTL_SECONDS)}
        sets = ["#token = :token", "#exp = :exp"]
        if watermark is not None:  # without one (a webhook), the replicator's stays: still worth checking
            names.update({"#wk": "wm_key", "#wv": "wm_version"})
            values.update({":wk": _s(watermark.key), ":wv": _n(watermark.version)})
            sets += ["#wk = :wk", "#wv = :wv"]
        if refresh_check:
            names["#refresh"] = "refresh"
            values[":refresh"] = {"BOOL": True}
            sets.append("#refresh = :refresh")
        self._call("update_item", Key={"pk": _s(MARKS_PK), "sk": _s(_mark_sk(pr))},
                   UpdateExpression="SET " + ", ".join(sets), ExpressionAttributeNames=names,
                   ExpressionAttributeValues=values)
        return token

    def announce_all(self, announcements: Sequence[Announcement]) -> int:
        written = 0
        for announcement in announcements:
            if announcement.pr.pr_number > 0:
                self.announce(announcement.pr, watermark=announcement.watermark)
                written += 1
        return written

    def pending(self) -> list[Mark]:
        now = self._clock.wall()
        marks: list[Mark] = []
        arguments: dict[str, Any] = {
            "KeyConditionExpression": "pk = :marks", "FilterExpression": "#exp > :now",
            "ExpressionAttributeNames": {"#exp": "expires_at"},
            "ExpressionAttributeValues": {":marks": _s(MARKS_PK), ":now": _n(now)}}
        while True:
            response = self._call("query", **arguments) or {}
            marks += [self._mark(item) for item in response.get("Items", [])]
            if "LastEvaluatedKey" not in response:
                return marks
            arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def mark_of(self, pr: PrRef) -> Mark | None:
        response = self._call("get_item", Key={"pk": _s(MARKS_PK), "sk": _s(_mark_sk(pr))}, ConsistentRead=True) or {}
        item = response.get("Item")
        if not item or _num(item, "expires_at") <= self._clock.wall():
            return None
        return self._mark(item)

    def clear(self, mark: Mark) -> Mark | None:
        now = self._clock.wall()
        done, stored = self._call_item(
            "delete_item", Key={"pk": _s(MARKS_PK), "sk": _s(_mark_sk(mark.pr))},
            ConditionExpression="attribute_not_exists(pk) OR #token = :token OR #exp <= :now",
            ExpressionAttributeNames={"#token": "token", "#exp": "expires_at"},
            ExpressionAttributeValues={":token": _s(mark.token), ":now": _n(now)},
            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        return None if done is not None else self._mark(stored)

    @staticmethod
    def _mark(item: dict[str, Any]) -> Mark:
        repo, _, number = str(item["sk"]["S"]).rpartition("#")
        key, version = _str(item, "wm_key"), _num(item, "wm_version", -1)
        return Mark(repo, int(number), _str(item, "token") or "",
                    Watermark(key, int(version)) if key is not None and version >= 0 else None,
                    bool(item.get("refresh", {}).get("BOOL")))

    # --- leases ------------------------------------------------------------------------------------
    def acquire(self, pr: PrRef, owner: str, seconds: float) -> Lease | Busy:
        sent = self._clock.monotonic()
        now = self._clock.wall()
        response, stored = self._call_item(
            "update_item", Key=self._pr_key(pr),
            UpdateExpression="SET #owner = :owner, #lexp = :lexp, #exp = :exp ADD #ltok :one",
            ConditionExpression="attribute_not_exists(#owner) OR #lexp < :now",
            ExpressionAttributeNames={"#owner": "lease_owner", "#lexp": "lease_expires", "#exp": "expires_at",
                                      "#ltok": "lease_token"},
            ExpressionAttributeValues={":owner": _s(owner), ":lexp": _n(now + seconds), ":now": _n(now),
                                       ":exp": _n(now + PR_TTL_SECONDS), ":one": {"N": "1"}},
            ReturnValues="ALL_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
        if response is None:
            return Busy(_str(stored, "lease_owner") or "?", max(0.0, _num(stored, "lease_expires") - now))
        item = response.get("Attributes", {})
        # The memo expires with the PR's last record, whether or not DynamoDB's TTL has deleted it yet.
        memo = self._memo(item) if _num(item, "memo_at") + PR_TTL_SECONDS > now else PrMemo()
        return Lease(pr.upstream_repo, pr.pr_number, owner, int(_num(item, "lease_token")), now + seconds,
                     sent + seconds, memo)

    def renew(self, lease: Lease, seconds: float) -> Lease:
        sent = self._clock.monotonic()
        now = self._clock.wall()
        done = self._call("update_item", Key=self._pr_key(lease.pr),
                          UpdateExpression="SET #owner = :owner, #lexp = :lexp",
                          ConditionExpression="#ltok = :tok",
                          ExpressionAttributeNames={"#owner": "lease_owner", "#lexp": "lease_expires",
                                                    "#ltok": "lease_token"},
                          ExpressionAttributeValues={":owner": _s(lease.owner), ":lexp": _n(now + seconds),
                                                     ":tok": {"N": str(lease.token)}})
        if done is None:
            raise LeaseLost(f"{lease.upstream_repo}#{lease.pr_number}: lease {lease.token} was taken over")
        return dataclasses.replace(lease, expires_at=now + seconds, deadline=sent + seconds)

    def record(self, lease: Lease, memo: PrMemo, *, release: bool = False) -> None:
        now = self._clock.wall()
        names = {"#ltok": "lease_token", "#exp": "expires_at", "#at": "memo_at"}
        values: dict[str, Any] = {":tok": {"N": str(lease.token)}, ":exp": _n(now + PR_TTL_SECONDS),
                                  ":at": _n(now)}
        sets, removes = ["#exp = :exp", "#at = :at"], []
        for index, (field, kind) in enumerate(_MEMO.items()):
            names[f"#m{index}"] = field
            value = getattr(memo, field)
            if value is None:
                removes.append(f"#m{index}")
            else:
                values[f":m{index}"] = {kind: str(value)}
                sets.append(f"#m{index} = :m{index}")
        if release:
            names.update({"#owner": "lease_owner", "#lexp": "lease_expires"})
            removes += ["#owner", "#lexp"]
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        done = self._call("update_item", Key=self._pr_key(lease.pr), UpdateExpression=expression,
                          ConditionExpression="#ltok = :tok", ExpressionAttributeNames=names,
                          ExpressionAttributeValues=values)
        if done is None:
            raise LeaseLost(f"{lease.upstream_repo}#{lease.pr_number}: lease {lease.token} was taken over")

    def release(self, lease: Lease) -> None:
        self._call("update_item", Key=self._pr_key(lease.pr), UpdateExpression="REMOVE #owner, #lexp",
                   ConditionExpression="#ltok = :tok",
                   ExpressionAttributeNames={"#owner": "lease_owner", "#lexp": "lease_expires",
                                             "#ltok": "lease_token"},
                   ExpressionAttributeValues={":tok": {"N": str(lease.token)}})

    @staticmethod
    def _pr_key(pr: PrRef) -> dict[str, Any]:
        return {"pk": _s(pr_pk(pr)), "sk": _s(PR_SK)}

    @staticmethod
    def _memo(item: dict[str, Any]) -> PrMemo:
        values: dict[str, Any] = {}
        for field, kind in _MEMO.items():
            found = item.get(field, {}).get(kind)
            values[field] = None if found is None else (int(found) if kind == "N" else str(found))
        return PrMemo(**values)

    # --- small shared records ----------------------------------------------------------------------
    def set_once(self, pr: PrRef, name: str, value: str = "", *, ttl_seconds: float = ONCE_TTL_SECONDS) -> bool:
        return self._put_new({"pk": _s(pr_pk(pr)), "sk": _s(f"once#{name}"), "value": _s(value)}, ttl_seconds)

    def get_once(self, pr: PrRef, name: str) -> str | None:
        response = self._call("get_item", Key={"pk": _s(pr_pk(pr)), "sk": _s(f"once#{name}")},
                              ConsistentRead=True) or {}
        item = response.get("Item")
        if not item or _num(item, "expires_at") <= self._clock.wall():
            return None
        return _str(item, "value")

    def first_delivery(self, delivery_id: str, *, ttl_seconds: float = DELIVERY_TTL_SECONDS) -> bool:
        return self._put_new({"pk": _s(f"delivery#{delivery_id}"), "sk": _s("-")}, ttl_seconds)

    def _put_new(self, item: dict[str, Any], ttl_seconds: float) -> bool:
        """Put ``item`` unless an unexpired one has its key: True when it was put."""
        now = self._clock.wall()
        return self._call("put_item", Item={**item, "expires_at": _n(now + ttl_seconds)},
                          ConditionExpression="attribute_not_exists(pk) OR #exp <= :now",
                          ExpressionAttributeNames={"#exp": "expires_at"},
                          ExpressionAttributeValues={":now": _n(now)}) is not None

    # --- pacing ------------------------------------------------------------------------------------
    def reserve_write(self, installation: int, interval: float) -> WriteTurn:
        """One conditional ``UpdateItem``, on the branch the last answer suggests (the next free turn it showed):
        *queued* (the next free turn is in the future: take it and move it on by ``interval``) or *idle* (it is
        past: take now). A wrong
        guess fails its condition and returns the item, and the other branch is tried: one request more, when
        the installation just turned busy or idle. Queued takers never conflict: DynamoDB applies each
        ``next_at + interval`` in turn, so every instance gets a distinct turn."""
        key = {"pk": _s(f"pace#{installation}"), "sk": _s("-")}
        names = {"#next": "next_at", "#exp": "expires_at"}
        for _ in range(_RESERVE_ATTEMPTS):
            now = self._clock.wall()
            values: dict[str, Any] = {":now": _n(now), ":exp": _n(now + PACE_TTL_SECONDS)}
            if self._next_at.get(installation, 0.0) > now:
                values[":interval"] = _n(interval)
                response, stored = self._call_item(
                    "update_item", Key=key, UpdateExpression="SET #next = #next + :interval, #exp = :exp",
                    ConditionExpression="#next > :now", ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values, ReturnValues="ALL_OLD",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD")
                if response is not None:
                    old = response.get("Attributes", {})
                    self._next_at[installation] = _num(old, "next_at") + interval
                    return WriteTurn(_num(old, "next_at"), _num(old, "blocked_until"))
            else:
                values[":next"] = _n(now + interval)
                response, stored = self._call_item(
                    "update_item", Key=key, UpdateExpression="SET #next = :next, #exp = :exp",
                    ConditionExpression="attribute_not_exists(#next) OR #next <= :now",
                    ExpressionAttributeNames=names, ExpressionAttributeValues=values, ReturnValues="ALL_OLD",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD")
                if response is not None:
                    self._next_at[installation] = now + interval
                    return WriteTurn(now, _num(response.get("Attributes", {}), "blocked_until"))
            self._next_at[installation] = _num(stored, "next_at")
        raise StoreError("DynamoDB: no write turn after several attempts (the pacing item kept changing)")

    def block_writes(self, installation: int, until: float) -> None:
        """One conditional ``UpdateItem``: the block's end becomes the next free turn, unless turns are queued
        past it already (then nothing changes: they all come after it anyway)."""
        self._call("update_item", Key={"pk": _s(f"pace#{installation}"), "sk": _s("-")},
                   UpdateExpression="SET #next = :until, #blocked = :until, #exp = :exp",
                   ConditionExpression="attribute_not_exists(#next) OR #next < :until",
                   ExpressionAttributeNames={"#next": "next_at", "#blocked": "blocked_until", "#exp": "expires_at"},
                   ExpressionAttributeValues={":until": _n(until), ":exp": _n(until + PACE_TTL_SECONDS)})
        self._next_at[installation] = max(self._next_at.get(installation, 0.0), until)
