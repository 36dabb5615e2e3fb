"""Build the GitHub App side from plain arguments and run its background tasks (writer, sweep, webhooks)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bot.clock import Clock, RealClock
from bot.context import AllowlistWatch, HandlerContext
from bot.github import GitHubApi, GitHubError, NotFound
from bot.handlers import build_router
from bot.handlers.results import on_results
from bot.logfmt import get_logger
from bot.memory_state import MemoryBotState
from bot.oncall import notify
from bot.pr_state import PrState
from bot.render import Render, Rendered, RenderSync, warehouse_renderer
from bot.webhook import WebhookReceiver
from bot.writer import Writer
from policy.pr_policy import DEFAULT_POLICY, PrPolicy
from renderers.markdown import CHECK_RUN_NAME
from sql.bot_state import BotState
from sql.records import PrRef
from sql.warehouse import Warehouse

log = get_logger("oot_hud.bot")


# Results replicated by another process (the DynamoDB stream Lambda) are not announced here: the sweep
# polls the warehouse for them. The overlap covers replication lag; the lookback a restart.
POLL_OVERLAP = timedelta(minutes=10)
POLL_LOOKBACK = timedelta(hours=1)


class Bot:
    """The App: webhook receiver + handlers, the per-PR writer and the periodic sweep.

    Without ``app_id``/``private_key`` it runs dry: it sends and renders nothing (the PR page renders
    the would-be output on demand).
    """

    def __init__(self, *, warehouse: Warehouse, app_id: int | str | None = None, private_key: str | None = None,
                 webhook_secret: str | None = None, api_url: str = "https://api.github.com",
                 app_slug: str | None = None, debounce: float = 3.0, pace: float = 1.0, sweep: float = 60.0,
                 public_url: str = "http://127.0.0.1:8000", silence_hours: float = 6.0,
                 transport: httpx.AsyncBaseTransport | None = None, clock: Clock | None = None,
                 render: RenderSync | None = None, poll_results: bool = False,
                 allowlist_watch: AllowlistWatch | None = None,
                 bot_state: BotState | None = None, policy: Callable[[], PrPolicy] | None = None) -> None:
        self.clock = clock or RealClock()
        self.state = PrState(warehouse)
        # Leases, the PR's GitHub ids, set-once records and delivery ids; in memory for one process.
        self.bot_state: BotState = bot_state or MemoryBotState(self.clock)
        self.github = (GitHubApi(app_id, private_key, base_url=api_url, transport=transport, clock=self.clock)
                       if app_id and private_key else None)
        render_sync = render or warehouse_renderer(warehouse, silence_hours=silence_hours, public_url=public_url,
                                                   policy=policy or (lambda: DEFAULT_POLICY))
        self._rechecks: dict[tuple[str, int], asyncio.TimerHandle] = {}

        async def render_async(repo: str, number: int) -> Any:
            rendered = await asyncio.to_thread(render_sync, repo, number)
            self._schedule_recheck(repo, number, getattr(rendered, "recheck_after", None))
            return rendered

        self._render: Render = render_async
        self.writer = Writer(render=self._render, github=self.github, installation_for=self._installation_for,
                             app_slug=app_slug, debounce=debounce, pace=pace, clock=self.clock)
        self.writer.after_write = self._notify_oncalls
        self.sweep_seconds = sweep
        self.on_results: Callable[[PrRef], None] = on_results(self.writer.mark_dirty)
        self.router = build_router(HandlerContext(
            state=self.state, mark_dirty=self.writer.mark_dirty, refresh=self.writer.refresh,
            check_run_name=CHECK_RUN_NAME, app_id=self.github.app_id if self.github else None,
            allowlist=allowlist_watch, bot_state=self.bot_state))
        self.receiver = WebhookReceiver(webhook_secret, self.router, self.spawn, first_delivery=self._first_delivery)
        self.poll_results = poll_results
        self._polled_at: datetime | None = None
        self._seen: dict[tuple[str, int], datetime] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def dry_run(self) -> bool:
        return self.github is None

    async def _installation_for(self, repo: str) -> int | None:
        found = await asyncio.to_thread(self.state.installation_for, repo)
        if found is not None or self.github is None:
            return found
        try:
            found = await self.github.repo_installation(repo)
        except NotFound:
            return None
        except GitHubError:
            raise
        self.state.remember(repo, found)
        return found

    def _schedule_recheck(self, repo: str, number: int, after: float | None) -> None:
        """Render the PR again when its merge gate changes by itself (a pending backend passes the max
        pending age); one timer per PR, replaced by each render. Per process: after a restart the next
        result or sweep renders it."""
        previous = self._rechecks.pop((repo, number), None)
        if previous is not None:
            previous.cancel()
        if after is not None:
            self._rechecks[(repo, number)] = asyncio.get_running_loop().call_later(
                after, self._recheck, repo, number)

    def _recheck(self, repo: str, number: int) -> None:
        self._rechecks.pop((repo, number), None)
        self.writer.mark_dirty(PrRef(repo, number))

    async def _notify_oncalls(self, installation: int, pr: PrRef, rendered: Rendered) -> None:
        if rendered.render_notice is not None:
            await notify(self.bot_state, self.writer.post_comment, installation, pr, rendered.notices,
                         rendered.render_notice)

    async def read_file(self, repo: str, path: str) -> str:
        """A file of ``repo``'s default branch through the App's installation there (the allowlist)."""
        if self.github is None:
            raise LookupError("the GitHub App is not configured")
        installation_id = await self._installation_for(repo)
        if installation_id is None:
            raise LookupError(f"the App is not installed on {repo}")
        return await self.github.file_text(installation_id, repo, path)

    async def _first_delivery(self, delivery_id: str) -> bool:
        if isinstance(self.bot_state, MemoryBotState):
            return self.bot_state.first_delivery(delivery_id)
        return await asyncio.to_thread(self.bot_state.first_delivery, delivery_id)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run webhook work in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start(self) -> None:
        self.writer.bind_loop()
        try:
            await asyncio.to_thread(self.state.load_installations)
        except Exception:
            log.exception("could not load installations; they will be learned again")
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="oot-bot sweep")
        log.info("bot started", extra={"dry_run": self.dry_run})

    async def _sweep_loop(self) -> None:
        while True:
            await self.clock.sleep(self.sweep_seconds)
            try:
                count = await self.writer.sweep_once()
                if count:
                    log.info("sweep re-marked failed PRs", extra={"prs": count})
                if self.poll_results:
                    await self.poll_once()
            except Exception:
                log.exception("sweep failed")

    async def poll_once(self, now: datetime | None = None) -> int:
        """Mark PRs whose results arrived since the last poll (replicated elsewhere); returns how many."""
        now = now or datetime.now(UTC)
        since = (self._polled_at or now - POLL_LOOKBACK) - POLL_OVERLAP
        changed = await asyncio.to_thread(self.state.changed_prs, since)
        marked = 0
        for repo, number, newest in changed:
            seen = self._seen.get((repo, number))
            if seen is None or newest > seen:
                self._seen[(repo, number)] = newest
                self.writer.mark_dirty(PrRef(repo, number))
                marked += 1
        self._seen = {key: when for key, when in self._seen.items() if when >= since}
        self._polled_at = now
        if marked:
            log.info("poll found changed PRs", extra={"prs": marked})
        return marked

    async def drain(self) -> None:
        """Wait for in-flight webhook work and every pending PR write (tests, benchmark)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.writer.idle()

    async def stop(self) -> None:
        for handle in self._rechecks.values():
            handle.cancel()
        self._rechecks.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.writer.close()
