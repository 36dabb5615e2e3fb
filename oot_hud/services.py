"""Build and close everything the running service needs, from the settings. Nothing else constructs clients."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from ingest.ratelimit import Limiter, RateLimiter
from ingest.stores.base import OnChange, ResultStore
from oot_hud.allowlist_source import AllowlistSource, parse_location
from oot_hud.settings import Settings
from oot_hud.trunk_warmer import TrunkWarmer
from policy.gate import GateConfig
from policy.pr_policy import PrPolicy
from sql.bot_state import Announcement, BotState
from sql.records import PrRef
from sql.warehouse import Warehouse

if TYPE_CHECKING:
    from bot.service import Bot
    from ingest.stores.journal import Journal

log = logging.getLogger("oot_hud.services")
BOT_DRAIN_SECONDS = 5.0
JOURNAL_DIR = "journal"
ALLOWLIST_CACHE_DIR = "allowlist"  # the last good copy per database, for a restart while the source is unreadable


@dataclasses.dataclass
class Services:
    settings: Settings
    warehouse: Warehouse
    store: ResultStore
    relay_tokens: list[str]
    listeners: list[OnChange] = dataclasses.field(default_factory=list)
    bot: Bot | None = None
    trunk_warmer: TrunkWarmer | None = None
    allowlist: AllowlistSource | None = None  # None: no allowlist configured (everything works as without)

    def pr_policy(self) -> PrPolicy:
        """The PR rules as of now (the allowlist is refreshed while running): the bot and the PR page use it."""
        hours = self.settings.gate_max_pending_hours
        gate = GateConfig(max_pending=timedelta(hours=hours) if hours else None,
                          allowlist_configured=self.allowlist is not None,
                          canaries=frozenset(repo.lower() for repo in self.settings.canary_backends))
        return PrPolicy(allowlist=self.allowlist.current if self.allowlist is not None else None, gate=gate,
                        label_prefix=self.settings.l3_label_prefix, notify_oncalls=self.settings.notify_oncalls)

    async def settled(self) -> Services:
        """These services, once every result accepted so far is readable (page and API reads call this)."""
        await self.store.flushed()
        return self

    def announce(self, pr: PrRef) -> None:
        """Fan a "results changed for this PR" out to every subscriber (the bot's writer, caches)."""
        for listener in list(self.listeners):
            try:
                listener(pr)
            except Exception:
                log.exception("change listener failed", extra={"pr": pr})


def open_warehouse(settings: Settings) -> Warehouse:
    url = settings.clickhouse_url.get_secret_value() if settings.clickhouse_url else None
    warehouse = Warehouse.connect(url=url, data_dir=settings.data_dir, database=settings.clickhouse_database)
    warehouse.apply_schema()
    journal = open_journal(settings)
    if journal is not None:
        from ingest.stores.embedded import replay_journal

        # What a killed server accepted but had not inserted, before anything reads (serve, publish, replicate).
        replay_journal(journal, warehouse)
    return warehouse


def open_journal(settings: Settings) -> Journal | None:
    """The embedded store's journal: in the locked data directory, so only the embedded engine has one
    (against a ClickHouse server each group is inserted before it is answered)."""
    if not settings.embedded:
        return None
    from ingest.stores.journal import Journal

    return Journal(settings.data_dir / JOURNAL_DIR / settings.clickhouse_database)


def build_store(settings: Settings, warehouse: Warehouse, on_change: OnChange) -> ResultStore:
    if settings.dynamo_table:
        from ingest.stores.dynamo import DynamoStore

        return DynamoStore.from_environment(settings.dynamo_table)
    from ingest.stores.embedded import EmbeddedStore

    return EmbeddedStore(warehouse, on_change=on_change, commit_window_ms=settings.commit_window_ms,
                         journal=open_journal(settings), flush_interval_ms=settings.flush_interval_ms)


def build_allowlist(settings: Settings, bot: Callable[[], Bot | None]) -> AllowlistSource | None:
    """The allowlist source (``OOT_HUD_ALLOWLIST``); ``github:`` reads through ``bot()``, built after it.
    Raises ValueError for a location it cannot read (before anything is opened)."""
    if not settings.allowlist:
        return None
    location = parse_location(settings.allowlist)

    async def through_app(repo: str, path: str) -> str:
        app = bot()
        if app is None:
            raise LookupError("the GitHub App is not running")
        return await app.read_file(repo, path)

    return AllowlistSource(location, refresh_seconds=settings.allowlist_refresh_seconds,
                           cache_path=settings.data_dir / ALLOWLIST_CACHE_DIR / f"{settings.clickhouse_database}.yml",
                           fetch_github=through_app if settings.github_enabled else None)


def build_bot(settings: Settings, warehouse: Warehouse, allowlist: AllowlistSource | None = None,
              policy: Callable[[], PrPolicy] | None = None) -> Bot:
    """The GitHub App; without App credentials it runs dry (renders, posts nothing)."""
    from bot.leases import LeaseConfig
    from bot.service import Bot

    secret = settings.github_webhook_secret.get_secret_value() if settings.github_webhook_secret else None
    shared = build_bot_state(settings)
    return Bot(warehouse=warehouse, app_id=settings.github_app_id if settings.github_enabled else None,
               private_key=settings.private_key_pem() if settings.github_enabled else None,
               webhook_secret=secret, api_url=settings.github_api_url, app_slug=settings.github_app_slug,
               debounce=settings.bot_debounce_seconds, pace=settings.bot_pace_seconds,
               sweep=settings.bot_sweep_seconds, public_url=settings.public_url,
               silence_hours=settings.silence_hours,
               allowlist_watch=allowlist, policy=policy, bot_state=shared, shared=shared is not None,
               lease=LeaseConfig(seconds=settings.bot_lease_seconds, poll=settings.bot_poll_seconds,
                                 write_bound=settings.bot_github_timeout_seconds + settings.bot_clock_skew_seconds),
               github_timeout=settings.bot_github_timeout_seconds)


def build_limiter(settings: Settings) -> Limiter:
    """The per-repository rate limit: counted in the shared state table when several instances may run
    (DynamoDB path), else by this process alone."""
    table = settings.state_table()
    if table is None:
        return RateLimiter(settings.rate_limit_per_minute)
    import boto3

    from ingest.stores.dynamo import client_config
    from ingest.stores.dynamo_ratelimit import DynamoRateLimiter

    return DynamoRateLimiter(boto3.client("dynamodb", config=client_config()), table, settings.rate_limit_per_minute)


def replicator_announcer(settings: Settings) -> Callable[[Sequence[Announcement]], object] | None:
    """What the replicator (follower or Lambda) calls after a batch landed: the bot's shared marks."""
    state = build_bot_state(settings)
    return state.announce_all if state is not None else None


def build_bot_state(settings: Settings) -> BotState | None:
    """The DynamoDB state table every instance shares (DynamoDB path); None: this process's memory."""
    table = settings.state_table()
    if table is None:
        return None
    from ingest.stores.dynamo_bot_state import DynamoBotState

    return DynamoBotState.from_environment(table)


async def build_services(settings: Settings) -> Services:
    services: Services
    allowlist = build_allowlist(settings, lambda: services.bot)
    warehouse = open_warehouse(settings)
    # The store announces through the Services object so listeners added later still hear it.
    store = build_store(settings, warehouse, on_change=lambda pr: services.announce(pr))
    tokens = [token.get_secret_value() for token in settings.relay_tokens]
    services = Services(settings=settings, warehouse=warehouse, store=store, relay_tokens=tokens,
                        allowlist=allowlist)
    services.bot = build_bot(settings, warehouse, services.allowlist, services.pr_policy)
    if services.allowlist is not None and services.bot is not None:
        services.allowlist.on_change(services.bot.allowlist_changed)
    services.listeners.append(services.bot.on_results)
    services.trunk_warmer = TrunkWarmer(warehouse)
    services.listeners.append(services.trunk_warmer)
    await services.bot.start()
    if services.allowlist is not None:
        await services.allowlist.start()  # after the bot: a github: source reads through it
    await store.start()
    return services


async def close_services(services: Services) -> None:
    await services.store.close()
    if services.bot is not None:
        if not services.bot.dry_run:
            # Give pending PR writes a moment; whatever is left is re-rendered by the next result.
            try:
                await asyncio.wait_for(services.bot.drain(), timeout=BOT_DRAIN_SECONDS)
            except TimeoutError:
                log.warning("bot writes still pending at shutdown were dropped")
        await services.bot.stop()
    if services.trunk_warmer is not None:
        await services.trunk_warmer.stop()
    if services.allowlist is not None:
        await services.allowlist.stop()
    services.warehouse.close()
