"""The trunk baseline defined once (view ``oot_trunk_failing``) and the PR path's cache of it
(``sql.pr_results``): same flags as the saved query, changes seen through the fingerprint, TTL, bounds."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest

from sql import pr_results
from sql.pr_results import TrunkFailingCache, backends_needing_trunk, fetch_pr_rows, trunk_failing_cache
from sql.records import JobRecord, item_to_row
from sql.saved import load
from sql.warehouse import Warehouse
from tests.readpath_data import NOW, PRS, random_history, record, row
from tests.test_pr_view import PR, PR_FIXTURES, TRUNK_FIXTURES, ingest

UPSTREAM = "pytorch/pytorch"
Job = tuple[str, str, str]


def saved_flags(warehouse: Warehouse, pr: int, upstream: str = UPSTREAM, *,
                narrowed: bool = True) -> list[tuple[str, int]]:
    """The saved query's flags; ``narrowed``: as ``fetch_pr_rows`` promises them (exact on the rows of backends
    with a failed final job, ``backends_needing_trunk``; 0 elsewhere, where the PR view never reads them)."""
    rows = load("oot_pr_results").run(warehouse, {"upstream_repo": upstream, "pr": pr})
    needing = backends_needing_trunk(rows) if narrowed else {r["downstream_repo"] for r in rows}
    return [(r["key"], r["also_failing_on_trunk"] if r["downstream_repo"] in needing else 0) for r in rows]


def cached_flags(warehouse: Warehouse, pr: int, cache: TrunkFailingCache | None = None,
                 upstream: str = UPSTREAM) -> list[tuple[str, int]]:
    return [(r["key"], r["also_failing_on_trunk"]) for r in fetch_pr_rows(warehouse, upstream, pr, trunk=cache)]


def flagged(warehouse: Warehouse, pr: int, cache: TrunkFailingCache) -> set[str]:
    return {key for key, flag in cached_flags(warehouse, pr, cache) if flag}


def trunk_record(job: str, conclusion: str, sha: str, at: datetime, *, workflow: str = "ci",
                 backend: str = "acme/torch-acme", attempt: int = 1) -> JobRecord:
    return record(pr=0, sha=sha, job=job, workflow=workflow, backend=backend, conclusion=conclusion,
                  received=at, attempt=attempt)


def trunk(job: str, conclusion: str, sha: str, at: datetime, **kw: Any) -> list[Any]:
    return row(trunk_record(job, conclusion, sha, at, **kw))


def pr_job(job: str, conclusion: str = "failure", *, workflow: str = "ci", backend: str = "acme/torch-acme",
           pr: int = 100) -> list[Any]:
    return row(record(pr=pr, job=job, workflow=workflow, backend=backend, conclusion=conclusion))


# ---- the view and the schema ----------------------------------------------------------------------------

def test_views_exist_after_applying_the_schema_twice_and_a_stale_definition_is_replaced(
        warehouse: Warehouse) -> None:
    warehouse.apply_schema()  # the fixture applied it once already
    engines = {r["name"]: r["engine"] for r in warehouse.query(
        "SELECT name, engine FROM system.tables WHERE database = currentDatabase()")}
    assert engines["oot_trunk_failing"] == "View" and engines["oot_pr_rows"] == "View"
    warehouse.insert_job_rows([trunk("test", "failure", "c" * 40, NOW)])
    expected = load("oot_trunk_failing").run(warehouse, {"upstream_repo": UPSTREAM})
    assert expected == [{"downstream_repo": "acme/torch-acme", "workflow_name": "ci", "job_name": "test"}]
    # An older definition in the database (a data dir from a previous release) is replaced on the next start.
    warehouse.command("CREATE OR REPLACE VIEW oot_trunk_failing AS SELECT downstream_repo, workflow_name, "
                      "job_name FROM oot_job_results WHERE upstream_repo = {upstream_repo:String} AND 0")
    assert load("oot_trunk_failing").run(warehouse, {"upstream_repo": UPSTREAM}) == []
    warehouse.apply_schema()
    assert load("oot_trunk_failing").run(warehouse, {"upstream_repo": UPSTREAM}) == expected


def test_parameterized_view_takes_a_bound_parameter(warehouse: Warehouse) -> None:
    warehouse.insert_job_rows([trunk("test", "failure", "c" * 40, NOW),
                               row(record(pr=0, sha="d" * 40, conclusion="failure", upstream="other/repo"))])
    direct = warehouse.query("SELECT job_name FROM oot_trunk_failing(upstream_repo = 'pytorch/pytorch')")
    bound = warehouse.query("SELECT job_name FROM oot_trunk_failing(upstream_repo = {u:String})",
                            {"u": UPSTREAM})
    assert direct == bound == [{"job_name": "test"}]
    assert warehouse.query("SELECT job_name FROM oot_trunk_failing(upstream_repo = {u:String})",
                           {"u": "nobody/nothing"}) == []


# ---- the cache gives the saved query's flags --------------------------------------------------------------

async def test_cache_flags_equal_the_saved_query_on_the_fixtures(warehouse: Warehouse) -> None:
    await ingest(warehouse, [*PR_FIXTURES, *TRUNK_FIXTURES])
    cache = TrunkFailingCache()
    assert cached_flags(warehouse, PR, cache) == saved_flags(warehouse, PR)
    assert any(flag for _, flag in saved_flags(warehouse, PR, narrowed=False)), "a job failing on trunk"
    assert cached_flags(warehouse, PR, cache) == saved_flags(warehouse, PR)  # and from the cache
    assert (cache.misses, cache.hits) == (1, 1)


def reference_trunk_failing(live: list[JobRecord], upstream: str) -> set[Job]:
    """The policy in plain Python: per (backend, workflow) the trunk delivery(ies) that finished last; a job
    fails when its highest attempt there has a failed or timed-out leg."""
    deliveries: dict[tuple[str, str, str], list[JobRecord]] = defaultdict(list)
    for rec in live:
        if rec.upstream_repo == upstream and rec.pr_number == 0 and rec.status == "completed":
            deliveries[(rec.downstream_repo, rec.workflow_name, rec.delivery_id)].append(rec)

    def finish(recs: list[JobRecord]) -> datetime:
        return max(r.completed_at or r.received_at for r in recs)

    latest: dict[tuple[str, str], datetime] = {}
    for (backend, workflow, _), recs in deliveries.items():
        latest[(backend, workflow)] = max(latest.get((backend, workflow), finish(recs)), finish(recs))
    code: dict[Job, int] = {}
    for (backend, workflow, _), recs in deliveries.items():
        if finish(recs) != latest[(backend, workflow)]:
            continue
        for r in recs:
            job = (backend, workflow, r.job_name)
            code[job] = max(code.get(job, 0), r.run_attempt * 2 + (r.conclusion in ("failure", "timed_out")))
    return {job for job, c in code.items() if c % 2}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cache_flags_equal_the_saved_query_and_the_policy_on_random_histories(warehouse: Warehouse,
                                                                               seed: int) -> None:
    live = random_history(warehouse, seed)
    cache = TrunkFailingCache()
    flagged_rows = 0
    for upstream in (UPSTREAM, "other/upstream"):
        expected = reference_trunk_failing(live, upstream)
        assert expected, "the history must have jobs failing on trunk"
        assert cache.failing(warehouse, upstream) == expected
        for pr in PRS:
            assert cached_flags(warehouse, pr, cache, upstream) == saved_flags(warehouse, pr, upstream)
            flagged_rows += sum(flag for _, flag in saved_flags(warehouse, pr, upstream))
            assert {k for k, f in saved_flags(warehouse, pr, upstream, narrowed=False) if f} == {
                r.key for r in live if r.pr_number == pr and r.upstream_repo == upstream
                and (r.downstream_repo, r.workflow_name, r.job_name) in expected}
    assert flagged_rows, "some PR job must be flagged"
    warehouse.command("OPTIMIZE TABLE oot_job_results FINAL")
    for upstream in (UPSTREAM, "other/upstream"):
        assert cache.failing(warehouse, upstream) == reference_trunk_failing(live, upstream)


# ---- freshness ----------------------------------------------------------------------------------------

def test_a_new_trunk_failure_and_a_trunk_fix_are_seen_on_the_next_read(warehouse: Warehouse) -> None:
    cache = TrunkFailingCache(ttl_seconds=3600)  # only the fingerprint can notice the changes
    warehouse.insert_job_rows([pr_job("test"), pr_job("build"),
                               trunk("test", "success", "1" * 40, NOW - timedelta(hours=3)),
                               trunk("build", "success", "1" * 40, NOW - timedelta(hours=3))])
    assert flagged(warehouse, 100, cache) == set()
    assert flagged(warehouse, 100, cache) == set()
    assert (cache.misses, cache.hits) == (1, 1)
    # trunk breaks: a newer delivery fails "test"
    warehouse.insert_job_rows([trunk("test", "failure", "2" * 40, NOW - timedelta(hours=2)),
                               trunk("build", "success", "2" * 40, NOW - timedelta(hours=2))])
    assert flagged(warehouse, 100, cache) == {record(pr=100, job="test").key}
    assert cache.misses == 2
    # trunk is fixed: a re-run (attempt 2) of the same delivery passes
    fix = trunk_record("test", "success", "2" * 40, NOW - timedelta(hours=1), attempt=2)
    warehouse.insert_job_rows([row(fix)])
    assert flagged(warehouse, 100, cache) == set()
    assert flagged(warehouse, 100, cache) == set()
    assert (cache.misses, cache.hits) == (3, 2)
    # the fix is deleted (a tombstone, as the replicator writes for a DynamoDB REMOVE): failing again
    warehouse.insert_job_rows([item_to_row(fix.present_fields(), deleted=True, version=2**62)])
    assert flagged(warehouse, 100, cache) == {record(pr=100, job="test").key}
    assert cached_flags(warehouse, 100, cache) == saved_flags(warehouse, 100)
    assert cache.misses == 4


def test_only_trunk_rows_of_that_repo_invalidate(warehouse: Warehouse) -> None:
    cache = TrunkFailingCache(ttl_seconds=3600)
    warehouse.insert_job_rows([pr_job("test"), trunk("test", "failure", "1" * 40, NOW)])
    flagged(warehouse, 100, cache)
    warehouse.insert_job_rows([pr_job("other", pr=102),  # PR rows and another upstream's trunk
                               row(record(pr=0, sha="e" * 40, conclusion="failure", upstream="other/repo"))])
    assert len(flagged(warehouse, 100, cache)) == 1
    assert (cache.misses, cache.hits) == (1, 1)


def test_ttl_bounds_staleness_even_when_the_fingerprint_misses_a_change(
        warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    cache = TrunkFailingCache(ttl_seconds=60, clock=lambda: now[0])
    # A fingerprint that never changes: only the TTL can bring the change in.
    monkeypatch.setattr(pr_results, "TRUNK_FINGERPRINT_SQL", "SELECT 1 AS n")
    warehouse.insert_job_rows([pr_job("test"), trunk("test", "success", "1" * 40, NOW - timedelta(hours=2))])
    assert flagged(warehouse, 100, cache) == set()
    warehouse.insert_job_rows([trunk("test", "failure", "2" * 40, NOW - timedelta(hours=1))])
    now[0] += 59.9
    assert flagged(warehouse, 100, cache) == set()  # stale, within the TTL
    assert (cache.misses, cache.hits) == (1, 1)
    now[0] += 0.2
    assert len(flagged(warehouse, 100, cache)) == 1  # expired: fetched again
    assert cache.misses == 2
    now[0] += 30
    assert len(flagged(warehouse, 100, cache)) == 1  # the renewed entry counts from its own fetch
    assert (cache.misses, cache.hits) == (2, 2)


# ---- sharing, bounds, threads -------------------------------------------------------------------------

def test_one_cache_per_warehouse_used_by_default(warehouse: Warehouse) -> None:
    cache = trunk_failing_cache(warehouse)
    assert trunk_failing_cache(warehouse) is cache
    warehouse.insert_job_rows([pr_job("test"), trunk("test", "failure", "1" * 40, NOW)])
    before = (cache.misses, cache.hits)
    for _ in range(3):
        assert cached_flags(warehouse, 100) == saved_flags(warehouse, 100)
    assert (cache.misses - before[0], cache.hits - before[1]) == (1, 2)
    assert fetch_pr_rows(warehouse, UPSTREAM, 999) == []  # no rows: the trunk is not even looked at
    assert cache.misses + cache.hits == before[0] + before[1] + 3


def test_filled_per_backend_on_demand(warehouse: Warehouse) -> None:
    warehouse.insert_job_rows([pr_job("test", backend="acme/a"), pr_job("test", backend="acme/b", pr=101),
                               pr_job("test", backend="acme/a", pr=102), pr_job("test", backend="acme/b", pr=102),
                               trunk("test", "failure", "1" * 40, NOW, backend="acme/a"),
                               trunk("test", "failure", "1" * 40, NOW, backend="acme/b")])
    cache = TrunkFailingCache(ttl_seconds=3600)
    assert cache.failing(warehouse, UPSTREAM, ["acme/a"]) == {("acme/a", "ci", "test")}
    for pr in (100, 101, 102, 100):  # a, then b only, then both (cached), then a
        assert cached_flags(warehouse, pr, cache) == saved_flags(warehouse, pr)
    assert (cache.misses, cache.hits) == (2, 3)
    assert cache.failing(warehouse, UPSTREAM) == {("acme/a", "ci", "test"), ("acme/b", "ci", "test")}
    assert cache.failing(warehouse, UPSTREAM, ["acme/zz"]) == frozenset()  # complete: no fetch
    assert (cache.misses, cache.hits) == (3, 4)
    # a trunk change drops every backend's answer, not only the changed one's
    warehouse.insert_job_rows([trunk("test", "success", "2" * 40, NOW + timedelta(minutes=1), backend="acme/b")])
    assert cached_flags(warehouse, 102, cache) == saved_flags(warehouse, 102)
    assert sum(flag for _, flag in saved_flags(warehouse, 102)) == 1
    assert cache.misses == 4


def test_cache_is_bounded(warehouse: Warehouse) -> None:
    cache = TrunkFailingCache(max_repos=2)
    for upstream in ("a/one", "b/two", "c/three", "a/one"):
        cache.failing(warehouse, upstream)
    assert list(cache._entries) == ["c/three", "a/one"]
    assert cache.misses == 4


def test_concurrent_reads_agree(warehouse: Warehouse) -> None:
    warehouse.insert_job_rows([pr_job("test"), pr_job("build"), trunk("test", "failure", "1" * 40, NOW)])
    expected = saved_flags(warehouse, 100)
    cache = TrunkFailingCache()
    results: list[list[tuple[str, int]]] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(5):
                results.append(cached_flags(warehouse, 100, cache))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == 20 and all(r == expected for r in results)
    assert cache.hits + cache.misses == 20 and cache.misses <= 4
