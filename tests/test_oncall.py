"""On-call notification (issue #14 §5): opt-in, mentions only the allowlist's on-calls, at most one new
comment per backend per PR head, even with two bot instances sharing their state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from bot.memory_state import MemoryBotState
from bot.pr_state import PrHead
from bot.render import warehouse_renderer
from bot.service import Bot
from policy.allowlist import parse_allowlist
from policy.pr_policy import PrPolicy
from renderers.markdown import COMMENT_MARKER
from renderers.oncall import ONCALL_MARKER
from sql.warehouse import Warehouse
from tests.github_fake import APP_ID, APP_SLUG, FAKE_API, GitHubFake
from tests.readpath_data import record, row

REPO = "pytorch/pytorch"
PR = 9
SHA1, SHA2 = "1" * 40, "2" * 40
PUBLIC = "https://hud.test"
ALLOWLIST = parse_allowlist("L4:\n  - acme/gate: [erin, pytorch/gate-team]\n  - acme/quiet\n"
                            "L3:\n  npu:\n    acme/npu: [nora]\nL2:\n  - acme/watch: [walt]\n")


def policy(notify: bool = True) -> PrPolicy:
    return PrPolicy(allowlist=ALLOWLIST, notify_oncalls=notify)


async def make_bot(warehouse: Warehouse, key: str, state: MemoryBotState, notify: bool = True) -> Bot:
    bot = Bot(warehouse=warehouse, app_id=APP_ID, private_key=key, api_url=FAKE_API, app_slug=APP_SLUG,
              debounce=0.0, pace=0.0, bot_state=state,
              render=warehouse_renderer(warehouse, silence_hours=6, public_url=PUBLIC,
                                        policy=lambda: policy(notify)))
    await bot.start()
    return bot


@pytest.fixture
async def bot(warehouse: Warehouse, github_fake: GitHubFake, app_private_key: str) -> AsyncIterator[Bot]:
    made = await make_bot(warehouse, app_private_key, MemoryBotState())
    try:
        yield made
    finally:
        await made.stop()


async def results(bot: Bot, warehouse: Warehouse, *records: Any, sha: str = SHA1) -> None:
    bot.state.record_head(PrHead(REPO, PR, sha, "open", "main", 777, datetime.now(UTC)))
    warehouse.insert_job_rows([row(r) for r in records])
    for r in records:
        bot.on_results(r.pr)
    await bot.drain()


def fail(backend: str, level: str, job: str, sha: str = SHA1) -> Any:
    return record(backend=backend, level=level, pr=PR, sha=sha, job=job, conclusion="failure")


def oncall_comments(github_fake: GitHubFake) -> list[str]:
    return [c["body"] for c in github_fake.bot_comments(REPO, PR) if c["body"].startswith(ONCALL_MARKER)]


async def test_one_comment_per_backend_and_head_mentioning_only_allowlisted_oncalls(
        bot: Bot, warehouse: Warehouse, github_fake: GitHubFake) -> None:
    hostile = "test @mallory [x](https://evil.example)"
    await results(bot, warehouse, fail("acme/gate", "L4", hostile), fail("acme/npu", "L3", "npu-test"),
                  fail("acme/watch", "L2", "w"), fail("acme/quiet", "L4", "q"),
                  record(backend="acme/gate", level="L4", pr=PR, sha=SHA1, job="build"))
    [body] = oncall_comments(github_fake)
    assert body.splitlines()[1] == "@erin @nora @pytorch/gate-team: a backend you are on call for fails on this PR."
    assert "- **acme/gate** (L4) at `1111111`: ci / test &#64;&#8203;mallory" in body
    assert "(@erin @pytorch/gate-team)" in body
    assert "- **acme/npu** (L3) at `1111111`: ci / npu-test (@nora)" in body
    assert "@mallory" not in body and "@walt" not in body, "no downstream text or L2 on-call mentioned"
    assert "https://evil.example" not in body and "acme/quiet" not in body, "no on-calls listed: no notice"
    [sticky] = [c for c in github_fake.bot_comments(REPO, PR) if c["body"].startswith(COMMENT_MARKER)]
    assert "@erin" not in sticky["body"], "the sticky comment never mentions"

    await results(bot, warehouse, fail("acme/gate", "L4", "another"), fail("acme/npu", "L3", "npu-more"))
    assert len(oncall_comments(github_fake)) == 1, "same head, same backends: nothing new"

    await results(bot, warehouse, fail("acme/gate", "L4", "test", sha=SHA2), sha=SHA2)
    comments = oncall_comments(github_fake)
    assert len(comments) == 2 and "`2222222`" in comments[1] and "@nora" not in comments[1]


async def test_off_by_default_and_without_an_allowlist(warehouse: Warehouse, github_fake: GitHubFake,
                                                       app_private_key: str) -> None:
    quiet = await make_bot(warehouse, app_private_key, MemoryBotState(), notify=False)
    try:
        await results(quiet, warehouse, fail("acme/gate", "L4", "test"))
        assert github_fake.bot_comments(REPO, PR) and oncall_comments(github_fake) == []
    finally:
        await quiet.stop()
    assert PrPolicy().notify_oncalls is False


def test_a_canary_pages_nobody() -> None:
    from policy.gate import GateConfig
    from renderers.oncall import oncall_notices
    from renderers.pr_view import build_pr_view
    from tests.test_markdown import NOW
    from tests.test_markdown import row as view_row

    rows = [view_row("acme/gate", job="test", conclusion="failure"), view_row("acme/npu", "L3", conclusion="failure")]

    def notified(canaries: frozenset[str]) -> list[str]:
        rules = PrPolicy(allowlist=ALLOWLIST, notify_oncalls=True, gate=GateConfig(canaries=canaries))
        view = build_pr_view(rows, now=NOW, silence_hours=6, public_url=PUBLIC, upstream_repo=REPO, pr_number=PR,
                             policy=rules)
        return [notice.repo for notice in oncall_notices(view)]

    assert notified(frozenset()) == ["acme/gate", "acme/npu"]
    assert notified(frozenset({"acme/gate"})) == ["acme/npu"], "a canary fails by design"


async def test_two_instances_sharing_state_notify_once(warehouse: Warehouse, github_fake: GitHubFake,
                                                       app_private_key: str) -> None:
    shared = MemoryBotState()
    first = await make_bot(warehouse, app_private_key, shared)
    second = await make_bot(warehouse, app_private_key, shared.view(first.clock))
    try:
        await results(first, warehouse, fail("acme/gate", "L4", "test"))
        await results(second, warehouse, fail("acme/gate", "L4", "test-2"))
        assert len(oncall_comments(github_fake)) == 1
    finally:
        await first.stop()
        await second.stop()


async def test_a_claimed_notice_that_github_refuses_is_not_retried(
        bot: Bot, warehouse: Warehouse, github_fake: GitHubFake) -> None:
    await results(bot, warehouse, record(backend="acme/gate", level="L4", pr=PR, sha=SHA1, job="build"))
    assert len(github_fake.bot_comments(REPO, PR)) == 1, "the sticky comment exists: later POSTs are notices"
    github_fake.fail("POST", r"/issues/\d+/comments$", 403)
    await results(bot, warehouse, fail("acme/gate", "L4", "test"))
    refused = [r for r in github_fake.calls("comment.create") if r.status == 403]
    assert len(refused) == 1 and refused[0].json["body"].startswith(ONCALL_MARKER)
    await results(bot, warehouse, fail("acme/gate", "L4", "test-2"))
    assert oncall_comments(github_fake) == [], "at most once: a lost notice is not sent again"
    assert len(github_fake.calls("comment.create")) == 2
