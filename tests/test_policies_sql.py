"""The display policies as the read path computes them: final attempt, legs, flaky, pass rate, levels,
trunk baseline, silence, superseded commits; and the summary's SQL agreeing with the PR view's Python."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from oot_hud.pages import level_rows, summary_rows
from renderers.backend import BackendPage, BackendView, build_backend
from renderers.frame import Site
from renderers.policy import Verdict
from renderers.pr_view import VerdictCounts
from renderers.summary import BackendSummary, build_summary
from sql.records import format_time
from sql.saved import load
from sql.warehouse import Warehouse
from tests.readpath_data import NOW, record, row

ACME = "acme/torch-acme"


def summary(warehouse: Warehouse, days: int = 7, silence_hours: float = 6) -> dict[str, BackendSummary]:
    rows = summary_rows(warehouse, days=days, now=NOW, silence_hours=silence_hours)
    page = build_summary(rows, days=days, now=NOW, site=Site())
    return {b.repo: b for b in page.backends}


def backend(warehouse: Warehouse, repo: str = ACME, days: int = 7, silence_hours: float = 6,
            max_prs: int = 200) -> BackendPage:
    rows = load("oot_backend_dashboard").run(warehouse, {
        "repo": repo, "days": days, "now": format_time(NOW), "offset": 0, "max_prs": max_prs, "max_trunk": 30,
        "event": ""})
    return build_backend(rows, repo=repo, days=days, now=NOW, site=Site(), silence_hours=silence_hours)


def insert(warehouse: Warehouse, *records: Any) -> None:
    warehouse.insert_job_rows([row(r) for r in records])


def test_final_attempt_decides_and_a_rerun_pass_is_flaky(warehouse: Warehouse) -> None:
    insert(warehouse, record(attempt=1, conclusion="failure"), record(attempt=2, conclusion="success"),
           record(job="b", attempt=1, conclusion="success"), record(job="b", attempt=2, conclusion="failure"))
    s = summary(warehouse)[ACME]
    assert (s.successes, s.failures, s.flaky, s.total) == (1, 1, 1, 2)
    assert s.rate == 0.5
    page = backend(warehouse)
    cells = {job.job: job for job in page.prs.rows[0].cells if job}
    assert cells["test"].verdict is Verdict.SUCCESS and cells["test"].flaky and cells["test"].attempt == 2
    assert cells["b"].verdict is Verdict.FAILURE and not cells["b"].flaky  # a final failure is no flake


def test_matrix_legs_count_once_with_the_worst_leg(warehouse: Warehouse) -> None:
    insert(warehouse, record(leg="a"), record(leg="b", conclusion="timed_out"), record(leg="c"))
    s = summary(warehouse)[ACME]
    assert (s.successes, s.timed_out, s.total) == (0, 1, 1)
    job = backend(warehouse).prs.rows[0].cells[0]
    assert job is not None and len(job.legs) == 3 and job.verdict is Verdict.TIMED_OUT


def test_pass_rate_leaves_cancelled_and_running_beside_it(warehouse: Warehouse) -> None:
    insert(warehouse, record(job="a", conclusion="cancelled"), record(job="b", status="in_progress"),
           record(backend="x/none", job="c", conclusion="cancelled"))
    page = summary(warehouse)
    s = page[ACME]
    assert (s.cancelled, s.running, s.rate) == (1, 1, None)
    assert page["x/none"].rate is None and page["x/none"].total == 1


def test_summary_sorted_worst_first_with_unrated_last(warehouse: Warehouse) -> None:
    insert(warehouse,
           record(backend="g/good"), record(backend="g/good", job="b"),
           record(backend="b/bad", conclusion="failure"), record(backend="b/bad", job="b"),
           record(backend="w/worst", conclusion="failure"),
           record(backend="n/norate", conclusion="cancelled"))
    rows = summary_rows(warehouse, days=7, now=NOW, silence_hours=6)
    assert [r["downstream_repo"] for r in rows] == ["w/worst", "b/bad", "g/good", "n/norate"]
    rates = [b.rate for b in build_summary(rows, days=7, now=NOW, site=Site()).backends]
    assert rates == [0.0, 0.5, 1.0, None]


def test_l1_is_never_displayed(warehouse: Warehouse) -> None:
    insert(warehouse, record(backend="new/onboarding", level="L1"), record(level="L2"))
    assert set(summary(warehouse)) == {ACME}
    assert summary(warehouse)[ACME].level == "L2"
    assert backend(warehouse, "new/onboarding").prs.rows == ()
    # ... but the summary lists it by name, and counts it
    levels = level_rows(warehouse, days=7, now=NOW)
    assert [(r["downstream_repo"], r["level"]) for r in levels] == [(ACME, "L2"), ("new/onboarding", "L1")]
    page = build_summary(summary_rows(warehouse, days=7, now=NOW, silence_hours=6), days=7, now=NOW,
                         site=Site(), levels=levels)
    assert page.onboarding == ("new/onboarding",) and page.level_counts == (("L2", 1), ("L1", 1))
    assert [s.level for s in page.sections] == ["L2"]


def test_trunk_baseline_is_its_own_section(warehouse: Warehouse) -> None:
    insert(warehouse, record(pr=0, sha="c" * 40, conclusion="failure"),
           record(pr=0, sha="c" * 40, job="b", event="nightly"),
           record(pr=0, sha="d" * 40, job="b", event="periodic", conclusion="failure"),
           record(pr=7))
    s = summary(warehouse)[ACME]
    assert (s.trunk_judged, s.trunk_rate) == (3, pytest.approx(1 / 3))
    page = backend(warehouse)
    assert [r.pr_number for r in page.prs.rows] == [7]  # never a "PR #0" row
    assert {r.head_sha[0] for r in page.trunk.rows} == {"c", "d"}
    assert page.trunk.rate == pytest.approx(1 / 3) and page.prs.rate == 1.0


def test_silence_turns_an_old_in_progress_into_no_report(warehouse: Warehouse) -> None:
    insert(warehouse, record(job="old", status="in_progress", started=NOW - timedelta(hours=7)),
           record(job="new", status="in_progress", started=NOW - timedelta(hours=5)))
    s = summary(warehouse)[ACME]
    assert (s.running, s.no_report, s.failures) == (1, 1, 0)
    cells = {job.job: job.verdict for job in backend(warehouse).prs.rows[0].cells if job}
    assert cells == {"old": Verdict.NO_REPORT, "new": Verdict.RUNNING}
    assert summary(warehouse, silence_hours=8)[ACME].no_report == 0


def test_superseded_commits_marked_and_webhook_head_wins(warehouse: Warehouse) -> None:
    old, new = "1" * 40, "2" * 40
    insert(warehouse, record(sha=old, received=NOW - timedelta(hours=3), conclusion="failure"),
           record(sha=new, received=NOW - timedelta(hours=1)))
    rows = backend(warehouse).prs.rows
    assert [(r.head_sha, r.superseded) for r in rows] == [(new, False), (old, True)]
    assert backend(warehouse).prs.counts.failure == 1  # superseded results stay visible, marked
    warehouse.insert("oot_pr_heads", [["pytorch/pytorch", 100, old, "open", "main", 1, NOW]],
                     ["upstream_repo", "pr_number", "head_sha", "state", "base_ref", "installation_id",
                      "updated_at"])
    rows = backend(warehouse).prs.rows
    assert [(r.head_sha, r.superseded) for r in rows] == [(old, False), (new, True)]


def test_range_window_uses_receipt_time(warehouse: Warehouse) -> None:
    insert(warehouse, record(received=NOW - timedelta(days=3)), record(pr=5, received=NOW - timedelta(hours=2)))
    assert summary(warehouse, days=1)[ACME].total == 1
    assert summary(warehouse, days=7)[ACME].total == 2
    s = summary(warehouse, days=7)[ACME]
    assert len(s.series) == 8 and s.series[-1] == 1.0 and s.series[-4] == 1.0 and s.series[0] is None


def test_summary_sql_agrees_with_the_pr_view_policies(warehouse: Warehouse) -> None:
    """Random histories: the summary's SQL counts equal the counts of the matrix built by pr_view."""
    rng = random.Random(4)
    records = []
    for pr in range(1, 25):
        for backend_name in ("a/one", "b/two"):
            for sha in rng.sample(["1" * 40, "2" * 40, "3" * 40], rng.randint(1, 2)):
                for job in ("x", "y", "z")[: rng.randint(1, 3)]:
                    for attempt in range(1, rng.randint(1, 3) + 1):
                        for leg in ("", "L2")[: rng.randint(1, 2)]:
                            status = rng.choice(["completed"] * 5 + ["in_progress"])
                            records.append(record(
                                backend=backend_name, pr=pr if rng.random() > 0.1 else 0, sha=sha, job=job,
                                attempt=attempt, leg=leg, status=status,
                                conclusion=rng.choice(["success", "success", "failure", "timed_out", "cancelled",
                                                       "skipped"]),
                                started=NOW - timedelta(hours=rng.choice([1, 10])),
                                # an in_progress leg heard from recently (running) or long ago (no report)
                                received=NOW - timedelta(hours=rng.randint(1, 100) if status == "completed"
                                                         else rng.choice([1, 10]))))
    insert(warehouse, *records)
    sums = summary(warehouse)
    for name in ("a/one", "b/two"):
        page = backend(warehouse, name)
        counts: VerdictCounts = page.prs.counts  # the summary's columns count PR jobs; the trunk has its rate
        s = sums[name]
        assert (s.successes, s.failures, s.timed_out, s.cancelled, s.running, s.no_report, s.flaky) == (
            counts.success, counts.failure, counts.timed_out, counts.cancelled, counts.running, counts.no_report,
            counts.flaky), name
        assert s.total == counts.total
        trunk = page.trunk.counts
        assert (s.trunk_judged, s.trunk_rate) == (trunk.success + trunk.failed, page.trunk.rate), name
        counts = counts + trunk
        # the history exercises every policy (else this comparison would prove little)
        assert min(counts.flaky, counts.no_report, counts.running, counts.failure, counts.timed_out) > 0
        assert page.trunk.rows and any(r.superseded for r in page.prs.rows)


