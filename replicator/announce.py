"""After rows land, tell the subscriber which PRs changed: once per (repo, PR, head SHA) per batch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sql.records import PrRef

log = logging.getLogger("replicator.announce")


def announce_prs(prs: Iterable[PrRef], on_change: Callable[[PrRef], None]) -> tuple[PrRef, ...]:
    """Call ``on_change`` for each distinct PR, in first-seen order; a failing subscriber is logged, never
    fails the batch.

    Trunk results (PR number 0) are announced too, exactly as the embedded store does: the subscriber
    decides what a trunk change means (e.g. "also failing on trunk" labels on open PRs).
    """
    distinct = tuple(dict.fromkeys(prs))
    for pr in distinct:
        try:
            on_change(pr)
        except Exception:
            log.exception("change subscriber failed repo=%s pr=%d sha=%s", pr.upstream_repo, pr.pr_number,
                          pr.head_sha)
    return distinct
