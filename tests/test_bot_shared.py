"""Several writers on one shared state (``MemoryBotState`` views, the respx GitHub fake): the lease keeps
one writer per PR, fencing stops a stalled one, a newer mark is rendered too, the render waits for the
announced row, a restart needs no paging, a dead holder's PR converges after its lease, and the guard's
arithmetic under clock skew; the pace of content-creating calls and GitHub's "slow down" shared by
instances (memory and DynamoDB). Real time with short leases (a second at most per test), or virtual time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bot.clock import FakeClock, RealClock
from bot.github import GitHubApi
from bot.leases import LeaseConfig, Leases
from bot.memory_state import MemoryBotState
from bot.render import Rendered
from bot.writer import Writer
from sql.bot_state import Lease, LeaseLost, Watermark
from sql.records import PrRef
from tests.github_fake import APP_ID, APP_SLUG, FAKE_API, INSTALLATION_ID, GitHubFake
from tests.test_bot_state import SkewedClock, state_table  # noqa: F401 (a fixture)
from tests.test_bot_writer import Board, make_writer, rendered

REPO = "pytorch/pytorch"
PR = PrRef(REPO, 1)
LEASE = LeaseConfig(seconds=0.6, write_bound=0.25, poll=0.03)


class Instance:
    """One "serve" instance's writer on the shared state, with its own poll loop."""

    def __init__(self, name: str, state: MemoryBotState, key: str, render: Callable[[str, int], Awaitable[Rendered]],
                 *, visible: Callable[[str, int, Watermark], Awaitable[bool]] | None = None,
                 debounce: float = 0.05) -> None:
        clock = RealClock()
        self.leases = Leases(state.view(clock), clock, LEASE, owner=name)
        api = GitHubApi(APP_ID, key, base_url=FAKE_API, clock=clock, deadline=0.2)

        async def installation(repo: str) -> int:
            return INSTALLATION_ID

        self.writer = Writer(render=render, github=api, installation_for=installation, app_slug=APP_SLUG,
                             debounce=debounce, pace=0.0, clock=clock, leases=self.leases,
                             watermark_visible=visible, watermark_wait=0.3)
        self.writer.bind_loop()
        self.poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await self.writer.poll_marks()
            await asyncio.sleep(LEASE.poll)

    async def stop(self) -> None:
        self.poller.cancel()
        await self.writer.close()


@pytest.fixture
async def cluster(app_private_key: str) -> AsyncIterator[Callable[..., Instance]]:
    state = MemoryBotState()
    made: list[Instance] = []

    def make(name: str, render: Callable[[str, int], Awaitable[Rendered]], **kwargs: object) -> Instance:
        instance = Instance(name, state, app_private_key, render, **kwargs)  # type: ignore[arg-type]
        made.append(instance)
        return instance

    make.state = state  # type: ignore[attr-defined]
    yield make
    for instance in made:
        await instance.stop()


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def settled(state: MemoryBotState, *instances: Instance) -> None:
    """No mark left and every writer idle."""
    await until(lambda: not state.pending() and not any(i.writer.busy for i in instances))


async def test_two_instances_marked_at_once_write_the_pr_once(cluster: Callable[..., Instance],
                                                              github_fake: GitHubFake) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    a, b = cluster("a", board.render), cluster("b", board.render)
    a.writer.mark_dirty(PR)
    b.writer.mark_dirty(PR)  # the same change announced by two instances (e.g. a webhook and a redelivery)
    await settled(cluster.state, a, b)  # type: ignore[attr-defined]
    assert len(github_fake.bot_comments(REPO, 1)) == 1 and len(github_fake.runs_for(REPO)) == 1
    assert sorted(w.kind for w in github_fake.writes()) == ["check.create", "comment.create"]
    assert board.renders == 1, "the second instance found the mark cleared and rendered nothing"


async def test_a_stalled_holder_is_fenced_out_and_never_writes_after_losing_the_lease(
        cluster: Callable[..., Instance], github_fake: GitHubFake) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("current")
    stall = asyncio.Event()
    stalled_at: list[float] = []

    async def slow_render(repo: str, number: int) -> Rendered:
        stalled_at.append(time.monotonic())
        await stall.wait()  # a GC pause, a stuck warehouse read: longer than the lease
        return rendered("stale")

    a = cluster("a", slow_render)
    a.writer.mark_dirty(PR)
    await until(lambda: bool(stalled_at))
    b = cluster("b", board.render)
    await until(lambda: len(github_fake.writes()) == 2)  # b took the PR over once a's lease expired
    took_over = time.monotonic()
    assert took_over - stalled_at[0] >= LEASE.seconds - 0.05
    stall.set()
    await settled(cluster.state, a, b)  # type: ignore[attr-defined]
    [comment] = github_fake.bot_comments(REPO, 1)
    assert comment["body"].endswith("## current"), "the stale render never reached GitHub"
    assert sorted(w.kind for w in github_fake.writes()) == ["check.create", "comment.create"]
    assert a.writer.slot(REPO, 1).lease is None and not a.writer.slot(REPO, 1).failed


