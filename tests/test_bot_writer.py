"""The per-PR writer against the respx GitHub fake: sticky comment, check run, pacing and resilience."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx

from bot.clock import FakeClock, RealClock
from bot.github import GitHubApi
from bot.render import Rendered
from bot.writer import Writer
from renderers.markdown import CHECK_RUN_NAME, COMMENT_MARKER, CheckRunOutput
from sql.records import PrRef
from tests.github_fake import APP_ID, APP_SLUG, FAKE_API, INSTALLATION_ID, GitHubFake

REPO = "pytorch/pytorch"
SHA_A = "a" * 40
SHA_B = "b" * 40


def rendered(text: str, *, sha: str = SHA_A, status: str = "completed", conclusion: str | None = "success",
             short: str | None = None, has_results: bool = True, number: int = 1) -> Rendered:
    check = CheckRunOutput(name=CHECK_RUN_NAME, head_sha=sha, status=status, conclusion=conclusion,
                           title=f"title {text}", summary=f"summary {text}", text=f"text {text}",
                           details_url="https://hud.test/oot/pr/pytorch/pytorch/1", external_id=f"{REPO}#{number}")
    return Rendered(comment=f"{COMMENT_MARKER}\n## {text}", short_comment=short or f"{COMMENT_MARKER}\nshort",
                    check=check, check_has_results=has_results)


class Board:
    """What each PR should show (the decision is tested elsewhere; here it is given)."""

    def __init__(self) -> None:
        self.state: dict[tuple[str, int], Rendered] = {}
        self.renders = 0

    async def render(self, repo: str, number: int) -> Rendered:
        self.renders += 1
        return self.state.get((repo, number), Rendered(None, None, None, False))


def make_writer(key: str, board: Board, *, clock: Any = None, debounce: float = 0.0, pace: float = 0.0,
                slug: str | None = APP_SLUG, base_url: str = FAKE_API, **options: Any) -> Writer:
    clock = clock or FakeClock()
    api = GitHubApi(APP_ID, key, base_url=base_url, clock=clock)

    async def installation(repo: str) -> int:
        return INSTALLATION_ID

    return Writer(render=board.render, github=api, installation_for=installation, app_slug=slug,
                  debounce=debounce, pace=pace, clock=clock, **options)


async def settle(writer: Writer, *prs: int, repo: str = REPO) -> None:
    for number in prs:
        writer.mark_dirty(PrRef(repo, number, SHA_A))
    await writer.idle()


async def test_first_result_creates_one_comment_and_one_check_run(github_fake: GitHubFake,
                                                                  app_private_key: str) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    writer = make_writer(app_private_key, board)
    await settle(writer, 1)
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\n## one"]
    runs = github_fake.runs_for(REPO)
    assert len(runs) == 1
    run = runs[0]
    assert (run["head_sha"], run["name"], run["status"], run["conclusion"]) == (SHA_A, CHECK_RUN_NAME,
                                                                                "completed", "success")
    assert run["details_url"] == "https://hud.test/oot/pr/pytorch/pytorch/1"
    assert run["external_id"] == f"{REPO}#1"
    assert [w.kind for w in github_fake.writes()] == ["comment.create", "check.create"]
    # Authenticated as the installation, with one token for the whole cycle.
    assert github_fake.tokens_issued == 1


async def test_more_results_edit_in_place_and_unchanged_makes_no_call(github_fake: GitHubFake,
                                                                     app_private_key: str) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one", status="in_progress", conclusion=None)
    writer = make_writer(app_private_key, board)
    await settle(writer, 1)
    board.state[(REPO, 1)] = rendered("two")
    await settle(writer, 1)
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\n## two"]
    [run] = github_fake.runs_for(REPO)
    assert (run["status"], run["conclusion"], run["output"]["summary"]) == ("completed", "success", "summary two")
    assert [w.kind for w in github_fake.writes()] == ["comment.create", "check.create",
                                                      "comment.update", "check.update"]
    in_progress_create = github_fake.calls("check.create")[0].json
    assert "conclusion" not in in_progress_create and in_progress_create["status"] == "in_progress"

    before = len(github_fake.requests)
    await settle(writer, 1)
    assert board.renders == 3
    assert len(github_fake.requests) == before, "an unchanged body must not call GitHub at all"


async def test_new_head_sha_gets_its_own_check_run(github_fake: GitHubFake, app_private_key: str) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one", conclusion="failure")
    writer = make_writer(app_private_key, board)
    await settle(writer, 1)
    # synchronize: new head, no result for it yet -> the comment changes, no check run on B yet
    board.state[(REPO, 1)] = rendered("pushed", sha=SHA_B, status="in_progress", conclusion=None, has_results=False)
    await settle(writer, 1)
    assert github_fake.runs_for(REPO, SHA_B) == []
    # first result for B -> its own check run; A's stays as it was
    board.state[(REPO, 1)] = rendered("b-running", sha=SHA_B, status="in_progress", conclusion=None)
    await settle(writer, 1)
    [run_a] = github_fake.runs_for(REPO, SHA_A)
    [run_b] = github_fake.runs_for(REPO, SHA_B)
    assert run_a["conclusion"] == "failure" and run_a["output"]["summary"] == "summary one"
    assert run_b["status"] == "in_progress"
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\n## b-running"]


async def test_burst_and_synchronize_make_one_comment_within_budget(github_fake: GitHubFake,
                                                                    app_private_key: str) -> None:
    board = Board()
    writer = make_writer(app_private_key, board, clock=RealClock(), debounce=0.15, pace=0.0)
    rng = random.Random(5)

    async def result(i: int) -> None:
        await asyncio.sleep(rng.uniform(0, 0.08))
        board.state[(REPO, 7)] = rendered(f"result {i}", sha=SHA_A if i < 15 else SHA_B)
        writer.mark_dirty(PrRef(REPO, 7, SHA_A))

    async def synchronize() -> None:
        await asyncio.sleep(0.04)
        writer.mark_dirty(PrRef(REPO, 7, SHA_B))

    await asyncio.gather(*(result(i) for i in range(30)), synchronize())
    await writer.idle()
    comments = github_fake.bot_comments(REPO, 7)
    assert len(comments) == 1
    assert comments[0]["body"] == board.state[(REPO, 7)].comment
    kinds = [w.kind for w in github_fake.writes()]
    # The burst fits in one debounce window: one comment write and one check-run write.
    assert kinds.count("comment.create") + kinds.count("comment.update") <= 2
    assert kinds.count("check.create") + kinds.count("check.update") <= 2
    assert len(kinds) <= 4 and "comment.delete" not in kinds
    assert board.renders <= 2


async def test_other_peoples_marker_comments_are_never_edited(github_fake: GitHubFake,
                                                              app_private_key: str) -> None:
    human = github_fake.add_comment(REPO, 1, f"quoting the bot: {COMMENT_MARKER} hi")
    other_app = github_fake.add_comment(REPO, 1, f"{COMMENT_MARKER}\nnot yours", login="other[bot]", app_id=99)
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    writer = make_writer(app_private_key, board)
    await settle(writer, 1)
    board.state[(REPO, 1)] = rendered("two")
    await settle(writer, 1)
    assert github_fake.comments[human["id"]]["body"] == f"quoting the bot: {COMMENT_MARKER} hi"
    assert github_fake.comments[other_app["id"]]["body"] == f"{COMMENT_MARKER}\nnot yours"
    touched = {r.path for r in github_fake.calls("comment.update", "comment.delete")}
    assert not any(str(c["id"]) in path for c in (human, other_app) for path in touched)
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\n## two"]


async def test_deleted_comment_is_recreated(github_fake: GitHubFake, app_private_key: str) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    writer = make_writer(app_private_key, board)
    await settle(writer, 1)
    [first] = github_fake.bot_comments(REPO, 1)
    del github_fake.comments[first["id"]]  # a human deleted it
    board.state[(REPO, 1)] = rendered("two")
    await settle(writer, 1)
    [again] = github_fake.bot_comments(REPO, 1)
    assert again["id"] != first["id"] and again["body"] == f"{COMMENT_MARKER}\n## two"
    assert [c.status for c in github_fake.calls("comment.update")] == [404]


async def test_sticky_comment_found_across_pages_after_restart(github_fake: GitHubFake,
                                                               app_private_key: str) -> None:
    for i in range(230):
        github_fake.add_comment(REPO, 1, f"comment {i}")
    ours = github_fake.add_comment(REPO, 1, f"{COMMENT_MARKER}\n## old", login=f"{APP_SLUG}[bot]", app_id=APP_ID)
    for i in range(20):
        github_fake.add_comment(REPO, 1, f"later {i}")
    board = Board()
    board.state[(REPO, 1)] = rendered("new")
    writer = make_writer(app_private_key, board)  # a fresh writer: nothing cached
    await settle(writer, 1)
    assert github_fake.comments[ours["id"]]["body"] == f"{COMMENT_MARKER}\n## new"
    assert len(github_fake.bot_comments(REPO, 1)) == 1
    pages = [r.query.get("page", ["1"])[0] for r in github_fake.calls("comment.list")]
    assert pages == ["1", "2", "3"]
    assert not github_fake.calls("comment.create")


async def test_slug_unknown_is_asked_from_github(github_fake: GitHubFake, app_private_key: str) -> None:
    github_fake.add_comment(REPO, 1, f"{COMMENT_MARKER}\n## old", login=f"{APP_SLUG}[bot]")
    board = Board()
    board.state[(REPO, 1)] = rendered("new")
    writer = make_writer(app_private_key, board, slug=None)
    await settle(writer, 1)
    assert len(github_fake.calls("app")) == 1
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\n## new"]


async def test_duplicate_from_a_racing_writer_is_cleaned_up(github_fake: GitHubFake, app_private_key: str) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("mine")
    competitor: dict[str, Any] = {}

    def race(recorded: Any) -> None:
        if recorded.kind == "comment.create" and not competitor:
            # Another writer created its comment just before ours landed.
            competitor.update(github_fake.add_comment(REPO, 1, f"{COMMENT_MARKER}\n## theirs",
                                                      login=f"{APP_SLUG}[bot]", app_id=APP_ID))

    github_fake.on_request = race
    writer = make_writer(app_private_key, board)
    await settle(writer, 1)
    [kept] = github_fake.bot_comments(REPO, 1)
    assert kept["id"] == competitor["id"], "the oldest comment is kept"
    assert kept["body"] == f"{COMMENT_MARKER}\n## mine"
    assert len(github_fake.calls("comment.delete")) == 1


@pytest.mark.parametrize(("fault", "expected_wait"), [
    ({"status": 403, "headers": {"retry-after": "30"}, "body": {"message": "secondary rate limit"}}, 30.0),
    ({"status": 429, "headers": {}}, 60.0),
    ({"status": 403, "headers": {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "RESET"}}, 120.0),
    ({"status": 502, "headers": {}}, 2.0),
    ({"timeout": True}, 2.0),
], ids=["403-retry-after", "429-backoff", "403-ratelimit-reset", "502", "timeout"])
async def test_github_slowdowns_and_errors_are_retried_without_losing_the_update(
        github_fake: GitHubFake, app_private_key: str, fault: dict[str, Any], expected_wait: float) -> None:
    clock = FakeClock()
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    writer = make_writer(app_private_key, board, clock=clock)
    await settle(writer, 1)
    board.state[(REPO, 1)] = rendered("two")
    if fault.get("timeout"):
        github_fake.raise_on("PATCH", r"/issues/comments/\d+$", httpx.ReadTimeout)
    else:
        headers = {k: (str(int(clock.wall()) + 120) if v == "RESET" else v) for k, v in fault["headers"].items()}
        github_fake.fail("PATCH", r"/issues/comments/\d+$", fault["status"], headers=headers, body=fault.get("body"))
    clock.sleeps.clear()
    await settle(writer, 1)
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\n## two"]
    assert github_fake.runs_for(REPO)[0]["output"]["summary"] == "summary two"
    assert writer.failed_prs() == []
    assert any(abs(s - expected_wait) < 1.0 for s in clock.sleeps), clock.sleeps
    updates = github_fake.calls("comment.update")
    assert len(updates) == 2 and updates[-1].status == 200


async def test_sweep_recovers_a_pr_whose_write_failed(github_fake: GitHubFake, app_private_key: str) -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    board.state[(REPO, 2)] = rendered("other pr")
    writer = make_writer(app_private_key, board)
    github_fake.fail("POST", r"/issues/1/comments$", 503, times=10)
    await settle(writer, 1, 2)
    assert writer.failed_prs() == [PrRef(REPO, 1)]
    assert github_fake.bot_comments(REPO, 1) == []
    assert len(github_fake.bot_comments(REPO, 2)) == 1, "a failing PR does not block another"
    github_fake._faults.clear()
    assert await writer.sweep_once() == 1
    await writer.idle()
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\n## one"]
    assert writer.failed_prs() == []


async def test_body_refused_as_too_long_falls_back_to_the_short_one(github_fake: GitHubFake,
                                                                    app_private_key: str) -> None:
    board = Board()
    huge = rendered("x" * 70_000, short=f"{COMMENT_MARKER}\nshort fallback")
    board.state[(REPO, 1)] = huge
    writer = make_writer(app_private_key, board)
    await settle(writer, 1)
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\nshort fallback"]
    before = len(github_fake.writes())
    await settle(writer, 1)
    assert len(github_fake.writes()) == before, "the same oversized render does not retry the long body"


async def test_pacing_spaces_content_writes_per_installation(github_fake: GitHubFake, app_private_key: str) -> None:
    clock = FakeClock()
    board = Board()
    for number in (1, 2, 3):
        board.state[(REPO, number)] = rendered(f"pr {number}", number=number)
    writer = make_writer(app_private_key, board, clock=clock, pace=1.0)
    pacer = writer.pacer(INSTALLATION_ID)
    grant = pacer.slot
    granted: list[float] = []

    async def recording_slot() -> None:
        await grant()
        granted.append(clock.monotonic())

    pacer.slot = recording_slot  # type: ignore[method-assign]
    await settle(writer, 1, 2, 3)
    assert len(granted) == 6 == len(github_fake.writes())
    gaps = [b - a for a, b in itertools.pairwise(granted)]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps), gaps
    assert github_fake.tokens_issued == 1, "the installation token is cached across calls"


async def test_no_results_means_no_comment(github_fake: GitHubFake, app_private_key: str) -> None:
    board = Board()
    board.state[(REPO, 2)] = rendered("has results")
    writer = make_writer(app_private_key, board)
    await settle(writer, 1, 2)  # PR 1 has no OOT results
    assert github_fake.pr_comments(REPO, 1) == []
    assert not any("/issues/1/" in r.path for r in github_fake.requests)
    assert writer.slot(REPO, 1) is not None and writer.slot(REPO, 1).last_rendered.comment is None


async def test_trunk_results_are_not_a_pr(app_private_key: str) -> None:
    board = Board()
    writer = make_writer(app_private_key, board)
    writer.mark_dirty(PrRef(REPO, 0, SHA_A))
    await writer.idle()
    assert board.renders == 0 and writer.slot(REPO, 0) is None


async def test_dry_run_sends_nothing() -> None:
    board = Board()
    board.state[(REPO, 1)] = rendered("one")

    async def installation(repo: str) -> int:
        raise AssertionError("dry-run must not look up installations")

    writer = Writer(render=board.render, github=None, installation_for=installation, debounce=0.0,
                    clock=FakeClock())
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        await settle(writer, 1)
        assert router.calls.call_count == 0
    slot = writer.slot(REPO, 1)
    assert writer.dry_run and slot is not None and slot.cycles == 1
    assert board.renders == 0 and slot.last_rendered is None  # the PR page renders on demand instead


async def test_enterprise_server_base_url_is_honoured(app_private_key: str) -> None:
    ghes = "https://ghe.test/api/v3"
    fake = GitHubFake(ghes)
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    with respx.mock(assert_all_called=True, assert_all_mocked=True) as router:
        fake.install(router)
        writer = make_writer(app_private_key, board, base_url=ghes)
        await settle(writer, 1)
    assert len(fake.bot_comments(REPO, 1)) == 1
    assert all(r.path.startswith("/") for r in fake.requests) and fake.tokens_issued == 1


async def test_installation_token_is_refreshed_when_it_expires(github_fake: GitHubFake,
                                                               app_private_key: str) -> None:
    # githubkit keeps a token until a minute before it expires: this one is kept for ~1 s.
    github_fake.token_ttl = timedelta(seconds=62)
    board = Board()
    board.state[(REPO, 1)] = rendered("one")
    writer = make_writer(app_private_key, board)
    await settle(writer, 1)
    assert github_fake.tokens_issued == 1
    await asyncio.sleep(2.1)
    board.state[(REPO, 1)] = rendered("two")
    await settle(writer, 1)
    assert github_fake.tokens_issued == 2
    assert [c["body"] for c in github_fake.bot_comments(REPO, 1)] == [f"{COMMENT_MARKER}\n## two"]


def test_every_call_has_a_timeout_and_no_hidden_retry(app_private_key: str) -> None:
    api = GitHubApi(APP_ID, app_private_key, base_url="https://ghe.test/api/v3")
    config = api._client(INSTALLATION_ID).config
    assert config.timeout.read and config.timeout.connect and config.timeout.pool
    assert config.auto_retry is None and config.http_cache is False
    assert str(config.base_url) == "https://ghe.test/api/v3/"
