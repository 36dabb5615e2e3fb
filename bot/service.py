"""Build the GitHub App side from plain arguments and run its background tasks (writer, sweep, webhooks)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from bot.clock import Clock, RealClock
from bot.context import AllowlistWatch, HandlerContext
from bot.github import DEFAULT_CALL_SECONDS, GitHubApi, GitHubError, NotFound
from bot.handlers import build_router
from bot.handlers.results import on_results
from bot.leases import LeaseConfig, Leases
from bot.logfmt import get_logger
from bot.memory_state import MemoryBotState
from bot.oncall import notify
from bot.pr_state import PrState
from bot.render import Render, Rendered, RenderSync, warehouse_renderer
from bot.webhook import WebhookReceiver
from bot.writer import Writer
from policy.pr_policy import DEFAULT_POLICY, PrPolicy
from renderers.markdown import CHECK_RUN_NAME
from sql.bot_state import BotState, Watermark
from sql.records import PrRef
from sql.warehouse import Warehouse

log = get_logger("oot_hud.bot")

# An allowlist change renders again the open PRs with a result this recent; an older PR is rendered at its
# next result or push, as any PR is.
ALLOWLIST_RERENDER_DAYS = 14


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
                 render: RenderSync | None = None,
                 allowlist_watch: AllowlistWatch | None = None,
                 bot_state: BotState | None = None, policy: Callable[[], PrPolicy] | None = None,
                 shared: bool = False, lease: LeaseConfig | None = None,
                 github_timeout: float = DEFAULT_CALL_SECONDS, instance: str | None = None) -> None:
        self.clock = clock or RealClock()
        self.state = PrState(warehouse)
        # Leases, the PR's GitHub ids, set-once records and delivery ids; in memory for one process.
        self.bot_state: BotState = bot_state or MemoryBotState(self.clock)
        timeout = httpx.Timeout(github_timeout, connect=min(5.0, github_timeout))
        self.github = (GitHubApi(app_id, private_key, base_url=api_url, timeout=timeout, transport=transport,
                                 clock=self.clock, deadline=github_timeout) if app_id and private_key else None)
        render_sync = render or warehouse_renderer(warehouse, silence_hours=silence_hours, public_url=public_url,
                                                   policy=policy or (lambda: DEFAULT_POLICY))
        self._rechecks: dict[tuple[str, int], asyncio.TimerHandle] = {}

        async def render_async(repo: str, number: int) -> Any:
            rendered = await asyncio.to_thread(render_sync, repo, number)
            self._schedule_recheck(repo, number, getattr(rendered, "recheck_after", None))
            return rendered

        self._render: Render = render_async
        # Shared state (several instances): PRs are claimed through leases, changes learned from the marks.
        self.leases = Leases(self.bot_state, self.clock, lease, owner=instance) if shared else None
        self.writer = Writer(render=self._render, github=self.github, installation_for=self._installation_for,
                             app_slug=app_slug, debounce=debounce, pace=pace, clock=self.clock, leases=self.leases,
                             watermark_visible=self._watermark_visible, pace_state=self.bot_state)
        self.writer.after_write = self._notify_oncalls
        self.sweep_seconds = sweep
        self.on_results: Callable[[PrRef], None] = on_results(self.writer.mark_dirty)
        self.router = build_router(HandlerContext(
            state=self.state, mark_dirty=self.writer.mark_dirty, refresh=self.writer.refresh,
            check_run_name=CHECK_RUN_NAME, app_id=self.github.app_id if self.github else None,
            allowlist=allowlist_watch, bot_state=self.bot_state, policy=policy or (lambda: DEFAULT_POLICY)))
        self.receiver = WebhookReceiver(webhook_secret, self.router, self.spawn, first_delivery=self._first_delivery)
        self._background: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None

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

    def allowlist_changed(self) -> None:
        """The allowlist in use changed (on the event loop): render every open PR with recent results again,
        since the levels decide which backends gate it. A PR whose text does not change costs a render and no
        GitHub call; with several instances each one hears of the change and the leases keep one writer."""
        if not self.dry_run:
            self.spawn(self.rerender_open_prs())

    async def rerender_open_prs(self) -> int:
        prs = await asyncio.to_thread(self.state.open_prs_with_results, ALLOWLIST_RERENDER_DAYS)
        for pr in prs:
            self.writer.mark_dirty(pr)
        log.info("allowlist changed: open PRs marked for a render", extra={"prs": len(prs)})
        return len(prs)

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
        try:
            return await asyncio.to_thread(self.bot_state.first_delivery, delivery_id)
        except Exception as exc:  # handling a delivery twice is harmless (marks, idempotent heads); losing one is not
            log.warning("delivery de-duplication unavailable; handling the delivery",
                        extra={"delivery_id": delivery_id, "error": str(exc)})
            return True

    async def _watermark_visible(self, repo: str, number: int, watermark: Watermark) -> bool:
        return await asyncio.to_thread(self.state.shows, repo, number, watermark)

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
        if self.leases is not None and not self.dry_run:
            self._poller = asyncio.get_running_loop().create_task(self._poll_loop(), name="oot-bot marks")
        log.info("bot started", extra={"dry_run": self.dry_run, "shared": self.leases is not None,
                                       "instance": self.leases.owner if self.leases else ""})

    async def _sweep_loop(self) -> None:
        while True:
            await self.clock.sleep(self.sweep_seconds)
            try:
                count = await self.writer.sweep_once()
                if count:
                    log.info("sweep re-marked failed PRs", extra={"prs": count})
            except Exception:
                log.exception("sweep failed")

    async def _poll_loop(self) -> None:
        """Read the shared marks every ``LeaseConfig.poll`` seconds (one DynamoDB Query each)."""
        assert self.leases is not None
        while True:
            try:
                marked = await self.writer.poll_marks()
                if marked:
                    log.debug("marks polled", extra={"prs": marked})
            except Exception as exc:
                log.warning("could not read the shared marks", extra={"error": str(exc)})
            await self.clock.sleep(self.leases.config.poll)

    async def drain(self) -> None:
        """Wait for in-flight webhook work and every pending PR write (tests, benchmark)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.writer.idle()

    async def stop(self) -> None:
        for handle in self._rechecks.values():
            handle.cancel()
        self._rechecks.clear()
        for loop_task in (self._sweeper, self._poller):
            if loop_task is not None:
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.writer.close()
