"""After rows land, tell the subscriber which PRs changed: once per (repo, PR, head SHA) per batch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Protocol

from sql.records import PrRef

log = logging.getLogger("replicator.announce")


class HasPr(Protocol):
    @property
    def pr(self) -> PrRef: ...


def changed_prs(changes: Iterable[HasPr]) -> tuple[PrRef, ...]:
    """The distinct PRs of ``changes`` in first-seen order.

    Trunk results (PR number 0) are announced too, exactly as the embedded store does: the subscriber
    decides what a trunk change means (e.g. "also failing on trunk" labels on open PRs).
    """
    return tuple(dict.fromkeys(change.pr for change in changes))


def announce_changes(changes: Iterable[HasPr], on_change: Callable[[PrRef], None]) -> tuple[PrRef, ...]:
    """Call ``on_change`` for each changed PR; a failing subscriber is logged, never fails the batch."""
    return announce_prs((change.pr for change in changes), on_change)


def announce_prs(prs: Iterable[PrRef], on_change: Callable[[PrRef], None]) -> tuple[PrRef, ...]:
    """``announce_changes`` for PRs already extracted (each distinct PR once, in first-seen order)."""
    distinct = tuple(dict.fromkeys(prs))
    for pr in distinct:
        try:
            on_change(pr)
        except Exception:
            log.exception("change subscriber failed repo=%s pr=%d sha=%s", pr.upstream_repo, pr.pr_number,
                          pr.head_sha)
    return distinct
