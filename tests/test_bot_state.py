"""``BotState``'s contract, run against every implementation: marks, leases with fencing and expiry,
clock skew between instances, set-once records and delivery ids (expiries compared by the implementation,
never left to a TTL sweeper)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bot.clock import FakeClock
from bot.memory_state import MemoryBotState
from sql.bot_state import Announcement, BotState, Busy, Lease, LeaseLost, PrMemo, Watermark
from sql.records import PrRef

PR = PrRef("pytorch/pytorch", 170001)
OTHER = PrRef("pytorch/vision", 12)


class SkewedClock:
    """One instance's clocks: a shared virtual time, the wall clock off by ``offset`` seconds."""

    def __init__(self, base: FakeClock, offset: float = 0.0) -> None:
        self.base = base
        self.offset = offset

    def monotonic(self) -> float:
        return self.base.monotonic()

    def wall(self) -> float:
        return self.base.wall() + self.offset

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)


Instances = Callable[..., BotState]


@pytest.fixture
def time_base() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state_table(dynamodb_client: Any) -> str:
    """A fresh bot state table in the moto server."""
    from ingest.dynamo_schema import create_state_table

    name = f"oot-state-{uuid.uuid4().hex[:12]}"
    assert create_state_table(dynamodb_client, name)
    return name


@pytest.fixture(params=["memory", "dynamodb"])
def instance(request: pytest.FixtureRequest, time_base: FakeClock) -> Iterator[Instances]:
    """``instance(offset=0.0)``: a handle on one shared state, as an instance whose wall clock is off by
    ``offset`` seconds sees it (DynamoDB: moto's server, which never expires anything by itself)."""
    if request.param == "memory":
        shared = MemoryBotState(SkewedClock(time_base))

        def make(offset: float = 0.0) -> BotState:
            return shared.view(SkewedClock(time_base, offset))

        yield make
        return
    from ingest.stores.dynamo_bot_state import DynamoBotState

    client = request.getfixturevalue("dynamodb_client")
    table = request.getfixturevalue("state_table")

    def make_dynamo(offset: float = 0.0) -> BotState:
        return DynamoBotState(client, table, clock=SkewedClock(time_base, offset))

    yield make_dynamo


def lease(found: Lease | Busy) -> Lease:
    assert isinstance(found, Lease), found
    return found


def test_marks_are_cleared_only_by_the_token_that_was_rendered(instance: Instances) -> None:
    a, b = instance(), instance()
    first = a.announce(PR, watermark=Watermark("k1", 1))
    [mark] = b.pending()
    assert (mark.pr, mark.token, mark.watermark) == (PR, first, Watermark("k1", 1))
    second = a.announce(PR, watermark=Watermark("k2", 3))
    assert second != first
    newer = b.clear(mark)
    assert newer is not None, "an announcement came after the render: the mark must stay"
    assert (newer.token, newer.watermark) == (second, Watermark("k2", 3)) and b.pending() == [newer]
    assert b.mark_of(PR) == newer and b.mark_of(OTHER) is None
    assert b.clear(newer) is None and b.pending() == [] and b.mark_of(PR) is None
    assert b.clear(newer) is None, "already cleared: nothing newer to render"


def test_a_refresh_request_survives_later_announcements_until_cleared(instance: Instances) -> None:
    a = instance()
    a.announce(PR, refresh_check=True)
    a.announce(PR, watermark=Watermark("k", 2))
    [mark] = a.pending()
    assert mark.refresh_check and mark.watermark == Watermark("k", 2)
    assert a.clear(mark) is None
    a.announce(PR)
    assert [m.refresh_check for m in a.pending()] == [False]


def test_announce_all_skips_trunk_results(instance: Instances) -> None:
    a = instance()
    written = a.announce_all([Announcement(PR, Watermark("k", 1)), Announcement(PrRef("pytorch/pytorch", 0)),
                              Announcement(OTHER)])
    assert written == 2
    assert sorted((m.upstream_repo, m.pr_number) for m in a.pending()) == [("pytorch/pytorch", 170001),
                                                                            ("pytorch/vision", 12)]


def test_marks_expire_without_any_sweeper(instance: Instances, time_base: FakeClock) -> None:
    a = instance()
    a.announce(PR)
    time_base.advance(24 * 3600 + 1)
    assert a.pending() == []


