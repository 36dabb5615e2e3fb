"""The per-downstream-repository rate limit counted across instances, in the bot's DynamoDB state table.

One counter item per repository and calendar minute (pk ``rate#<repo>``, sk ``<minute>``, ``used``), moved
by a conditional ``ADD`` that never lets it pass the limit. An instance does not ask per result: it
reserves a slice of the minute's budget (``slice_size`` results, 30 of 600 by default) and spends it
locally, so the table sees one request per slice, not per result. The limit is never exceeded across
instances; the price is that up to (instances x (slice - 1)) of a minute's budget can sit unspent in
other instances' slices when a repository reaches its limit. The window is the calendar minute (the
embedded limiter's is a sliding one-minute bucket), so a burst may straddle two minutes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ingest.ratelimit import Decision

log = logging.getLogger("ingest.ratelimit")

_CONDITIONAL_FAILED = "ConditionalCheckFailedException"
COUNTER_TTL_SECONDS = 120  # a minute's counter is never written after its minute; TTL only bounds the table
SPENT = -1  # local marker: this repository's budget for the minute is gone everywhere
PRUNE_AT = 10_000  # local slices remembered before the past minutes' are dropped


def slice_for(per_minute: int) -> int:
    """Results reserved per request: a twentieth of the limit, between 1 and 50."""
    return max(1, min(50, per_minute // 20))


class DynamoRateLimiter:
    """``Limiter`` shared by every instance through the state table."""

    def __init__(self, client: Any, table_name: str, per_minute: int, *, slice_size: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self._client = client
        self.table_name = table_name
        self.per_minute = per_minute
        self.slice_size = min(slice_size or slice_for(per_minute), per_minute)
        self._clock = clock
        self._left: dict[str, tuple[int, int]] = {}  # repo -> (minute, results left in this instance's slice)
        self._refill = asyncio.Lock()
        self.requests = 0  # DynamoDB requests made (tests, benchmark)

    async def admit(self, key: str) -> Decision:
        now = self._clock()
        minute = int(now // 60)
        if self._take(key, minute):
            return Decision(True)
        if self._left.get(key) == (minute, SPENT):  # the table said so: no request until the next minute
            return self._refuse(minute, now)
        async with self._refill:
            if self._take(key, minute):  # another request refilled meanwhile
                return Decision(True)
            try:
                granted = await asyncio.to_thread(self._reserve, key, minute)
            except Exception as exc:  # the limit protects; a DynamoDB hiccup must not refuse every result
                log.warning("rate limit unavailable, admitting: %s", type(exc).__name__)
                return Decision(True)
            if len(self._left) >= PRUNE_AT:
                self._left = {k: v for k, v in self._left.items() if v[0] == minute}
            self._left[key] = (minute, granted or SPENT)
            if self._take(key, minute):
                return Decision(True)
        return self._refuse(minute, now)

    @staticmethod
    def _refuse(minute: int, now: float) -> Decision:
        return Decision(False, max(1, math.ceil((minute + 1) * 60 - now)))

    def _take(self, key: str, minute: int) -> bool:
        found = self._left.get(key)
        if found is None or found[0] != minute or found[1] <= 0:
            return False
        self._left[key] = (minute, found[1] - 1)
        return True

    def _reserve(self, key: str, minute: int) -> int:
        """Reserve up to a slice of ``key``'s budget for ``minute``; what is left when less remains."""
        from botocore.exceptions import ClientError

        want = self.slice_size
        while want > 0:
            self.requests += 1
            try:
                self._client.update_item(
                    TableName=self.table_name, Key={"pk": {"S": f"rate#{key}"}, "sk": {"S": str(minute)}},
                    UpdateExpression="ADD #used :want SET #exp = :exp",
                    ConditionExpression="attribute_not_exists(#used) OR #used <= :cap",
                    ExpressionAttributeNames={"#used": "used", "#exp": "expires_at"},
                    ExpressionAttributeValues={":want": {"N": str(want)}, ":cap": {"N": str(self.per_minute - want)},
                                               ":exp": {"N": str(Decimal((minute + 1) * 60 + COUNTER_TTL_SECONDS))}},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD")
                return want
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != _CONDITIONAL_FAILED:
                    raise
                used = int(exc.response.get("Item", {}).get("used", {}).get("N", self.per_minute))
                remaining = self.per_minute - used
                if remaining >= want or remaining <= 0:
                    return 0
                want = remaining  # the tail of the budget: take what is left
        return 0
