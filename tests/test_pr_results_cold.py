"""The PR path's cold render (round 5, docs/pr-view.md): the views' bodies run inline give the views' rows,
the trunk baseline's shape keeps the policy, and narrowing the trunk lookup to the backends with a failed job
leaves the comment, the check run and the page exactly as rendered from the saved query ``oot_pr_results``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from renderers.markdown import render_check_run, render_pr_comment
from renderers.pr_page import render_pr_page
from renderers.pr_view import PrView, build_pr_view
from sql.pr_results import (
    TrunkFailingCache,
    backends_needing_trunk,
    fetch_pr_rows,
    pr_rows_sql,
    trunk_failing_sql,
    view_body,
)
from sql.saved import load
from sql.warehouse import Warehouse
from tests.readpath_data import NOW, PRS, random_history, record, row

UPSTREAM = "pytorch/pytorch"
def rendered(view: PrView) -> tuple[Any, ...]:
    return view, render_pr_comment(view), render_check_run(view), render_pr_page(view)


def view_of(rows: list[dict[str, Any]], pr: int, upstream: str = UPSTREAM) -> PrView:
    return build_pr_view(rows, now=NOW, silence_hours=6, public_url="https://hud.example",
                         upstream_repo=upstream, pr_number=pr)


def sorted_rows(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r.values()) for r in rows)


# ---- one definition: the inline bodies give the views' rows ---------------------------------------------

def test_view_body_is_the_schema_files_select() -> None:
    body = view_body("013_trunk_failing.sql", "oot_trunk_failing")
    assert body.startswith("SELECT downstream_repo, workflow_name,") and "--" not in body
    assert "{upstream_repo:String}" in body
    with pytest.raises(LookupError):
        view_body("013_trunk_failing.sql", "oot_pr_rows")


@pytest.mark.parametrize("seed", [11, 12])
def test_inline_bodies_give_the_views_rows_merged_or_not(warehouse: Warehouse, seed: int) -> None:
    random_history(warehouse, seed)
    for optimize in (False, True):
        if optimize:
            warehouse.command("OPTIMIZE TABLE oot_job_results FINAL")
        for upstream in (UPSTREAM, "other/upstream", "nobody/nothing"):
            for pr in (*PRS, 0, 999):
                params = {"upstream_repo": upstream, "pr": pr}
                assert warehouse.query(pr_rows_sql(), params) == load("oot_pr_rows").run(warehouse, params)
            via_view = load("oot_trunk_failing").run(warehouse, {"upstream_repo": upstream})
            inline = warehouse.query(trunk_failing_sql(False), {"upstream_repo": upstream})
            assert sorted_rows(inline) == sorted_rows(via_view)
            assert via_view or upstream == "nobody/nothing", "the history must have jobs failing on trunk"
            some = ["acme/a", "gamma/d", "nobody/x"]
            narrowed = warehouse.query(trunk_failing_sql(True), {"upstream_repo": upstream, "backends": some})
            assert sorted_rows(narrowed) == sorted_rows([r for r in via_view if r["downstream_repo"] in some])


def test_trunk_baseline_latest_delivery_ties_legs_and_reruns(warehouse: Warehouse) -> None:
    """Per (backend, workflow) the delivery(ies) that finished last; per job its highest attempt there."""
    t = NOW - timedelta(hours=1)

    def trunk(sha: str, job: str, conclusion: str, at: datetime, *, attempt: int = 1, leg: str = "",
              workflow: str = "ci") -> list[Any]:
        return row(record(pr=0, sha=sha, job=job, conclusion=conclusion, received=at, attempt=attempt, leg=leg,
                          workflow=workflow))

    warehouse.insert_job_rows([
        trunk("1" * 40, "build", "failure", t - timedelta(hours=1)),  # older delivery: not the baseline
        trunk("2" * 40, "test", "failure", t),  # two deliveries finish at t: both count ...
        trunk("3" * 40, "test", "success", t),  # ... and "test" failed in one of them
        trunk("3" * 40, "dist", "success", t - timedelta(minutes=5), leg="a"),  # a failed leg fails the job
        trunk("3" * 40, "dist", "failure", t - timedelta(minutes=9), leg="b"),
        trunk("2" * 40, "lint", "timed_out", t - timedelta(minutes=3)),  # fixed by its re-run
        trunk("2" * 40, "lint", "success", t - timedelta(minutes=2), attempt=2),
        trunk("4" * 40, "build", "failure", t - timedelta(days=1), workflow="nightly"),  # own workflow's latest
    ])
    expected = [{"downstream_repo": "acme/torch-acme", "workflow_name": w, "job_name": j}
                for w, j in (("ci", "dist"), ("ci", "test"), ("nightly", "build"))]
    assert load("oot_trunk_failing").run(warehouse, {"upstream_repo": UPSTREAM}) == expected
    assert sorted_rows(warehouse.query(trunk_failing_sql(False), {"upstream_repo": UPSTREAM})) == sorted_rows(
        expected)


# ---- the flag where the view reads it: same rendered output ---------------------------------------------

@pytest.mark.parametrize("seed", [21, 22, 23])
def test_comment_check_run_and_page_equal_those_from_the_saved_query(warehouse: Warehouse, seed: int) -> None:
    random_history(warehouse, seed)
    flagged = 0
    for upstream in (UPSTREAM, "other/upstream"):
        cache = TrunkFailingCache()
        for pr in PRS:
            saved = load("oot_pr_results").run(warehouse, {"upstream_repo": upstream, "pr": pr})
            for cold in (True, False):  # a fresh cache, then the shared one
                fetched = fetch_pr_rows(warehouse, upstream, pr, trunk=TrunkFailingCache() if cold else cache)
                assert rendered(view_of(fetched, pr, upstream)) == rendered(view_of(saved, pr, upstream))
            view = view_of(saved, pr, upstream)
            flagged += sum(j.also_failing_on_trunk for c in (view, *view.superseded) for b in c.backends
                           for j in b.jobs)
    assert flagged, "some job must be shown as also failing on trunk"


def test_a_pr_without_a_failed_job_never_reads_the_trunk(warehouse: Warehouse) -> None:
    warehouse.insert_job_rows([row(record(pr=0, sha="1" * 40, job="test", conclusion="failure")),
                               row(record(pr=100, job="test", conclusion="success")),
                               row(record(pr=100, job="build", status="in_progress")),
                               row(record(pr=100, job="lint", conclusion="failure")),  # fixed by a re-run
                               row(record(pr=100, job="lint", conclusion="success", attempt=2))])
    cache = TrunkFailingCache()
    rows = fetch_pr_rows(warehouse, UPSTREAM, 100, trunk=cache)
    assert len(rows) == 4 and not any(r["also_failing_on_trunk"] for r in rows)
    assert (cache.misses, cache.hits) == (0, 0)
    saved = load("oot_pr_results").run(warehouse, {"upstream_repo": UPSTREAM, "pr": 100})
    assert any(r["also_failing_on_trunk"] for r in saved)  # "test" fails on trunk, but passed here
    assert rendered(view_of(rows, 100)) == rendered(view_of(saved, 100))
    # the PR's "test" fails: now the trunk is read, for that backend only
    warehouse.insert_job_rows([row(record(pr=100, job="test", conclusion="failure", attempt=2))])
    rows = fetch_pr_rows(warehouse, UPSTREAM, 100, trunk=cache)
    assert {r["job_name"] for r in rows if r["also_failing_on_trunk"]} == {"test"}
    assert cache.misses == 1


def _r(sha: str, backend: str, job: str, attempt: int, status: str, conclusion: str | None, *,
       level: str = "L4", at: datetime = NOW) -> dict[str, Any]:
    return {"head_sha": sha, "downstream_repo": backend, "downstream_level": level, "workflow_name": "ci",
            "job_name": job, "run_attempt": attempt, "status": status, "conclusion": conclusion,
            "first_received_at": at, "received_at": at}


def test_backends_needing_trunk_are_shown_ones_with_a_failed_final_attempt() -> None:
    earlier = NOW - timedelta(hours=1)
    assert backends_needing_trunk([]) == set()
    assert backends_needing_trunk([
        _r("s1", "a/fail", "test", 1, "completed", "failure"),
        _r("s1", "b/timed-out", "test", 1, "completed", "timed_out", level="L2"),
        _r("s1", "c/rerun-passed", "test", 1, "completed", "failure"),
        _r("s1", "c/rerun-passed", "test", 2, "completed", "success"),
        _r("s1", "d/one-leg-failed", "test", 2, "completed", "success"),
        _r("s1", "d/one-leg-failed", "test", 2, "completed", "failure"),
        _r("s1", "d/one-leg-failed", "test", 2, "completed", "success"),
        _r("s1", "e/running", "test", 1, "in_progress", None),
        _r("s1", "f/cancelled", "test", 1, "completed", "cancelled"),
        _r("s1", "g/old-head-failed", "test", 1, "completed", "failure"),
        _r("s2", "g/old-head-failed", "test", 2, "completed", "success"),  # another head: its own job
        _r("s1", "h/rerun-running", "test", 1, "completed", "failure"),
        _r("s1", "h/rerun-running", "test", 2, "in_progress", ""),
        _r("s1", "i/onboarding", "test", 1, "completed", "failure", level="L1"),  # never shown
        _r("s1", "j/now-l1", "test", 1, "completed", "failure", level="L3", at=earlier),  # newest record: L1
        _r("s1", "j/now-l1", "lint", 1, "completed", "success", level="L1"),
        _r("s1", "k/no-level", "test", 1, "completed", "failure", level=""),
        _r("s1", "l/l3", "test", 1, "completed", "failure", level="L3"),
    ]) == {"a/fail", "b/timed-out", "d/one-leg-failed", "g/old-head-failed", "l/l3"}