async def test_a_change_announced_during_the_render_is_rendered_too(cluster: Callable[..., Instance],
                                                                    github_fake: GitHubFake) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("first")
    gate = asyncio.Event()
    state: MemoryBotState = cluster.state  # type: ignore[attr-defined]

    async def render(repo: str, number: int) -> Rendered:
        result = await board.render(repo, number)
        if board.renders == 1:
            board.state[(REPO, 1)] = rendered("second", status="in_progress", conclusion=None)
            state.announce(PR, watermark=Watermark("k", 2))  # the replicator, while this render runs
            gate.set()
        return result

    a = cluster("a", render)
    a.writer.mark_dirty(PR)
    await until(gate.is_set)
    await settled(state, a)
    assert board.renders == 2
    [comment] = github_fake.bot_comments(REPO, 1)
    assert comment["body"].endswith("## second")
    assert [w.kind for w in github_fake.writes()] == ["comment.create", "check.create", "comment.update",
                                                      "check.update"]


async def test_the_render_waits_until_the_warehouse_shows_the_announced_row(cluster: Callable[..., Instance],
                                                                           github_fake: GitHubFake) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("with the change")
    landed = asyncio.Event()
    asked: list[Watermark] = []

    async def visible(repo: str, number: int, watermark: Watermark) -> bool:
        asked.append(watermark)
        return landed.is_set()

    state: MemoryBotState = cluster.state  # type: ignore[attr-defined]
    a = cluster("a", board.render, visible=visible)
    state.announce(PR, watermark=Watermark("acme/k", 3))
    await until(lambda: len(asked) >= 2)
    assert board.renders == 0, "no render while a replica lags the insert"
    landed.set()
    await settled(state, a)
    assert board.renders == 1 and asked[-1] == Watermark("acme/k", 3)
    assert len(github_fake.bot_comments(REPO, 1)) == 1


async def test_a_row_that_never_shows_leaves_the_mark_for_a_retry(cluster: Callable[..., Instance]) -> None:
    async def never(repo: str, number: int, watermark: Watermark) -> bool:
        return False

    board = Board()
    board.state[(REPO, 1)] = rendered("x")
    state: MemoryBotState = cluster.state  # type: ignore[attr-defined]
    a = cluster("a", board.render, visible=never)
    state.announce(PR, watermark=Watermark("k", 9))
    await until(lambda: a.writer.slot(REPO, 1) is not None and a.writer.slot(REPO, 1).failed)
    assert board.renders == 0, "nothing rendered, so nothing sent"
    assert [m.token for m in state.pending()], "the mark stays: the sweep (or another instance) renders later"
    assert a.writer.slot(REPO, 1).lease is None, "the lease is given up for whoever retries"


async def test_a_restarted_instance_finds_the_comment_and_check_run_without_paging(
        cluster: Callable[..., Instance], github_fake: GitHubFake) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    a = cluster("a", board.render)
    a.writer.mark_dirty(PR)
    await settled(cluster.state, a)  # type: ignore[attr-defined]
    await a.stop()
    lists = len(github_fake.calls("comment.list", "check.find"))
    board.state[(REPO, 1)] = rendered("two")
    b = cluster("b", board.render)  # a new process: nothing in memory
    b.writer.mark_dirty(PR)
    await settled(cluster.state, b)  # type: ignore[attr-defined]
    assert len(github_fake.calls("comment.list", "check.find")) == lists, "ids came from the shared state"
    assert [w.kind for w in github_fake.writes()][-2:] == ["comment.update", "check.update"]
    b.writer.mark_dirty(PR)  # nothing changed: the recorded hashes say so
    await settled(cluster.state, b)  # type: ignore[attr-defined]
    assert len(github_fake.writes()) == 4


async def test_a_dead_holders_pr_converges_after_its_lease(cluster: Callable[..., Instance],
                                                           github_fake: GitHubFake) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("final")
    state: MemoryBotState = cluster.state  # type: ignore[attr-defined]
    dead = state.acquire(PR, "killed -9", LEASE.seconds)  # held, never released
    assert isinstance(dead, Lease)
    started = time.monotonic()
    state.announce(PR)
    b = cluster("b", board.render)
    await until(lambda: len(github_fake.writes()) == 2)
    converged = time.monotonic() - started
    assert LEASE.seconds - 0.05 <= converged, "never before the dead holder's lease expired"
    await settled(state, b)
    assert len(github_fake.bot_comments(REPO, 1)) == 1
    with pytest.raises(LeaseLost):
        state.record(dead, dead.memo)