def test_one_lease_at_a_time_and_a_new_token_after_expiry(instance: Instances, time_base: FakeClock) -> None:
    a, b = instance(), instance()
    held = lease(a.acquire(PR, "a", 10.0))
    busy = b.acquire(PR, "b", 10.0)
    assert isinstance(busy, Busy) and busy.owner == "a" and 9.0 <= busy.expires_in <= 10.0
    assert isinstance(b.acquire(PR, "b", 10.0), Busy)
    assert isinstance(b.acquire(OTHER, "b", 10.0), Lease), "leases are per PR"
    time_base.advance(10.5)
    taken = lease(b.acquire(PR, "b", 10.0))
    assert taken.token > held.token


def test_fencing_refuses_the_writer_whose_lease_was_taken_over(instance: Instances, time_base: FakeClock) -> None:
    a, b = instance(), instance()
    old = lease(a.acquire(PR, "a", 5.0))
    a.record(old, PrMemo(comment_id=1, comment_hash="h1"))
    time_base.advance(6.0)  # a stalls past its lease (a GC pause, a stuck call)
    new = lease(b.acquire(PR, "b", 5.0))
    assert new.memo == PrMemo(comment_id=1, comment_hash="h1")
    b.record(new, PrMemo(comment_id=1, comment_hash="h2"))
    with pytest.raises(LeaseLost):
        a.record(old, PrMemo(comment_id=99, comment_hash="stale"))
    with pytest.raises(LeaseLost):
        a.renew(old, 5.0)
    a.release(old)  # a no-op: it must not free b's lease
    assert isinstance(a.acquire(PR, "a", 5.0), Busy)
    b.record(new, PrMemo(comment_id=1, comment_hash="h3"), release=True)
    assert lease(a.acquire(PR, "a", 5.0)).memo.comment_hash == "h3"


def test_an_expired_but_untaken_lease_may_still_be_renewed_and_recorded(instance: Instances,
                                                                        time_base: FakeClock) -> None:
    """Fencing is by token, not by time: while nobody took the PR over, the holder is still the latest."""
    a = instance()
    held = lease(a.acquire(PR, "a", 5.0))
    time_base.advance(7.0)
    renewed = a.renew(held, 5.0)
    assert renewed.token == held.token and renewed.deadline == time_base.monotonic() + 5.0
    a.record(renewed, PrMemo(check_sha="s", check_run_id=7))
    a.release(renewed)
    assert lease(instance().acquire(PR, "b", 5.0)).memo.check_run_id == 7


def test_the_deadline_counts_from_before_the_request(instance: Instances, time_base: FakeClock) -> None:
    a = instance()
    start = time_base.monotonic()
    held = lease(a.acquire(PR, "a", 8.0))
    assert held.deadline == start + 8.0 and held.remaining(start + 3.0) == 5.0


@pytest.mark.parametrize("skew", [-2.0, 2.0])
def test_skewed_clocks_move_a_takeover_by_at_most_the_skew(instance: Instances, time_base: FakeClock,
                                                           skew: float) -> None:
    """Another instance takes an unreleased lease over when *its* wall clock passes the holder's expiry: an
    instance whose clock is ``skew`` s ahead does so ``skew`` s early (the writer's guard keeps the holder's
    writes clear of that), one behind does so late (a delay, never an overlap)."""
    holder, other = instance(), instance(offset=skew)
    held = lease(holder.acquire(PR, "holder", 10.0))
    time_base.advance(10.0 - skew - 0.1)
    assert isinstance(other.acquire(PR, "other", 10.0), Busy)
    time_base.advance(0.2)
    assert lease(other.acquire(PR, "other", 10.0)).token == held.token + 1


def test_an_expired_pr_item_counts_as_absent(instance: Instances, time_base: FakeClock) -> None:
    a = instance()
    held = lease(a.acquire(PR, "a", 5.0))
    a.record(held, PrMemo(comment_id=5), release=True)
    time_base.advance(91 * 24 * 3600)
    assert lease(a.acquire(PR, "a", 5.0)).memo == PrMemo()


def test_set_once_is_true_once_per_pr_and_name(instance: Instances, time_base: FakeClock) -> None:
    a, b = instance(), instance()
    assert a.set_once(PR, "notified:acme/accel:abc", "comment 55")
    assert not b.set_once(PR, "notified:acme/accel:abc", "comment 56")
    assert b.get_once(PR, "notified:acme/accel:abc") == "comment 55"
    assert b.set_once(PR, "notified:acme/accel:def")
    assert b.set_once(OTHER, "notified:acme/accel:abc")
    assert a.get_once(PR, "never") is None
    assert a.set_once(PR, "short", ttl_seconds=60)
    time_base.advance(61)
    assert a.get_once(PR, "short") is None and b.set_once(PR, "short", "again")


