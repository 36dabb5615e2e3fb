"""The merge gate (``policy.gate``): one test per row of its table (README "Blocking rules"), then the
same rules through the PR view and the check run, and the re-render when a pending backend times out."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from bot.render import Rendered, warehouse_renderer
from bot.service import Bot
from policy.allowlist import parse_allowlist
from policy.gate import (
    LEVELS_FROM_ALLOWLIST,
    LEVELS_FROM_RELAY,
    LEVELS_FROM_RELAY_ALLOWLIST_UNREADABLE,
    GateConfig,
    GateDecision,
    GateJob,
    decide,
)
from policy.pr_policy import PrPolicy
from policy.verdicts import Verdict
from renderers.markdown import render_check_run
from renderers.pr_view import build_pr_view, gate_decision
from sql.warehouse import Warehouse
from tests.github_fake import APP_ID, APP_SLUG, FAKE_API, GitHubFake
from tests.test_markdown import NOW, PUBLIC, row

FIRST = NOW - timedelta(hours=1)
CONFIG = GateConfig()  # max pending 24 h, no allowlist configured
ALLOWLIST = parse_allowlist("L4:\n  - acme/gate\n  - acme/second\nL3:\n  npu:\n    acme/npu: []\n")


def job(verdict: Verdict, repo: str = "acme/gate", *, level: str = "L4", name: str = "test", silent: bool = False,
        age: timedelta | None = timedelta(hours=1)) -> GateJob:
    since = None if age is None else NOW - age
    return GateJob(repo, level, "ci", name, verdict, silent, since if verdict in (Verdict.RUNNING,
                                                                                Verdict.NO_REPORT) else None)


def gate(*jobs: GateJob, allowlist: object = None, config: GateConfig = CONFIG,
         reported: tuple[str, ...] = ()) -> GateDecision:
    return decide(jobs, allowlist=allowlist, config=config, now=NOW, commit_first_seen=FIRST,  # type: ignore[arg-type]
                  reported=reported or tuple(j.repo for j in jobs))


def outcome(decision: GateDecision) -> tuple[str, str | None]:
    return decision.status, decision.conclusion


# ---- one test per row -----------------------------------------------------------------------------------

def test_row_1_a_failure_blocks_at_once_even_while_others_run() -> None:
    decision = gate(job(Verdict.FAILURE), job(Verdict.RUNNING, name="other"), job(Verdict.SUCCESS, name="b"))
    assert outcome(decision) == ("completed", "failure")
    assert [j.job for j in decision.failed] == ["test"] and len(decision.pending) == 1 and decision.blocking


@pytest.mark.parametrize(("pending", "silent"), [(Verdict.RUNNING, False), (Verdict.NO_REPORT, True)])
def test_row_2_a_running_or_silent_job_holds_the_check(pending: Verdict, silent: bool) -> None:
    decision = gate(job(Verdict.SUCCESS, name="a"), job(pending, silent=silent, age=timedelta(hours=7)))
    assert outcome(decision) == ("in_progress", None)
    [item] = decision.pending
    assert item.age == timedelta(hours=7) and item.job is not None
    assert decision.next_change == timedelta(hours=17), "re-decided when it passes the max pending age"


def test_row_3_an_allowlisted_l4_without_a_result_holds_the_check() -> None:
    decision = gate(job(Verdict.SUCCESS), allowlist=ALLOWLIST)
    assert outcome(decision) == ("in_progress", None)
    [missing] = decision.pending
    assert (missing.repo, missing.job, missing.age) == ("acme/second", None, timedelta(hours=1))
    assert decision.gating_repos == ("acme/gate", "acme/second")


@pytest.mark.parametrize("pending", ["job", "missing"])
def test_row_4_past_the_max_pending_age_the_gate_lets_go_loudly(pending: str) -> None:
    old = timedelta(hours=25)
    if pending == "job":
        decision = gate(job(Verdict.SUCCESS, name="a"), job(Verdict.NO_REPORT, silent=True, age=old))
    else:
        decision = decide([job(Verdict.SUCCESS)], allowlist=ALLOWLIST, config=CONFIG, now=NOW,
                          commit_first_seen=NOW - old, reported=["acme/gate"])
    assert outcome(decision) == ("completed", "neutral")
    assert not decision.pending and len(decision.expired) == 1 and not decision.blocking
    never = gate(job(Verdict.NO_REPORT, silent=True, age=timedelta(days=30)), config=GateConfig(max_pending=None))
    assert outcome(never) == ("in_progress", None) and never.next_change is None, "0 hours: it waits for ever"


@pytest.mark.parametrize("verdict", [Verdict.TIMED_OUT, Verdict.CANCELLED])
def test_row_5_timeouts_and_cancellations_are_infrastructure(verdict: Verdict) -> None:
    decision = gate(job(Verdict.SUCCESS, name="a"), job(verdict))
    assert outcome(decision) == ("completed", "success"), "not in the conclusion"
    assert [j.verdict for j in decision.infrastructure] == [verdict]
    assert outcome(gate(job(verdict))) == ("completed", "neutral"), "nothing passed: neutral, not success"


def test_row_6_other_conclusions_block_nothing() -> None:
    decision = gate(job(Verdict.SUCCESS, name="a"), job(Verdict.NO_REPORT, silent=False))  # e.g. "skipped"
    assert outcome(decision) == ("completed", "success") and len(decision.other) == 1


def test_row_7_every_gating_job_passed() -> None:
    assert outcome(gate(job(Verdict.SUCCESS), job(Verdict.SUCCESS, name="b"))) == ("completed", "success")


def test_row_8_no_gating_backend_is_neutral_and_l3_l2_never_gate() -> None:
    decision = gate(job(Verdict.FAILURE, "o/l3", level="L3"), job(Verdict.RUNNING, "o/l2", level="L2"))
    assert outcome(decision) == ("completed", "neutral") and decision.gating_repos == ()


def test_row_9_with_an_allowlist_only_its_l4_repos_gate_else_the_relays_levels() -> None:
    relay_l4_not_listed = job(Verdict.FAILURE, "other/backend")
    listed_reported_l3 = job(Verdict.FAILURE, "acme/gate", level="L3")
    with_list = gate(relay_l4_not_listed, listed_reported_l3, job(Verdict.SUCCESS, "acme/second"),
                     allowlist=ALLOWLIST)
    assert [j.repo for j in with_list.failed] == ["acme/gate"] and with_list.levels_from == LEVELS_FROM_ALLOWLIST
    without = gate(relay_l4_not_listed, listed_reported_l3)
    assert [j.repo for j in without.failed] == ["other/backend"] and without.levels_from == LEVELS_FROM_RELAY
    unreadable = gate(relay_l4_not_listed, config=GateConfig(allowlist_configured=True))
    assert outcome(unreadable) == ("completed", "failure")
    assert unreadable.levels_from == LEVELS_FROM_RELAY_ALLOWLIST_UNREADABLE


def test_row_10_a_canary_never_gates_at_any_level() -> None:
    canary = GateConfig(canaries=frozenset({"acme/second", "relay/canary"}))
    listed = gate(job(Verdict.FAILURE, "acme/second"), job(Verdict.SUCCESS), allowlist=ALLOWLIST, config=canary)
    assert outcome(listed) == ("completed", "success"), "an allowlisted L4 canary's failure blocks nothing"
    assert listed.gating_repos == ("acme/gate",) and not listed.pending, "nor is a silent canary awaited"
    by_relay = gate(job(Verdict.FAILURE, "Relay/Canary"), job(Verdict.RUNNING, "relay/canary", name="x"),
                    config=canary)
    assert outcome(by_relay) == ("completed", "neutral") and by_relay.gating_repos == ()
    assert outcome(gate(job(Verdict.FAILURE, "relay/canary"))) == ("completed", "failure"), "only when configured"


# ---- through the view and the check run -----------------------------------------------------------------

def test_the_check_run_says_why_with_ages_and_loud_lines() -> None:
    rows = [row("acme/gate", job="build"), row("acme/gate", job="test", conclusion="timed_out"),
            row("acme/gate", job="dist", status="in_progress", received=NOW - timedelta(hours=2)),
            row("acme/npu", "L3", job="npu", conclusion="failure"),
            row("other/relay-l4", job="x", conclusion="failure")]
    policy = PrPolicy(allowlist=ALLOWLIST)
    view = build_pr_view(rows, now=NOW, silence_hours=6, public_url=PUBLIC, upstream_repo="pytorch/pytorch",
                         pr_number=4242, policy=policy)
    check = render_check_run(view)
    assert (check.status, check.conclusion) == ("in_progress", None)
    assert check.title.startswith("⏳ waiting for 2 gating backends")
    summary = check.summary
    assert "**Merge gate** (L4 backends of the upstream allowlist: 2): 1 gating job passed." in summary
    assert "**acme/gate** · ci / dist: running since 11:50 UTC (over 2h), blocks merging until it reports" in summary
    assert ("**acme/second**: no result for this commit yet (the commit's first result came at 10:00 UTC, over 3h "
            "ago)") in summary
    assert "**acme/gate** · ci / test: timed out, infrastructure, not blocking" in summary
    assert "other/relay-l4" not in summary.split("| |")[0], "not allowlisted at L4: not in the gate"
    assert "❌" not in summary.split("| |")[0], "no blocking failure"
    later = build_pr_view(rows, now=NOW + timedelta(days=2), silence_hours=6, public_url=PUBLIC,
                          upstream_repo="pytorch/pytorch", pr_number=4242, policy=policy)
    late = render_check_run(later)
    assert (late.status, late.conclusion) == ("completed", "neutral")
    assert ("**no longer blocking**: **acme/gate** · ci / dist: silent since 2026-11-20 11:50 UTC (over 2d)"
            in late.summary)
    assert "(1d 0h, `OOT_HUD_GATE_MAX_PENDING_HOURS`)" in late.summary
    unreadable = build_pr_view(rows, now=NOW, silence_hours=6, public_url=PUBLIC, upstream_repo="pytorch/pytorch",
                               pr_number=4242, policy=PrPolicy(gate=GateConfig(allowlist_configured=True)))
    assert "the allowlist could not be read" in render_check_run(unreadable).summary
    assert gate_decision(unreadable).failed[0].repo == "other/relay-l4"


def test_re_rendering_a_running_gate_job_rewrites_nothing_until_its_age_steps() -> None:
    """The check run is re-sent only when its text changes: the gate's ages must not change it on every
    render (any result of the PR re-renders it), only at coarse steps (whole hours, then whole days)."""
    rows = [row("acme/gate", job="build"), row("acme/second", job="build"),
            row("acme/gate", job="dist", status="in_progress", received=NOW)]
    policy = PrPolicy(allowlist=ALLOWLIST)

    def check(at: datetime) -> tuple[str, str]:
        view = build_pr_view(rows, now=at, silence_hours=6, public_url=PUBLIC, upstream_repo="pytorch/pytorch",
                             pr_number=4242, policy=policy)
        rendered = render_check_run(view)
        return rendered.title, rendered.summary

    started = NOW - timedelta(minutes=10)  # the job's start (received 10 min after it, as ``row`` makes it)
    first = check(NOW)
    assert "ci / dist: running since 13:50 UTC, blocks merging" in first[1] and first[0].startswith("⏳ waiting")
    assert all(check(NOW + timedelta(seconds=s)) == first for s in (1, 19, 61, 600, 2999)), "the first hour"
    hour = check(started + timedelta(hours=1))
    assert hour != first and "running since 13:50 UTC (over 1h)" in hour[1]
    assert check(started + timedelta(hours=1, minutes=59)) == hour
    assert "running since 13:50 UTC (over 2h)" in check(started + timedelta(hours=2))[1]


async def test_the_bot_renders_again_when_a_pending_backend_passes_the_max_age(
        warehouse: Warehouse, github_fake: GitHubFake, app_private_key: str) -> None:
    from bot.pr_state import PrHead
    from tests.readpath_data import record
    from tests.readpath_data import row as warehouse_row

    # Wide enough that the first render lands before the max age even on a loaded machine.
    policy = PrPolicy(gate=GateConfig(max_pending=timedelta(seconds=2)))
    renders: list[Rendered] = []
    real = warehouse_renderer(warehouse, silence_hours=6, public_url=PUBLIC, policy=lambda: policy)

    def counting(repo: str, number: int) -> Rendered:
        renders.append(real(repo, number))
        return renders[-1]

    bot = Bot(warehouse=warehouse, app_id=APP_ID, private_key=app_private_key, api_url=FAKE_API,
              app_slug=APP_SLUG, debounce=0.0, pace=0.0, render=counting)
    await bot.start()
    try:
        started = datetime.now(UTC)
        pending = record(pr=7, sha="a" * 40, status="in_progress", conclusion=None, level="L4", started=started)
        warehouse.insert_job_rows([warehouse_row(pending)])
        bot.state.record_head(PrHead("pytorch/pytorch", 7, "a" * 40, "open", "main", 777, datetime.now(UTC)))
        bot.on_results(pending.pr)
        await bot.drain()
        assert renders[-1].check is not None and renders[-1].check.status == "in_progress"
        assert renders[-1].recheck_after is not None and renders[-1].recheck_after < 2.5
        deadline = time.monotonic() + 10
        while len(renders) < 2 or bot.writer.slot("pytorch/pytorch", 7) is None:
            assert time.monotonic() < deadline, "no re-render after the max pending age"
            await asyncio.sleep(0.02)
        await bot.drain()
        check = renders[-1].check
        assert check is not None and (check.status, check.conclusion) == ("completed", "neutral")
        [run] = github_fake.runs_for("pytorch/pytorch")
        assert run["conclusion"] == "neutral", "GitHub got the let-go check"
    finally:
        await bot.stop()


# ---- the comment: which label runs an L3 backend that did not run ------------------------------------------

def test_the_comment_names_the_label_for_each_l3_backend_that_did_not_run() -> None:
    from renderers.markdown import render_pr_comment

    allowlist = parse_allowlist("L3:\n  npu:\n    acme/npu: []\n    beta/npu2: []\n  xpu:\n    intel/xpu: []\n"
                                "L4:\n  - acme/gate\n")
    rows = [row("acme/gate"), row("acme/npu", "L3", job="npu")]

    def comment(policy: PrPolicy) -> str:
        view = build_pr_view(rows, now=NOW, silence_hours=6, public_url=PUBLIC, upstream_repo="pytorch/pytorch",
                             pr_number=4242, policy=policy)
        body = render_pr_comment(view)
        assert body is not None
        return body

    body = comment(PrPolicy(allowlist=allowlist))
    assert "**Not run for this commit** (L3 backends run when the PR carries their label):" in body
    assert "- add the label `ciflow/crcr/npu` to opt this PR into **beta/npu2**\n" in body, "acme/npu ran: not listed"
    assert "- add the label `ciflow/crcr/xpu` to opt this PR into **intel/xpu**\n" in body
    assert "`ciflow/crcr/xpu`" in comment(PrPolicy(allowlist=allowlist, label_prefix="ciflow/crcr/"))
    assert "Not run for this commit" not in comment(PrPolicy()), "without an allowlist nothing changes"
    assert comment(PrPolicy()) == render_pr_comment(build_pr_view(
        rows, now=NOW, silence_hours=6, public_url=PUBLIC, upstream_repo="pytorch/pytorch", pr_number=4242))


ADD_NPU = "- add the label `ciflow/crcr/npu` to opt this PR into **beta/npu2**"
ADD_XPU = "- add the label `ciflow/crcr/xpu` to opt this PR into **intel/xpu**"
WAIT_NPU = "- `ciflow/crcr/npu` is on this PR: waiting for **beta/npu2** to report"
WAIT_XPU = "- `ciflow/crcr/xpu` is on this PR: waiting for **intel/xpu** to report"


@pytest.mark.parametrize(("labels", "lines"), [
    ((), [ADD_NPU, ADD_XPU]),  # no label (or none known: no pull_request webhook stored)
    (("ciflow/crcr/xpu",), [ADD_NPU, WAIT_XPU]),
    (("module: cuda", "ciflow/crcr/npu", "ciflow/crcr/xpu"), [WAIT_NPU, WAIT_XPU]),
    # Compared exactly, as the relay compares them: another case, suffix or prefix runs nothing.
    (("ciflow/crcr/NPU", "ciflow/crcr/xpu-extra", "ciflow/oot/npu"), [ADD_NPU, ADD_XPU]),
])
def test_the_label_line_says_add_it_or_that_it_is_on_and_the_backend_has_not_reported(
        labels: tuple[str, ...], lines: list[str]) -> None:
    from renderers.markdown import render_pr_comment

    allowlist = parse_allowlist("L3:\n  npu:\n    acme/npu: []\n    beta/npu2: []\n  xpu:\n    intel/xpu: []\n"
                                "L4:\n  - acme/gate\n")
    rows = [{**r, "pr_labels": list(labels)} for r in (row("acme/gate"), row("acme/npu", "L3", job="npu"))]
    view = build_pr_view(rows, now=NOW, silence_hours=6, public_url=PUBLIC, upstream_repo="pytorch/pytorch",
                         pr_number=4242, policy=PrPolicy(allowlist=allowlist))
    body = render_pr_comment(view)
    assert body is not None
    head = "**Not run for this commit** (L3 backends run when the PR carries their label):\n"
    hints = body.split(head, 1)[1].split("\n\n", 1)[0].splitlines()
    assert hints == lines
    assert "module: cuda" not in body, "the PR's labels are compared, never shown"