async def test_a_refresh_request_resends_an_unchanged_check_run(cluster: Callable[..., Instance],
                                                                github_fake: GitHubFake) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    a, b = cluster("a", board.render), cluster("b", board.render)
    a.writer.mark_dirty(PR)
    await settled(cluster.state, a, b)  # type: ignore[attr-defined]
    b.writer.refresh(PR)  # a check_run.rerequested webhook reached b
    await settled(cluster.state, a, b)  # type: ignore[attr-defined]
    assert [w.kind for w in github_fake.writes()] == ["comment.create", "check.create", "check.update"]


async def test_the_write_guard_keeps_the_last_write_clear_of_a_skewed_takeover() -> None:
    """Lease 10 s, GitHub calls bounded at 3 s, skew bound 1 s: the holder starts no write with less than
    4 s left, so its last write ends by 9 s; an instance whose clock runs 1 s ahead takes over after 9 s."""
    base = FakeClock()
    state = MemoryBotState(SkewedClock(base))
    config = LeaseConfig(seconds=10.0, write_bound=3.0 + 1.0)
    holder = Leases(state.view(SkewedClock(base)), base, config, owner="holder")
    ahead = state.view(SkewedClock(base, offset=1.0))
    lease = await holder.claim(PR)
    assert isinstance(lease, Lease)
    base.advance(5.99)
    assert await holder.before_write(lease) is lease, "4.01 s left: write without renewing"
    last_write_ends = base.monotonic() + 3.0
    base.advance(8.99 - base.monotonic())
    assert base.monotonic() >= last_write_ends - 0.01 and not isinstance(ahead.acquire(PR, "ahead", 10.0), Lease)
    base.advance(0.02)
    assert base.monotonic() >= last_write_ends, "the takeover comes after the holder's last write ended"
    taken = ahead.acquire(PR, "ahead", 10.0)
    assert isinstance(taken, Lease)
    with pytest.raises(LeaseLost):
        await holder.before_write(lease)  # less than the bound left: it renews, and the renewal is refused


def test_a_lease_shorter_than_a_write_is_refused() -> None:
    with pytest.raises(ValueError, match="must outlast"):
        LeaseConfig(seconds=10.0, write_bound=12.0)


@pytest.mark.parametrize("store", ["memory", "dynamodb"])
async def test_a_slow_down_answered_to_one_instance_holds_back_the_others(
        store: str, request: pytest.FixtureRequest, github_fake: GitHubFake, app_private_key: str) -> None:
    """GitHub answers instance a's write with 403 retry-after 30: instance b, which has had no such answer,
    sends its next content-creating call no earlier than 30 s later, and keeps the pace after it."""
    clock = FakeClock()
    if store == "memory":
        shared = MemoryBotState(clock)
        states: list[Any] = [shared.view(clock), shared.view(clock)]
    else:
        from ingest.stores.dynamo_bot_state import DynamoBotState

        client, table = request.getfixturevalue("dynamodb_client"), request.getfixturevalue("state_table")
        states = [DynamoBotState(client, table, clock=clock) for _ in range(2)]
    board = Board()
    for number in (1, 2):
        board.state[(REPO, number)] = rendered(f"pr {number}", number=number)
    a, b = (make_writer(app_private_key, board, clock=clock, pace=1.0, pace_state=state, rate_limit_retries=0)
            for state in states)
    github_fake.fail("POST", r"/issues/1/comments$", 403, headers={"retry-after": "30"},
                     body={"message": "You have exceeded a secondary rate limit"})
    sent: list[tuple[str, float]] = []
    github_fake.on_request = lambda call: sent.append((call.kind, clock.wall()))
    start = clock.wall()
    a.mark_dirty(PR)
    await a.idle()
    assert a.failed_prs() == [PR], "a gave up on its PR for now (the sweep retries it)"
    b.mark_dirty(PrRef(REPO, 2))
    await b.idle()
    writes = [at - start for kind, at in sent if kind in ("comment.create", "check.create")]
    assert writes[0] < 1.0 and writes[1] >= 30.0 and writes[2] >= 31.0, sent
    assert [c["body"] for c in github_fake.bot_comments(REPO, 2)] == [rendered("pr 2", number=2).comment]
