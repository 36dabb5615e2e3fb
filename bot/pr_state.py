"""The bot's warehouse bookkeeping: PR heads (``oot_pr_heads``), SHA -> PR, installations per repository.

Blocking (the warehouse is): async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime
from typing import Any

from sql.bot_state import Watermark
from sql.records import PrRef, as_utc, parse_time
from sql.warehouse import Warehouse

PR_HEADS_TABLE = "oot_pr_heads"
INSTALLATIONS_TABLE = "oot_installations"
PR_HEAD_COLUMNS = ("upstream_repo", "pr_number", "head_sha", "state", "base_ref", "installation_id", "updated_at",
                   "title", "author", "labels")
INSTALLATION_COLUMNS = ("repo", "installation_id", "account", "removed", "updated_at")


@dataclasses.dataclass(frozen=True, slots=True)
class PrHead:
    """A PR's head (and title, author, labels) as GitHub reported it in a ``pull_request`` webhook."""

    upstream_repo: str
    pr_number: int
    head_sha: str
    state: str  # "open" or "closed"
    base_ref: str
    installation_id: int
    updated_at: datetime
    title: str = ""  # untrusted (anyone can open a PR): escaped wherever shown
    author: str = ""  # the PR author's login, untrusted too
    labels: tuple[str, ...] = ()  # the PR's label names, untrusted too


def when(value: Any, default: datetime | None = None) -> datetime:
    """A webhook timestamp (ISO string) as an aware UTC datetime; ``default``/now when absent or bad."""
    if isinstance(value, str) and value:
        try:
            return parse_time(value)
        except ValueError:
            pass
    return default or datetime.now(UTC)


class PrState:
    """Reads and writes the bot's two small tables; installations are also kept in memory."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self._installations: dict[str, int] = {}
        self._lock = threading.Lock()
        self._loaded = False

    # --- PR heads ----------------------------------------------------------------------------------
    def record_head(self, head: PrHead) -> None:
        row = [head.upstream_repo, head.pr_number, head.head_sha, head.state, head.base_ref,
               head.installation_id, head.updated_at, head.title, head.author, list(head.labels)]
        self._warehouse.insert(PR_HEADS_TABLE, [row], PR_HEAD_COLUMNS)
        if head.installation_id:
            with self._lock:
                self._installations[head.upstream_repo] = head.installation_id  # newest webhook wins

    def head(self, upstream_repo: str, pr_number: int) -> PrHead | None:
        rows = self._warehouse.query(
            "SELECT argMax(head_sha, updated_at) AS sha, argMax(state, updated_at) AS st,"
            " argMax(base_ref, updated_at) AS base, argMax(installation_id, updated_at) AS inst,"
            " max(updated_at) AS last_update, argMax(title, updated_at) AS title, argMax(author, updated_at) AS author,"
            " argMax(labels, updated_at) AS labels"
            " FROM oot_pr_heads WHERE upstream_repo = {repo:String} AND pr_number = {pr:UInt64}"
            " GROUP BY upstream_repo, pr_number",
            {"repo": upstream_repo, "pr": pr_number})
        if not rows:
            return None
        row = rows[0]
        return PrHead(upstream_repo, pr_number, str(row["sha"]), str(row["st"]), str(row["base"]), int(row["inst"]),
                      as_utc(row["last_update"]), str(row["title"]), str(row["author"]),
                      tuple(str(label) for label in row["labels"]))

    def prs_for_sha(self, upstream_repo: str, head_sha: str) -> list[int]:
        """PRs whose head (from webhooks) or results carry ``head_sha`` (fork PRs: GitHub does not say)."""
        rows = self._warehouse.query(
            "SELECT pr_number FROM (SELECT pr_number, argMax(head_sha, updated_at) AS sha FROM oot_pr_heads"
            " WHERE upstream_repo = {repo:String} GROUP BY pr_number) WHERE sha = {sha:String}"
            " UNION DISTINCT SELECT DISTINCT pr_number FROM oot_job_results"
            " WHERE upstream_repo = {repo:String} AND head_sha = {sha:String} AND pr_number > 0",
            {"repo": upstream_repo, "sha": head_sha})
        return sorted({int(row["pr_number"]) for row in rows if int(row["pr_number"]) > 0})

    def open_prs_with_results(self, days: int) -> list[PrRef]:
        """PRs with a result received in the last ``days`` days that no webhook has reported closed."""
        rows = self._warehouse.query(
            "SELECT DISTINCT upstream_repo, pr_number FROM oot_job_results"
            " WHERE pr_number > 0 AND received_at >= now64(3) - toIntervalDay({days:UInt32})"
            " AND (upstream_repo, pr_number) NOT IN (SELECT upstream_repo, pr_number FROM oot_pr_heads"
            " GROUP BY upstream_repo, pr_number HAVING argMax(state, updated_at) = 'closed')"
            " ORDER BY upstream_repo, pr_number", {"days": days})
        return [PrRef(str(row["upstream_repo"]), int(row["pr_number"])) for row in rows]

    def shows(self, upstream_repo: str, pr_number: int, watermark: Watermark) -> bool:
        """Whether the warehouse has the announced row (its key at that version or newer) for this PR."""
        rows = self._warehouse.query(
            "SELECT count() AS n FROM oot_job_results WHERE upstream_repo = {repo:String}"
            " AND pr_number = {pr:UInt64} AND key = {key:String} AND version >= {version:UInt64}",
            {"repo": upstream_repo, "pr": pr_number, "key": watermark.key, "version": watermark.version})
        return bool(rows) and int(rows[0]["n"]) > 0

    # --- installations -----------------------------------------------------------------------------
    def load_installations(self) -> None:
        rows = self._warehouse.query(
            "SELECT repo, argMax(installation_id, updated_at) AS inst,"
            " argMax(removed, updated_at) AS gone FROM oot_installations GROUP BY repo")
        with self._lock:
            for row in rows:
                if int(row["gone"]):
                    self._installations.pop(str(row["repo"]), None)
                else:
                    self._installations[str(row["repo"])] = int(row["inst"])
            self._loaded = True

    def installation_for(self, repo: str) -> int | None:
        if not self._loaded:
            self.load_installations()
        with self._lock:
            found = self._installations.get(repo)
        if found is not None:
            return found
        head_rows = self._warehouse.query(
            "SELECT argMax(installation_id, updated_at) AS inst FROM oot_pr_heads"
            " WHERE upstream_repo = {repo:String} AND installation_id > 0", {"repo": repo})
        value = int(head_rows[0]["inst"]) if head_rows else 0
        return value or None

    def set_installation(self, repos: list[str], installation_id: int, account: str, *, removed: bool = False,
                         at: datetime | None = None) -> None:
        if not repos:
            return
        stamp = at or datetime.now(UTC)
        rows = [[repo, installation_id, account, 1 if removed else 0, stamp] for repo in repos]
        self._warehouse.insert(INSTALLATIONS_TABLE, rows, INSTALLATION_COLUMNS)
        with self._lock:
            for repo in repos:
                if removed:
                    if self._installations.get(repo) == installation_id:
                        del self._installations[repo]
                else:
                    self._installations[repo] = installation_id

    def remember(self, repo: str, installation_id: int) -> None:
        """Memory only: an installation id learned from GitHub or a webhook's ``installation`` field."""
        with self._lock:
            self._installations[repo] = installation_id
