"""Fault drill: GitHub is down for ten minutes (every call a 502, the token exchange too) while results keep
changing twelve PRs, then comes back. On the bot's injectable clock (``bot/clock.py``), with the sweep every
60 s as in production: after GitHub returns, every PR that became dirty meanwhile is written once, with its
final state — one sticky comment and one check run each, never an intermediate state, nothing lost, nothing
doubled."""

from __future__ import annotations

from bot.clock import FakeClock
from renderers.markdown import COMMENT_MARKER
from sql.records import PrRef
from tests.github_fake import GitHubFake
from tests.test_bot_writer import REPO, SHA_A, Board, make_writer, rendered

PRS = range(1, 13)
OUTAGE_S = 600
SWEEP_S = 60


async def test_github_down_ten_minutes_then_every_dirty_pr_is_written_once_with_its_final_state(
        github_fake: GitHubFake, app_private_key: str) -> None:
    clock = FakeClock()
    board = Board()
    writer = make_writer(app_private_key, board, clock=clock)
    for method in ("GET", "POST", "PATCH"):
        github_fake.fail(method, r".*", 502, times=10**6)

    # Ten minutes of outage: results change every PR several times; the sweep retries each minute.
    for minute in range(OUTAGE_S // SWEEP_S):
        for number in PRS:
            if (number + minute) % 3 == 0:
                board.state[(REPO, number)] = rendered(f"pr {number} state {minute}", number=number)
                writer.mark_dirty(PrRef(REPO, number, SHA_A))
        await writer.idle()
        clock.advance(SWEEP_S)
        await writer.sweep_once()
        await writer.idle()
    assert github_fake.writes() == [], "nothing got through while GitHub was down"
    final = {number: board.state[(REPO, number)] for number in PRS}
    assert set(final) == set(PRS), "every PR became dirty during the outage"
    assert set(writer.failed_prs()) == {PrRef(REPO, number) for number in PRS}

    github_fake._faults.clear()  # GitHub is back
    clock.advance(SWEEP_S)
    await writer.sweep_once()
    await writer.idle()

    for number in PRS:
        comments = github_fake.bot_comments(REPO, number)
        assert [c["body"] for c in comments] == [final[number].comment], number
        assert comments[0]["body"].startswith(COMMENT_MARKER)
        runs = [run for run in github_fake.runs_for(REPO) if run.get("external_id") == f"{REPO}#{number}"]
        assert len(runs) == 1 and runs[0]["output"]["summary"] == final[number].check.summary, number
    comment_writes = [r for r in github_fake.writes() if r.kind == "comment.create"]
    assert len(comment_writes) == len(PRS), "each PR written once"
    assert len([r for r in github_fake.writes() if r.kind.startswith("check.")]) == len(PRS)
    assert writer.failed_prs() == []
