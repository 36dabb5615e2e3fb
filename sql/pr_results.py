"""Fetch one PR's rows for the PR view (the only I/O of the PR path): the body of view ``oot_pr_rows`` plus
the "also failing on trunk" flag from a per-warehouse cache of the trunk-failing set (view ``oot_trunk_failing``).
Both views' bodies run inline, read from their schema files (one definition, no per-query view planning)."""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from typing import Any, NamedTuple

from policy.pr_rows import backends_needing_trunk
from sql.saved import load
from sql.warehouse import Warehouse

log = logging.getLogger("sql.pr_results")

PR_ROWS_QUERY = "oot_pr_rows"
TRUNK_FAILING_QUERY = "oot_trunk_failing"
TTL_SECONDS = 60.0
MAX_REPOS = 64
# Changes whenever a trunk row is inserted (a new row: count + 1; ingest stamps received_at on receipt, so
# the newest trunk row also moves the max). Without FINAL on purpose: a merge only changes the count, which
# costs one miss. The primary key's prefix confines the read to the trunk rows (~4 ms on 83,000 of them).
TRUNK_FINGERPRINT_SQL = ("SELECT count() AS n, max(received_at) AS newest FROM oot_job_results "
                         "WHERE upstream_repo = {upstream_repo:String} AND pr_number = 0 "
                         "SETTINGS max_threads = 1, compile_expressions = 0, compile_aggregate_expressions = 0")


# The backends of a PR with any failed or timed-out row, any version (no FINAL): a superset of those whose
# flags the view reads (policy.pr_rows.backends_needing_trunk), known before the PR's rows arrive.
FAILED_BACKENDS_SQL = ("SELECT DISTINCT downstream_repo FROM oot_job_results "
                       "PREWHERE upstream_repo = {upstream_repo:String} AND pr_number = {pr:UInt64} "
                       "WHERE conclusion IN ('failure', 'timed_out') "
                       "SETTINGS max_threads = 1, compile_expressions = 0, compile_aggregate_expressions = 0")


@functools.cache
def view_body(schema_file: str, view: str) -> str:
    """The SELECT of ``CREATE OR REPLACE VIEW <view> AS`` in ``sql/schema/<schema_file>`` (up to the statement's
    end), whole-line comments and blank lines dropped (the client tokenizes the text on every call), as
    ``Warehouse.apply_schema`` reads it. Its ``{name:Type}`` parameters are the view's, bound like a query's.
    Raises ``LookupError`` when the file does not define the view."""
    text = (resources.files("sql") / "schema" / schema_file).read_text()
    head = f"CREATE OR REPLACE VIEW {view} AS"
    if head not in text:
        raise LookupError(f"{schema_file} does not define view {view}")
    lines = text.split(head, 1)[1].splitlines()
    body = "\n".join(line for line in lines if line.strip() and not line.lstrip().startswith("--"))
    return body.split(";", 1)[0].rstrip()  # the view's statement only, should another follow it


def _from(sql: str, clause: str) -> str:
    """``sql`` from its (last) ``clause`` keyword on: a saved query's ORDER BY / SETTINGS, kept in one place."""
    return sql[sql.rindex(clause):]


@functools.cache
def pr_rows_sql() -> str:
    """The saved query ``oot_pr_rows`` with the view's body in place of the view: same rows, same order, same
    settings, without the ~5 ms a parameterized view costs to plan on every call (docs/pr-view.md, round 5)."""
    return view_body("014_pr_rows.sql", "oot_pr_rows") + "\n" + _from(load(PR_ROWS_QUERY).sql, "ORDER BY")


@functools.cache
def trunk_failing_sql(narrowed: bool) -> str:
    """The saved query ``oot_trunk_failing`` with the view's body inline; ``narrowed``: only the backends in
    ``{backends:Array(String)}`` (a filter on the body's grouping key, pushed down to its read)."""
    where = " WHERE downstream_repo IN {backends:Array(String)}" if narrowed else ""
    body = view_body("013_trunk_failing.sql", "oot_trunk_failing")
    # Our own schema text and bound parameters only: nothing from a caller reaches the text.
    return (f"SELECT downstream_repo, workflow_name, job_name FROM (\n{body}\n){where}\n"  # noqa: S608
            + _from(load(TRUNK_FAILING_QUERY).sql, "SETTINGS"))


Job = tuple[str, str, str]  # (downstream_repo, workflow_name, job_name)


