"""After rows land, tell the subscriber which PRs changed: once per (repo, PR, head SHA) per batch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from sql.bot_state import Announcement
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


def announce_changes(announcements: Sequence[Announcement], on_changes: Callable[[Sequence[Announcement]], object]
                     ) -> bool:
    """Hand the batch's PR changes (one per PR, the newest watermark) to the shared marks. False when that
    failed: the caller fails the batch, so it is delivered (and announced) again rather than leaving a PR's
    comment behind its results; re-inserting the rows is harmless (same key and version)."""
    newest = {(a.pr.upstream_repo, a.pr.pr_number): a for a in announcements if a.pr.pr_number > 0}
    if not newest:
        return True
    try:
        on_changes(list(newest.values()))
    except Exception as exc:
        log.error("change announcement failed prs=%d error=%s: %.200s", len(newest), type(exc).__name__, exc)
        return False
    return True
