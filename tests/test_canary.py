"""The relay's canary (issue 12 §3): the expected-outcome rule, table-driven, in Python (``policy.canary``) and
in SQL (``oot_canary_health``) against one table; the silent / degraded / healthy states; the summary's line."""

from __future__ import annotations

from datetime import timedelta

import pytest

from policy.canary import as_expected
from renderers.frame import Site
from renderers.health import CanaryPr, build_health, canary_state
from sql.saved import load
from sql.warehouse import Warehouse
from tests.readpath_data import NOW, record, row

CANARY = "pytorch/crcr-test"

# (job name, status, conclusion, expected?)  None: not judged yet (pending)
RULES = [
    ("build", "completed", "success", True),
    ("build", "completed", "failure", False),
    ("build", "completed", "cancelled", False),
    ("build", "completed", "timed_out", False),
    ("build", "completed", "skipped", False),
    ("test-xfail", "completed", "failure", True),
    ("test-xfail", "completed", "success", False),  # stricter than upstream: a marked job that passes is not
    ("test-xfail", "completed", "timed_out", False),
    ("XFAIL_upper", "completed", "failure", True),  # ASCII case ignored
    ("job-xcancel", "completed", "cancelled", True),
    ("job-xcancel", "completed", "failure", False),
    ("job-xcancel", "completed", "success", False),
    ("sleep-xtimeout", "completed", "timed_out", True),
    ("sleep-xtimeout", "completed", "cancelled", False),
    ("xfail-or-xtimeout", "completed", "timed_out", True),  # several markers: any of their outcomes
    ("xfail-or-xtimeout", "completed", "failure", True),
    ("xfail-or-xtimeout", "completed", "success", False),
    ("ünïcode-xfail", "completed", "failure", True),
    ("xfai l", "completed", "failure", False),  # not a marker: a plain job
    ("test-xfail", "in_progress", "", None),
    ("build", "queued", "", None),
]


@pytest.mark.parametrize(("job", "status", "conclusion", "expected"), RULES)
def test_expected_outcome_rule(job: str, status: str, conclusion: str, expected: bool | None) -> None:
    assert as_expected(job, status, conclusion) is expected


def health(warehouse: Warehouse, **given: object) -> list[dict]:
    params = {"repos": [CANARY], "prs": 50, "days": 30, "now": NOW.isoformat(), "silence_hours": 6.0, **given}
    return load("oot_canary_health").run(warehouse, params)


def test_the_saved_query_applies_the_same_rule(warehouse: Warehouse) -> None:
    # one PR per rule, so each row of the table is judged alone
    rows = [row(record(backend=CANARY, pr=1000 + i, sha=f"{i:040x}", job=job, status=status,
                       conclusion=conclusion or None, received=NOW - timedelta(minutes=len(RULES) - i)))
            for i, (job, status, conclusion, _) in enumerate(RULES)]
    warehouse.insert_job_rows(rows)
    found = {int(r["pr_number"]): r for r in health(warehouse)}
    assert len(found) == len(RULES)
    for i, (job, _, conclusion, expected) in enumerate(RULES):
        got = found[1000 + i]
        assert (got["expected"], got["unexpected"], got["pending"]) == (
            int(expected is True), int(expected is False), int(expected is None)), (job, conclusion)
        assert list(got["unexpected_jobs"]) == ([job] if expected is False else [])
        assert got["last_report"] == NOW.replace(tzinfo=None) - timedelta(minutes=1)