def test_delivery_ids_are_first_once_until_they_expire(instance: Instances, time_base: FakeClock) -> None:
    a, b = instance(), instance()
    assert a.first_delivery("d-1")
    assert not b.first_delivery("d-1"), "a redelivery to another instance is a duplicate"
    assert b.first_delivery("d-2")
    time_base.advance(24 * 3600 + 1)
    assert a.first_delivery("d-1")


def test_write_turns_are_an_interval_apart_across_instances(instance: Instances, time_base: FakeClock) -> None:
    a, b, c = instance(), instance(), instance()
    now = time_base.wall()
    turns = [state.reserve_write(7, 1.0).at - now for state in (a, b, c, a, b, c)]
    assert turns == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "one queue for the installation, whoever asks"
    assert b.reserve_write(8, 1.0).at == now, "installations are paced apart"
    time_base.advance(10.0)
    assert c.reserve_write(7, 1.0).at == time_base.wall(), "an idle installation gives a turn at once"
    assert a.reserve_write(7, 1.0).at == time_base.wall() + 1.0


def test_a_slow_down_holds_back_every_instance_until_the_named_time(instance: Instances,
                                                                      time_base: FakeClock) -> None:
    a, b = instance(), instance()
    now = time_base.wall()
    assert a.reserve_write(7, 1.0).at == now
    a.block_writes(7, now + 30.0)  # GitHub answered a's call: 403, retry-after 30
    turn = b.reserve_write(7, 1.0)
    assert (turn.at, turn.blocked_until) == (now + 30.0, now + 30.0), "b's next turn waits for the block"
    assert a.reserve_write(7, 1.0).at == now + 31.0
    b.block_writes(7, now + 10.0)  # a shorter block than the one in force changes nothing
    assert b.reserve_write(7, 1.0).at == now + 32.0
    assert a.reserve_write(8, 1.0).at == now, "other installations are not blocked"
    time_base.advance(40.0)
    assert b.reserve_write(7, 1.0).at == time_base.wall()


def test_a_write_turn_costs_one_request_but_when_the_queue_turns_busy_or_idle(
        dynamodb_client: Any, state_table: str, time_base: FakeClock) -> None:
    from ingest.stores.dynamo_bot_state import DynamoBotState

    calls: list[str] = []

    class Counting:
        def __getattr__(self, name: str) -> Any:
            calls.append(name)
            return getattr(dynamodb_client, name)

    a, b, c = (DynamoBotState(Counting(), state_table, clock=SkewedClock(time_base)) for _ in range(3))
    now = time_base.wall()
    assert [s.reserve_write(9, 1.0).at - now for s in (a, b, c) * 4] == [float(i) for i in range(12)]
    assert calls == ["update_item"] * 14, "one each, and one more for b's and c's first (wrong) guess of idle"
    time_base.advance(20.0)
    calls.clear()
    assert [s.reserve_write(9, 1.0).at - time_base.wall() for s in (a, b)] == [0.0, 1.0]
    assert len(calls) == 3, "after a quiet spell: a guessed idle (right), b guessed idle too (wrong: a's turn)"
    calls.clear()
    for _ in range(3):  # a turn every 2 s from one instance: idle each time, one request each
        time_base.advance(2.0)
        assert a.reserve_write(9, 1.0).at == time_base.wall()
    assert len(calls) == 3


def test_the_state_table_expires_items_and_has_no_stream(dynamodb_client: Any, state_table: str) -> None:
    from ingest.dynamo_schema import create_state_table

    assert not create_state_table(dynamodb_client, state_table), "idempotent"
    description = dynamodb_client.describe_table(TableName=state_table)["Table"]
    assert not description.get("StreamSpecification", {}).get("StreamEnabled")
    ttl = dynamodb_client.describe_time_to_live(TableName=state_table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_memory_dedupe_stays_bounded() -> None:
    state = MemoryBotState(FakeClock(), dedupe_size=3)
    assert all(state.first_delivery(f"d{i}") for i in range(5))
    assert state.first_delivery("d0"), "the oldest ids were forgotten"
    assert not state.first_delivery("d4")
