"""Build and close everything the running service needs, from the settings. Nothing else constructs clients."""

from __future__ import annotations

import dataclasses
import logging

from ingest.stores.base import OnChange, ResultStore
from oot_hud.settings import Settings
from sql.records import PrRef
from sql.warehouse import Warehouse

log = logging.getLogger("oot_hud.services")


@dataclasses.dataclass
class Services:
    settings: Settings
    warehouse: Warehouse
    store: ResultStore
    relay_tokens: list[str]
    listeners: list[OnChange] = dataclasses.field(default_factory=list)

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
    return warehouse


def build_store(settings: Settings, warehouse: Warehouse, on_change: OnChange) -> ResultStore:
    if settings.dynamo_table:
        from ingest.stores.dynamo import DynamoStore

        return DynamoStore.from_environment(settings.dynamo_table)
    from ingest.stores.embedded import EmbeddedStore

    return EmbeddedStore(warehouse, on_change=on_change, commit_window_ms=settings.commit_window_ms)


async def build_services(settings: Settings) -> Services:
    warehouse = open_warehouse(settings)
    services: Services
    # The store announces through the Services object so listeners added later still hear it.
    store = build_store(settings, warehouse, on_change=lambda pr: services.announce(pr))
    tokens = [token.get_secret_value() for token in settings.relay_tokens]
    services = Services(settings=settings, warehouse=warehouse, store=store, relay_tokens=tokens)
    await store.start()
    return services


async def close_services(services: Services) -> None:
    await services.store.close()
    services.warehouse.close()