def test_daily_pass_rate_agrees_with_the_summary(warehouse: Warehouse) -> None:
    """oot_daily_pass_rate applies the summary's final-attempt rules: per backend, its PR days add up to the
    summary's PR columns and its trunk days to the trunk's, day by day to the summary's PR series."""
    records = []
    rng = random.Random(12)
    for pr in range(0, 16):
        for backend_name in ("a/one", "b/two"):
            for job in ("x", "y"):
                for attempt in range(1, rng.randint(1, 2) + 1):
                    for leg in ("", "L2")[: rng.randint(1, 2)]:
                        records.append(record(
                            backend=backend_name, pr=pr % 5, sha=f"{pr:040d}", job=job, attempt=attempt, leg=leg,
                            status=rng.choice(["completed"] * 5 + ["in_progress"]),
                            conclusion=rng.choice(["success", "failure", "timed_out", "cancelled", "skipped"]),
                            received=NOW - timedelta(hours=rng.randint(1, 150))))
    insert(warehouse, *records, record(backend="new/l1", level="L1"))
    sums = summary(warehouse)
    rows = load("oot_daily_pass_rate").run(warehouse, {"repo": "", "days": 7, "now": format_time(NOW)})
    assert {r["backend"] for r in rows} == {"a/one", "b/two"}  # L1 never shown
    for name, s in sums.items():
        mine = [r for r in rows if r["backend"] == name]
        pr = [r for r in mine if r["kind"] == "pr"]
        trunk = [r for r in mine if r["kind"] == "trunk"]
        assert (sum(r["passed"] for r in pr), sum(r["failed"] for r in pr), sum(r["timed_out"] for r in pr),
                sum(r["cancelled"] for r in pr), sum(r["total"] for r in pr)) == (
            s.successes, s.failures, s.timed_out, s.cancelled, s.total), name
        assert sum(r["passed"] + r["failed"] + r["timed_out"] for r in trunk) == s.trunk_judged > 0
        series = dict(zip(s.series_days, s.series, strict=True))
        for r in pr:
            judged = r["passed"] + r["failed"] + r["timed_out"]
            assert series[r["day"]] == (r["passed"] / judged if judged else None), (name, r["day"])
        assert len({r["day"] for r in pr}) > 3 and {r["level"] for r in mine} == {"L4"}
    one = load("oot_daily_pass_rate").run(warehouse, {"repo": "a/one", "days": 7, "now": format_time(NOW)})
    assert one == [r for r in rows if r["backend"] == "a/one"]


