"""Result arrival (the store's or replicator's announcement): mark the PR dirty; trunk results are no PR."""

from __future__ import annotations

from collections.abc import Callable

from sql.records import PrRef


def on_results(mark_dirty: Callable[[PrRef], None]) -> Callable[[PrRef], None]:
    """The listener the composition root subscribes to ``Services.listeners``."""

    def listener(pr: PrRef) -> None:
        if pr.pr_number > 0:
            mark_dirty(pr)

    return listener
