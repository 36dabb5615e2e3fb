"""``oot_pr_results`` + ``build_pr_view`` on the real embedded engine, fed the relay fixtures through ingest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingest.extract import extract
from ingest.stores.embedded import EmbeddedStore
from renderers.markdown import check_status, render_check_run, render_pr_comment
from renderers.policy import Verdict
from renderers.pr_view import HEAD_FROM_NEWEST_RESULT, HEAD_FROM_WEBHOOK, PrView, build_pr_view, has_results
from sql.pr_results import backends_needing_trunk, fetch_pr_rows
from sql.records import item_to_row
from sql.saved import QueryParamError, load
from sql.warehouse import Warehouse
from tests.conftest import relay_payload
from tests.test_markdown import assert_golden, assert_safe_structure

PR = 170001
OLD_HEAD = "3f2a9c1d7e5b4a6f8c0d2e4f6a8b0c1d2e3f4a5b"
NEW_HEAD = "7b1e4d2c9a8f6e5d4c3b2a1908f7e6d5c4b3a291"
T0 = datetime(2026, 11, 20, 13, 30, tzinfo=UTC)
NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
PR_FIXTURES = ["01_pr_in_progress", "02_pr_completed_success", "03_pr_other_job_in_progress",
               "04_pr_other_job_failure", "05_pr_rerun_attempt2_in_progress", "06_pr_rerun_attempt2_success",
               "07_pr_l3_matrix_leg_a", "08_pr_l3_matrix_leg_b", "09_pr_l2_cancelled", "10_pr_new_head_in_progress"]
TRUNK_FIXTURES = ["11_push_trunk_failure", "13_nightly_completed_failure"]


async def ingest(warehouse: Warehouse, names: list[str], *, start: datetime = T0,
                 mutate: dict[str, Any] | None = None) -> None:
    """Post fixtures through extraction and the embedded store, one second apart (receive order = name order)."""
    store = EmbeddedStore(warehouse, commit_window_ms=0)
    await store.start()
    for i, name in enumerate(names):
        body = relay_payload(name)
        if mutate and name in mutate:
            mutate[name](body)
        await store.upsert(extract(body, received_at=start + timedelta(seconds=i)))
    await store.close()


def set_head(warehouse: Warehouse, sha: str, *, at: datetime = NOW) -> None:
    warehouse.insert("oot_pr_heads", [["pytorch/pytorch", PR, sha, "open", "main", 1, at]],
                     ["upstream_repo", "pr_number", "head_sha", "state", "base_ref", "installation_id", "updated_at"])


def view(warehouse: Warehouse, *, now: datetime = NOW) -> PrView:
    return build_pr_view(fetch_pr_rows(warehouse, "pytorch/pytorch", PR), now=now, silence_hours=6,
                         public_url="https://hud.example")


def jobs_of(v: PrView) -> dict[tuple[str, str, str], Any]:
    return {(b.downstream_repo, j.workflow, j.job): j for b in v.backends for j in b.jobs}


async def test_fixtures_current_head_is_the_newest_result(warehouse: Warehouse) -> None:
    await ingest(warehouse, [*PR_FIXTURES, *TRUNK_FIXTURES, "12_numeric_ids_variant"])
    v = view(warehouse)
    assert (v.upstream_repo, v.pr_number, v.head_sha, v.head_source) == ("pytorch/pytorch", PR, NEW_HEAD,
                                                                        HEAD_FROM_NEWEST_RESULT)
    assert [(b.downstream_repo, b.level) for b in v.backends] == [("acme-accel/torch-acme", "L4")]
    (job,) = v.backends[0].jobs
    assert (job.job, job.verdict, job.attempt, len(job.legs)) == ("test-linux", Verdict.RUNNING, 1, 1)
    assert job.queue_time_s == 8.0
    assert check_status(v) == ("in_progress", None)
    # Everything at the older head is superseded, per backend, L4 first, never counted.
    (old,) = v.superseded
    assert old.head_sha == OLD_HEAD
    assert [(b.downstream_repo, b.level, b.verdict) for b in old.backends] == [
        ("acme-accel/torch-acme", "L4", Verdict.SUCCESS), ("contoso/pytorch-npu", "L3", Verdict.TIMED_OUT),
        ("riscv-lab/pytorch-ci", "L2", Verdict.CANCELLED)]
    assert v.totals.total == 1 and v.totals.running == 1


async def test_fixtures_with_webhook_head(warehouse: Warehouse) -> None:
    await ingest(warehouse, [*PR_FIXTURES, *TRUNK_FIXTURES, "12_numeric_ids_variant"])
    set_head(warehouse, OLD_HEAD)
    v = view(warehouse)
    assert (v.head_sha, v.head_source) == (OLD_HEAD, HEAD_FROM_WEBHOOK)
    assert [s.head_sha for s in v.superseded] == [NEW_HEAD]
    jobs = jobs_of(v)
    linux = jobs[("acme-accel/torch-acme", "acme-ci", "test-linux")]
    # 01 (in_progress) + 02 (completed) + 12 (a replay with numeric ids) are one record: one leg.
    assert (linux.verdict, linux.attempt, len(linux.legs), linux.flaky) == (Verdict.SUCCESS, 1, 1, False)
    assert (linux.tests_passed, linux.tests_failed, linux.tests_skipped) == (1203, 0, 17)
    assert linux.queue_time_s == pytest.approx(42.317) and linux.duration_s == pytest.approx(2499.6)
    assert linux.started_at == datetime(2026, 11, 20, 10, 3, 11, tzinfo=UTC)  # kept from the in_progress call
    dist = jobs[("acme-accel/torch-acme", "acme-ci", "test-distributed")]
    assert (dist.verdict, dist.attempt, dist.flaky, dist.also_failing_on_trunk) == (Verdict.SUCCESS, 2, True, False)
    npu = jobs[("contoso/pytorch-npu", "npu-ci", "test")]
    assert (npu.verdict, len(npu.legs), npu.failed_legs) == (Verdict.TIMED_OUT, 2, 1)
    assert [leg.verdict for leg in npu.legs] == [Verdict.TIMED_OUT, Verdict.SUCCESS]
    riscv = jobs[("riscv-lab/pytorch-ci", "riscv", "build")]
    assert riscv.verdict == Verdict.CANCELLED
    assert [b.level for b in v.backends] == ["L4", "L3", "L2"]
    assert check_status(v) == ("completed", "success")  # every L4 job passed (one after a re-run)
    comment = render_pr_comment(v) or ""
    assert comment.splitlines()[1] == "## ⚠️ Out-of-Tree Backends: 1 timed out · 2 passed"  # not a failure
    assert_golden("pr_comment_fixtures.md", comment)
    assert_golden("check_text_fixtures.md", render_check_run(v).text)
    assert_safe_structure(comment, main_rows=2)


async def test_also_failing_on_trunk(warehouse: Warehouse) -> None:
    # Only attempt 1 of test-distributed (a failure) on the PR, and the push run failed the same job.
    await ingest(warehouse, ["03_pr_other_job_in_progress", "04_pr_other_job_failure", *TRUNK_FIXTURES])
    dist = jobs_of(view(warehouse))[("acme-accel/torch-acme", "acme-ci", "test-distributed")]
    assert (dist.verdict, dist.also_failing_on_trunk) == (Verdict.FAILURE, True)
    assert "failed at attempt 1 · also failing on trunk" in (render_pr_comment(view(warehouse)) or "")


async def test_trunk_flag_follows_the_newest_trunk_delivery(warehouse: Warehouse) -> None:
    def newer_green_push(body: dict[str, Any]) -> None:
        cb = body["untrusted"]["callback_payload"]
        cb["delivery_id"] = "f0000000-0000-0000-0000-000000000001"
        cb["payload"]["after"] = "d" * 40
        wf = cb["workflow"]
        wf.update(conclusion="success", check_run_id="58419990002", completed_at="2026-11-20T12:00:00Z")

    await ingest(warehouse, ["04_pr_other_job_failure", "11_push_trunk_failure"])
    await ingest(warehouse, ["11_push_trunk_failure"], start=T0 + timedelta(minutes=5),
                 mutate={"11_push_trunk_failure": newer_green_push})
    dist = jobs_of(view(warehouse))[("acme-accel/torch-acme", "acme-ci", "test-distributed")]
    assert (dist.verdict, dist.also_failing_on_trunk) == (Verdict.FAILURE, False)


async def test_silence_turns_running_into_no_report(warehouse: Warehouse) -> None:
    await ingest(warehouse, ["10_pr_new_head_in_progress"])  # started 13:00
    fresh = jobs_of(view(warehouse, now=datetime(2026, 11, 20, 18, 59, tzinfo=UTC)))
    assert next(iter(fresh.values())).verdict == Verdict.RUNNING
    late = view(warehouse, now=datetime(2026, 11, 20, 19, 1, tzinfo=UTC))
    job = next(iter(jobs_of(late).values()))
    assert (job.verdict, job.silent) == (Verdict.NO_REPORT, True)
    assert check_status(late) == ("in_progress", None), "silent is pending: the gate still waits"
    given_up = view(warehouse, now=datetime(2026, 11, 21, 13, 1, tzinfo=UTC))  # 24 h after it started
    assert check_status(given_up) == ("completed", "neutral")


async def test_l1_only_pr_shows_nothing(warehouse: Warehouse) -> None:
    def to_l1(body: dict[str, Any]) -> None:
        body["trusted"]["downstream_repo_level"] = "L1"

    await ingest(warehouse, ["02_pr_completed_success"], mutate={"02_pr_completed_success": to_l1})
    v = view(warehouse)
    assert len(fetch_pr_rows(warehouse, "pytorch/pytorch", PR)) == 1  # stored...
    assert not has_results(v) and render_pr_comment(v) is None  # ...never displayed


async def test_unknown_pr_is_empty(warehouse: Warehouse) -> None:
    await ingest(warehouse, PR_FIXTURES)
    assert fetch_pr_rows(warehouse, "pytorch/pytorch", 1) == []
    assert fetch_pr_rows(warehouse, "other/repo", PR) == []
    v = build_pr_view([], now=NOW, silence_hours=6, public_url="https://hud.example",
                      upstream_repo="pytorch/pytorch", pr_number=1)
    assert (v.head_sha, v.backends, v.superseded, has_results(v)) == ("", (), (), False)


def test_results_are_the_same_merged_or_not(warehouse: Warehouse) -> None:
    """Rows inserted in several parts, with replays and versions out of order, read the same before and
    after the table merges."""
    base = {"downstream_repo": "acme/x", "downstream_level": "L4", "event_type": "pull_request",
            "delivery_id": "d1", "upstream_repo": "pytorch/pytorch", "pr_number": PR, "head_sha": OLD_HEAD,
            "workflow_name": "ci", "job_name": "test", "run_id": "9", "first_received_at": "2026-11-20T10:00:00Z"}
    running = {**base, "status": "in_progress", "received_at": "2026-11-20T10:00:00Z",
               "started_at": "2026-11-20T10:00:00Z"}
    done = {**running, "status": "completed", "conclusion": "failure", "received_at": "2026-11-20T10:30:00Z",
            "completed_at": "2026-11-20T10:30:00Z", "tests_failed": 3}
    parts = [
        [item_to_row({**done, "key": "k1", "check_run_id": "1", "run_attempt": 1}, version=2)],
        [item_to_row({**running, "key": "k1", "check_run_id": "1", "run_attempt": 1}, version=1)],  # late, older
        [item_to_row({**running, "key": "k2", "check_run_id": "2", "run_attempt": 2}, version=1)],
        [item_to_row({**done, "key": "k2", "check_run_id": "2", "run_attempt": 2, "conclusion": "success"},
                     version=2)],
        [item_to_row({**done, "key": "k2", "check_run_id": "2", "run_attempt": 2, "conclusion": "success"},
                     version=2)],  # replay
        [item_to_row({**running, "key": "k3", "check_run_id": "3", "run_attempt": 2}, version=1)],
        [item_to_row({**running, "key": "k3", "check_run_id": "3", "run_attempt": 2}, deleted=True, version=5)],
    ]
    for part in parts:
        warehouse.insert_job_rows(part)
    before = fetch_pr_rows(warehouse, "pytorch/pytorch", PR)
    warehouse.command("OPTIMIZE TABLE oot_job_results FINAL")
    after = fetch_pr_rows(warehouse, "pytorch/pytorch", PR)
    assert before == after
    assert sorted((r["key"], r["status"], r["conclusion"]) for r in after) == [
        ("k1", "completed", "failure"), ("k2", "completed", "success")]  # k3's tombstone hides it
    job = jobs_of(build_pr_view(after, now=NOW, silence_hours=6, public_url="https://h"))[("acme/x", "ci", "test")]
    assert (job.verdict, job.attempt, job.flaky) == (Verdict.SUCCESS, 2, True)


def test_query_parameters_are_checked(warehouse: Warehouse) -> None:
    query = load("oot_pr_results")
    for sample in query.tests:
        assert isinstance(query.run(warehouse, sample), list)
    for bad in ({"upstream_repo": "pytorch/pytorch", "pr": -1}, {"upstream_repo": "pytorch/pytorch", "pr": "7"},
                {"upstream_repo": "pytorch/pytorch"}, {"upstream_repo": 1, "pr": 1},
                {"upstream_repo": "pytorch/pytorch", "pr": 1, "extra": 2}):
        with pytest.raises(QueryParamError):
            query.run(warehouse, bad)


async def test_fetch_gives_aware_times_and_the_same_view_as_the_saved_query(warehouse: Warehouse) -> None:
    """``fetch_pr_rows`` reads with timezone-aware datetimes (``Warehouse.query_aware``; the view skips a
    conversion per value); the rows and the view equal those from the saved query's naive rows."""
    await ingest(warehouse, [*PR_FIXTURES, *TRUNK_FIXTURES])
    aware = fetch_pr_rows(warehouse, "pytorch/pytorch", PR)
    naive = load("oot_pr_results").run(warehouse, {"upstream_repo": "pytorch/pytorch", "pr": PR})
    assert aware and all(row["received_at"].tzinfo is not None for row in aware)
    assert all(row["received_at"].tzinfo is None for row in naive)
    # The flag is computed where the view reads it (backends with a failed final job), 0 elsewhere.
    needing = backends_needing_trunk(naive)
    assert needing and needing != {row["downstream_repo"] for row in naive}
    assert aware == [{name: value.replace(tzinfo=UTC) if isinstance(value, datetime) else
                      value if name != "also_failing_on_trunk" or row["downstream_repo"] in needing else 0
                      for name, value in row.items()} for row in naive]
    as_view = {"now": NOW, "silence_hours": 6, "public_url": "https://hud.example"}
    assert build_pr_view(aware, **as_view) == build_pr_view(naive, **as_view)