def test_backend_paging_trunk_kinds_titles_and_stats(warehouse: Warehouse) -> None:
    """The dashboard pages PRs (50 a page, no PR on two pages), filters one trunk kind, names each kind's newest
    commit and carries the PR's title and author from webhooks; oot_backend_stats' PRs and averages are those
    of the records' newest versions; the cards' counts are the summary's."""
    prs = [record(pr=pr, sha=f"{pr:040x}", received=NOW - timedelta(minutes=pr), duration=60.0 * (pr % 3 + 1),
                  queue_time_s=float(pr % 4), conclusion="failure" if pr % 5 == 0 else "success")
           for pr in range(1, 121)]
    older = record(pr=7, sha=f"{7:040x}", received=NOW - timedelta(minutes=200), status="in_progress",
                   queue_time_s=999.0)  # an older version of PR 7's record: replaced, never averaged
    trunk = [record(pr=0, sha="c" * 40, event="push", received=NOW - timedelta(hours=3)),
             record(pr=0, sha="d" * 40, event="nightly", received=NOW - timedelta(hours=2), conclusion="failure"),
             record(pr=0, sha="e" * 40, event="nightly", received=NOW - timedelta(hours=5))]
    warehouse.insert_job_rows([row(older, version=1)] + [row(r) for r in prs + trunk])
    warehouse.insert("oot_pr_heads", [["pytorch/pytorch", 3, f"{3:040x}", "open", "main", 1, NOW, "Old title", "amy"],
                                      ["pytorch/pytorch", 3, f"{3:040x}", "open", "main", 1,
                                       NOW + timedelta(seconds=1), "New <title>", "amy"]],
                     ["upstream_repo", "pr_number", "head_sha", "state", "base_ref", "installation_id", "updated_at",
                      "title", "author"])

    def page(number: int, event: str = "") -> list[dict[str, Any]]:
        return load("oot_backend_dashboard").run(warehouse, {
            "repo": ACME, "days": 7, "now": format_time(NOW), "offset": (number - 1) * 50,
            "max_prs": 0 if event else 50, "max_trunk": 30, "event": event})

    seen = [sorted({r["pr_number"] for r in page(n) if r["pr_number"]}, reverse=True) for n in (1, 2, 3, 4)]
    assert seen == [list(range(50, 0, -1)), list(range(100, 50, -1)), list(range(120, 100, -1)), []]
    first = page(1)
    assert {(r["prs_total"], r["trunk_total"]) for r in first} == {(120, 3)}
    assert {r["pr_title"] for r in first if r["pr_number"] == 3} == {"New <title>"}
    assert {r["pr_author"] for r in first if r["pr_number"] == 3} == {"amy"}
    assert {r["pr_title"] for r in first if r["pr_number"] == 4} == {""}
    kinds = {k[0]: (k[1], k[3]) for k in first[0]["trunk_kinds"]}
    assert kinds == {"push": ("c" * 40, 1), "nightly": ("d" * 40, 2)}
    nightly = page(1, "nightly")
    assert {r["head_sha"] for r in nightly} == {"d" * 40, "e" * 40} and {r["trunk_total"] for r in nightly} == {2}
    built = build_backend(first, repo=ACME, days=7, now=NOW, site=Site(), silence_hours=6)
    assert (built.pages, built.next.number if built.next else None) == (3, 2)

    [stats] = load("oot_backend_stats").run(warehouse, {"repo": ACME, "days": 7, "now": format_time(NOW)})
    assert stats["prs"] == 120
    assert stats["avg_queue_s"] == pytest.approx(sum(pr % 4 for pr in range(1, 121)) / 120)
    assert stats["avg_execution_s"] == pytest.approx(sum(60.0 * (pr % 3 + 1) for pr in range(1, 121)) / 120)
    daily = load("oot_daily_pass_rate").run(warehouse, {"repo": ACME, "days": 7, "now": format_time(NOW)})
    cards = build_backend(first, repo=ACME, days=7, now=NOW, site=Site(), silence_hours=6,
                          view=BackendView(daily=tuple(daily), stats=stats)).cards
    s = summary(warehouse)[ACME]
    assert cards is not None and (cards.passed, cards.failed, cards.timed_out, cards.jobs, cards.prs) == (
        s.successes, s.failures, s.timed_out, s.total, 120)