class Checked(NamedTuple):
    """A trunk fingerprint and when its read started (the age of what is fetched under it)."""

    fingerprint: tuple[Any, ...]
    started: float


@dataclasses.dataclass(slots=True)
class _Entry:
    """One upstream repo's trunk-failing jobs as of ``fingerprint``, for the backends looked up so far."""

    fingerprint: tuple[Any, ...]
    fetched_at: float
    by_backend: dict[str, frozenset[Job]]
    complete: bool = False  # every backend looked up (a backend absent from by_backend fails nothing)

    def missing(self, backends: frozenset[str] | None) -> frozenset[str] | None:
        """The backends still to fetch (None: all of them); empty when the entry answers."""
        if self.complete:
            return frozenset()
        return None if backends is None else backends - self.by_backend.keys()

    def select(self, backends: frozenset[str] | None) -> frozenset[Job]:
        chosen = self.by_backend.values() if backends is None else (
            self.by_backend.get(b, frozenset()) for b in backends)
        return frozenset().union(*chosen)


class TrunkFailingCache:
    """Each upstream repo's trunk-failing jobs (view ``oot_trunk_failing``), reused while the repo's trunk
    fingerprint is unchanged and the entry is younger than ``ttl_seconds`` (a bound on staleness should the
    fingerprint ever miss a change). Filled per backend on demand: a PR's render computes only its own
    backends (the rest of the entry fills as other PRs are rendered). Thread-safe (pages render in worker
    threads); at most ``max_repos`` repos, least recently used dropped. Holds no warehouse:
    ``trunk_failing_cache(warehouse)`` gives each warehouse its own cache."""

    def __init__(self, *, ttl_seconds: float = TTL_SECONDS, max_repos: int = MAX_REPOS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._max = max_repos
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, _Entry] = collections.OrderedDict()
        self.hits = 0
        self.misses = 0

    def check(self, warehouse: Warehouse, upstream_repo: str, candidates: Callable[[], Iterable[str]]) -> Checked:
        """Read ``upstream_repo``'s trunk fingerprint and, when no fresh entry is under it, fetch the sets of
        the backends ``candidates()`` names under it. Returns the fingerprint read, for
        ``failing(checked=)``, which fetches whatever a fresh entry still lacks.

        ``fetch_pr_rows`` runs this on a second connection while the PR's rows are read on the first: a miss
        then costs the longer of the two reads, not their sum."""
        checked = self._fingerprint(warehouse, upstream_repo)
        with self._lock:
            if self._fresh(upstream_repo, checked) is not None:
                return checked
        self.failing(warehouse, upstream_repo, candidates(), checked=checked)
        return checked

    def _fresh(self, upstream_repo: str, checked: Checked) -> _Entry | None:
        """The repo's entry if it is under ``checked``'s fingerprint and younger than the TTL (lock held)."""
        entry = self._entries.get(upstream_repo)
        if (entry is not None and entry.fingerprint == checked.fingerprint
                and checked.started - entry.fetched_at < self._ttl):
            return entry
        return None

    def _fingerprint(self, warehouse: Warehouse, upstream_repo: str) -> Checked:
        started = self._clock()
        row = warehouse.query(TRUNK_FINGERPRINT_SQL, {"upstream_repo": upstream_repo})[0]
        return Checked(tuple(row.values()), started)

    def failing(self, warehouse: Warehouse, upstream_repo: str, backends: Iterable[str] | None = None, *,
                checked: Checked | None = None) -> frozenset[Job]:
        """The (backend, workflow, job) triples of ``upstream_repo`` failing on trunk as the view says now,
        restricted to ``backends`` (None: every backend). ``checked``: a fingerprint ``check`` read just now
        (not read again)."""
        wanted = None if backends is None else frozenset(backends)
        # Fingerprint BEFORE the sets: a trunk change landing between the two reads leaves an entry whose sets
        # are newer than its fingerprint, so the next read misses (never a stale set under a fresh fingerprint).
        if checked is None:
            checked = self._fingerprint(warehouse, upstream_repo)
        fetch: frozenset[str] | None = wanted
        with self._lock:
            entry = self._fresh(upstream_repo, checked)
            if entry is not None:
                self._entries.move_to_end(upstream_repo)
                fetch = entry.missing(wanted)
                if fetch is not None and not fetch:
                    self.hits += 1
                    return entry.select(wanted)
            self.misses += 1
        if fetch is None:
            rows = warehouse.query(trunk_failing_sql(False), {"upstream_repo": upstream_repo})
        else:
            rows = warehouse.query(trunk_failing_sql(True), {"upstream_repo": upstream_repo,
                                                             "backends": sorted(fetch)})
        found: dict[str, set[Job]] = {backend: set() for backend in fetch or ()}
        for r in rows:
            found.setdefault(r["downstream_repo"], set()).add((r["downstream_repo"], r["workflow_name"], r["job_name"]))
        with self._lock:
            entry = self._fresh(upstream_repo, checked)
            if entry is None:
                # Replaces an expired entry or one of another fingerprint, even a newer one: that only costs the
                # next read a miss.
                entry = self._entries[upstream_repo] = _Entry(checked.fingerprint, checked.started, {})
            entry.by_backend.update((backend, frozenset(jobs)) for backend, jobs in found.items())
            entry.complete = entry.complete or fetch is None
            self._entries.move_to_end(upstream_repo)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
            return entry.select(wanted)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_caches: weakref.WeakKeyDictionary[Warehouse, TrunkFailingCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def trunk_failing_cache(warehouse: Warehouse) -> TrunkFailingCache:
    """The one cache of ``warehouse`` (the bot and the PR page hold the same warehouse, so they share it);
    it goes away with the warehouse object."""
    with _caches_lock:
        cache = _caches.get(warehouse)
        if cache is None:
            cache = _caches[warehouse] = TrunkFailingCache()
        return cache


def failed_backends(warehouse: Warehouse, upstream_repo: str, pr_number: int) -> list[str]:
    """The PR's backends with a failed or timed-out row (``FAILED_BACKENDS_SQL``)."""
    rows = warehouse.query(FAILED_BACKENDS_SQL, {"upstream_repo": upstream_repo, "pr": pr_number})
    return [row["downstream_repo"] for row in rows]


def fetch_pr_rows(warehouse: Warehouse, upstream_repo: str, pr_number: int, *,
                  trunk: TrunkFailingCache | None = None) -> list[dict[str, Any]]:
    """Every record row of ``upstream_repo`` PR ``pr_number`` (all head SHAs) with the current head SHA and
    the "also failing on trunk" flag: the rows of the saved query ``oot_pr_results``, in its order, with
    timezone-aware times. ``trunk`` defaults to the warehouse's cache. Blocking: call it from a thread.

    The flag is computed only where the PR view reads it: for every row of a shown backend with a job whose
    final attempt failed or timed out (``policy.pr_rows.backends_needing_trunk``); it is 0 on the other
    backends' rows (the view never asks whether a job that did not fail is "also" failing on trunk), and a PR
    without such a job skips the trunk entirely. So ``build_pr_view`` gives the same view as from
    ``oot_pr_results`` rows (tested), and a cold render computes the trunk baseline of fewer backends.

    Raises ``sql.saved.QueryParamError`` for an invalid repo/number and ``WarehouseError`` when the
    warehouse fails. Feed the result to ``renderers.pr_view.build_pr_view``.
    """
    params = load(PR_ROWS_QUERY).bind({"upstream_repo": upstream_repo, "pr": pr_number})
    repo = params["upstream_repo"]
    cache = trunk if trunk is not None else trunk_failing_cache(warehouse)
    side = warehouse.side_reader()
    # The trunk's fingerprint (and, on a miss, the sets of the PR's backends with a failed row) on the second
    # connection while the PR's rows are read on this one.
    checking = None
    if side is not None:
        checking = _checks().submit(cache.check, side, repo,
                                    functools.partial(failed_backends, side, repo, params["pr"]))
    try:
        # Timezone-aware times straight from the driver: the view would otherwise attach UTC to every value.
        rows = warehouse.query_aware(pr_rows_sql(), params)
    except BaseException:
        if checking is not None:
            checking.add_done_callback(_log_failed_check)
        raise
    needing = backends_needing_trunk(rows)
    failing: frozenset[Job] = frozenset()
    if needing:
        checked = checking.result() if checking is not None else None
        failing = cache.failing(warehouse, repo, needing, checked=checked)
    elif checking is not None:
        checking.add_done_callback(_log_failed_check)  # nothing to wait for: it only warms the cache
    for row in rows:
        row["also_failing_on_trunk"] = int((row["downstream_repo"], row["workflow_name"], row["job_name"]) in failing)
    return rows


@functools.cache
def _checks() -> ThreadPoolExecutor:
    """The threads that check the trunk beside a PR read (one per concurrent render is plenty)."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="trunk-check")


def _log_failed_check(done: Future[Checked]) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("trunk check failed: %s", type(done.exception()).__name__)
