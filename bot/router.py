"""A tiny webhook router: callbacks in registration order per (event, action), each isolated."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from bot.logfmt import get_logger

log = get_logger("oot_hud.bot.router")


@dataclasses.dataclass(frozen=True, slots=True)
class Delivery:
    """One verified webhook delivery."""

    event: str
    delivery_id: str
    payload: dict[str, Any]

    @property
    def action(self) -> str | None:
        action = self.payload.get("action")
        return action if isinstance(action, str) else None

    @property
    def installation_id(self) -> int | None:
        installation = self.payload.get("installation")
        value = installation.get("id") if isinstance(installation, dict) else None
        return value if isinstance(value, int) else None

    def log_fields(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "github_event": self.event, "action": self.action,
                "installation_id": self.installation_id}


Callback = Callable[[Delivery], Awaitable[None]]


class Router:
    """Callbacks are kept in a list (order = registration order) and one failing never stops the rest."""

    def __init__(self, *others: Router) -> None:
        self._routes: dict[tuple[str, str | None], list[Callback]] = defaultdict(list)
        for other in others:
            self.include(other)

    def register(self, event: str, action: str | None = None) -> Callable[[Callback], Callback]:
        """Decorator: call ``fn`` for ``event`` (and ``action``; None = every action of the event)."""

        def decorate(fn: Callback) -> Callback:
            self.add(event, action, fn)
            return fn

        return decorate

    def add(self, event: str, action: str | None, fn: Callback) -> None:
        self._routes[(event, action)].append(fn)

    def include(self, other: Router) -> None:
        for key, callbacks in other._routes.items():
            self._routes[key].extend(callbacks)

    def callbacks(self, delivery: Delivery) -> list[Callback]:
        found = list(self._routes.get((delivery.event, None), ()))
        if delivery.action is not None:
            found += self._routes.get((delivery.event, delivery.action), ())
        return found

    def handles(self, delivery: Delivery) -> bool:
        return bool(self.callbacks(delivery))

    async def dispatch(self, delivery: Delivery) -> int:
        """Run every matching callback; returns how many failed (each failure is logged)."""
        failures = 0
        for callback in self.callbacks(delivery):
            try:
                await callback(delivery)
            except Exception:
                failures += 1
                log.exception("webhook callback failed", extra={**delivery.log_fields(),
                                                                "callback": callback.__qualname__})
        return failures