def test_final_attempt_newest_head_silence_and_the_newest_prs(warehouse: Warehouse) -> None:
    old, new = "1" * 40, "2" * 40
    warehouse.insert_job_rows([row(r) for r in [
        # PR 1: the older head failed unexpectedly; the newest head's re-run came back as expected
        record(backend=CANARY, pr=1, sha=old, job="build", conclusion="failure", received=NOW - timedelta(hours=5)),
        record(backend=CANARY, pr=1, sha=new, job="t-xfail", conclusion="success", received=NOW - timedelta(hours=4)),
        record(backend=CANARY, pr=1, sha=new, job="t-xfail", attempt=2, conclusion="failure",
               received=NOW - timedelta(hours=3)),
        # PR 2: a job silent past the window never came back; one still running within it is pending
        record(backend=CANARY, pr=2, sha=new, job="gone", status="in_progress", received=NOW - timedelta(hours=7)),
        record(backend=CANARY, pr=2, sha=new, job="busy", status="in_progress", received=NOW - timedelta(hours=2)),
        # PR 3: an ordinary backend's results never count for the canary
        record(backend="acme/torch-acme", pr=3, job="build", conclusion="failure", received=NOW),
        # a trunk run is a report (last_report) but no PR
        record(backend=CANARY, pr=0, sha=new, job="nightly-xfail", conclusion="failure",
               received=NOW - timedelta(minutes=30)),
    ]])
    found = health(warehouse)
    assert [(r["pr_number"], r["expected"], r["pending"], r["unexpected"], list(r["unexpected_jobs"]))
            for r in found] == [(2, 0, 1, 1, ["gone"]), (1, 1, 0, 0, [])]  # newest PR first
    assert found[1]["head_sha"] == new and found[1]["last_report"] == NOW.replace(tzinfo=None) - timedelta(minutes=30)
    assert [r["pr_number"] for r in health(warehouse, prs=1)] == [2]  # the newest PR only
    # an unknown canary: one row, nothing reported
    [ghost] = health(warehouse, repos=["no/such-canary"])
    assert ghost["canary"] == "no/such-canary" and ghost["last_report"] is None and ghost["pr_number"] == 0


def pr(number: int, *, expected: int = 1, pending: int = 0, unexpected: int = 0) -> CanaryPr:
    return CanaryPr("pytorch/pytorch", number, None, NOW, expected + pending + unexpected, expected, pending,
                    unexpected, ("x",) * unexpected)


# (hours since the last report or None, the newest PRs, state)
STATES = [
    (None, [], "silent"),  # never reported in the window
    (7, [pr(1)], "silent"),  # reported, but longer ago than the silence window (6 h): red even if PRs were fine
    (1, [pr(1), pr(2, expected=3, unexpected=1)], "degraded"),
    (1, [pr(1), pr(2, expected=0, pending=2)], "healthy"),  # pending PRs are not judged
    (1, [pr(1, expected=0, pending=1)], "waiting"),
    (1, [], "waiting"),  # reports (trunk), no PR yet
    (5.9, [pr(1), pr(2)], "healthy"),
]


@pytest.mark.parametrize(("hours", "prs", "state"), STATES)
def test_canary_states(hours: float | None, prs: list[CanaryPr], state: str) -> None:
    last = None if hours is None else NOW - timedelta(hours=hours)
    assert canary_state(last, prs, now=NOW, silence_hours=6) == state


def test_health_groups_rows_worst_first() -> None:
    rows = [
        {"canary": "a/ok", "last_report": NOW - timedelta(hours=1), "upstream_repo": "pytorch/pytorch",
         "pr_number": 5, "pr_at": NOW, "jobs": 3, "expected": 3, "pending": 0, "unexpected": 0, "unexpected_jobs": []},
        {"canary": "b/down", "last_report": None, "upstream_repo": "", "pr_number": 0, "pr_at": None, "jobs": 0,
         "expected": 0, "pending": 0, "unexpected": 0, "unexpected_jobs": []},
    ]
    line = build_health(rows, now=NOW, silence_hours=6, site=Site(), recent_prs=5, window_days=30, days=7)
    assert [(c.repo, c.state, c.colour, len(c.prs)) for c in line.canaries] == [
        ("b/down", "silent", "red", 0), ("a/ok", "healthy", "green", 1)]
    assert line.state == "silent" and line.canaries[1].href == "/oot/a/ok?days=7"
    assert line.canaries[1].prs[0].href == "/oot/pr/pytorch/pytorch/5"
