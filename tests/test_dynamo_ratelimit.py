"""The rate limit shared by several instances through the state table (moto server mode): the limit holds
across instances, a slice costs one request, the next minute starts afresh, and a failing table admits."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest

from ingest.stores.dynamo_ratelimit import DynamoRateLimiter, slice_for

REPO = "acme-accel/torch-acme"


@pytest.fixture
def state_table(dynamodb_client: Any) -> str:
    from ingest.dynamo_schema import create_state_table

    name = f"oot-state-{uuid.uuid4().hex[:12]}"
    create_state_table(dynamodb_client, name)
    return name


async def test_three_instances_admit_exactly_the_limit_a_minute(dynamodb_client: Any, state_table: str) -> None:
    now = [60 * 1_000_000 + 5.0]
    instances = [DynamoRateLimiter(dynamodb_client, state_table, 60, clock=lambda: now[0]) for _ in range(3)]
    assert instances[0].slice_size == slice_for(60) == 3
    decisions = [await limiter.admit(REPO) for limiter in itertools.islice(itertools.cycle(instances), 100)]
    assert sum(d.allowed for d in decisions) == 60, "N instances must not allow N times the limit"
    refused = [d for d in decisions if not d.allowed]
    assert refused and all(d.retry_after_s == 55 for d in refused), "until the next minute"
    requests = sum(limiter.requests for limiter in instances)
    assert requests <= 60 // 3 + 2 * 3, f"one request per slice of 3, not per result ({requests})"
    assert (await instances[0].admit("other/repo")).allowed, "each repository has its own budget"
    now[0] += 60
    assert (await instances[1].admit(REPO)).allowed, "a new minute, a new budget"


async def test_the_tail_of_the_budget_is_handed_out_in_smaller_slices(dynamodb_client: Any, state_table: str) -> None:
    now = [120 * 1_000_000.0]
    a = DynamoRateLimiter(dynamodb_client, state_table, 10, slice_size=4, clock=lambda: now[0])
    b = DynamoRateLimiter(dynamodb_client, state_table, 10, slice_size=4, clock=lambda: now[0])
    assert all([(await a.admit(REPO)).allowed for _ in range(8)])  # two slices of 4
    assert [(await b.admit(REPO)).allowed for _ in range(3)] == [True, True, False], "the last 2, then none"


async def test_a_failing_table_admits_rather_than_refusing_everyone(dynamodb_client: Any) -> None:
    limiter = DynamoRateLimiter(dynamodb_client, f"missing-{uuid.uuid4().hex[:8]}", 5)
    assert (await limiter.admit(REPO)).allowed
