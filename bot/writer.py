"""The per-PR single writer: dirty marks, a debounce window, one comment write and one check-run write.

Every trigger only marks a PR dirty. One asyncio task per dirty PR waits until the PR has been quiet for
the debounce window (at most ``max_delay`` after the first mark), renders the PR's full current state
and syncs the sticky comment and the check run. Content-creating calls go through the installation's
``Pacer``; GitHub's "slow down" answers block the installation, other failures are retried briefly and
then left to the periodic sweep, so nothing blocks other PRs.

With ``leases`` (several instances on shared state) a PR's task first claims the PR's write lease, keeps
it alive while it debounces and before every GitHub write (``bot.leases``), waits until the warehouse shows
the announced change (the mark's watermark), and at the end records the PR's ids and hashes fenced by the
lease and clears the mark it answered; a newer mark makes it loop. Marks arrive from ``poll_marks`` (the
shared state, read every ``LeaseConfig.poll`` seconds) and from this instance's own triggers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bot.clock import Clock, RealClock
from bot.github import GitHubApi, GitHubError, NotFound, RateLimited, Transient, Unprocessable
from bot.leases import Leases
from bot.logfmt import get_logger
from bot.pacing import Pacer
from bot.render import Render, Rendered
from renderers.markdown import COMMENT_MARKER, CheckRunOutput
from sql.bot_state import BotState, Busy, Lease, LeaseLost, Mark, PrMemo, Watermark
from sql.records import PrRef

log = get_logger("oot_hud.bot.writer")

T = TypeVar("T")
TRANSIENT_RETRIES = 3
RATE_LIMIT_RETRIES = 3
TRANSIENT_BACKOFF_SECONDS = 2.0
MAX_DELAY_FACTOR = 10  # a PR that never goes quiet is still written every debounce x this
MAX_SLOTS = 20_000  # PRs remembered (cached comment/check ids); idle ones beyond this are forgotten

WATERMARK_WAIT_SECONDS = 10.0  # how long a render waits for the warehouse to show the announced change
BUSY_RETRY_MIN_SECONDS = 0.2

InstallationLookup = Callable[[str], Awaitable[int | None]]
WatermarkCheck = Callable[[str, int, Watermark], Awaitable[bool]]


class NotYetVisible(RuntimeError):
    """The warehouse does not show the announced change yet: do not render a stale state; retry later."""


def digest(text: str | None) -> str | None:
    """What is kept of a body: its SHA-256 (shared state holds no PR text)."""
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def payload_digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@dataclasses.dataclass
class CheckEntry:
    check_run_id: int
    payload_hash: str | None  # digest of what GitHub holds (None: unknown, found after a restart)


@dataclasses.dataclass
class PrSlot:
    """Everything the writer remembers about one PR."""

    repo: str
    number: int
    dirty: bool = False
    first_dirty: float = 0.0
    last_dirty: float = 0.0
    task: asyncio.Task[None] | None = None
    failed: bool = False
    comment_id: int | None = None
    comment_hash: str | None = None  # digest of the body GitHub holds
    source_hash: str | None = None  # digest of the rendered body that produced it (differs after a 422 fallback)
    checks: dict[str, CheckEntry] = dataclasses.field(default_factory=dict)
    last_rendered: Rendered | None = None
    cycles: int = 0  # completed write cycles (dry-run ones included)
    # Shared state only: the lease held, the newest mark seen (what a render answers), when last marked.
    lease: Lease | None = None
    mark: Mark | None = None
    marked_at: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.repo}#{self.number}"

    @property
    def pr(self) -> PrRef:
        return PrRef(self.repo, self.number)

    def memo(self) -> PrMemo:
        sha, entry = next(iter(self.checks.items()), (None, None))
        return PrMemo(comment_id=self.comment_id, comment_hash=self.comment_hash, source_hash=self.source_hash,
                      check_sha=sha, check_run_id=entry.check_run_id if entry else None,
                      check_hash=entry.payload_hash if entry else None)

    def load(self, memo: PrMemo) -> None:
        """Take the shared state's view of the PR's GitHub objects (another instance may have written)."""
        self.comment_id, self.comment_hash, self.source_hash = memo.comment_id, memo.comment_hash, memo.source_hash
        self.checks = ({memo.check_sha: CheckEntry(memo.check_run_id, memo.check_hash)}
                       if memo.check_sha and memo.check_run_id else {})


def check_payload(check: CheckRunOutput, *, create: bool) -> dict[str, Any]:
    """The check-run request body (create includes ``head_sha``; ``conclusion`` only once completed)."""
    payload: dict[str, Any] = {
        "name": check.name, "status": check.status, "details_url": check.details_url,
        "external_id": check.external_id,
        "output": {"title": check.title, "summary": check.summary, "text": check.text},
    }
    if create:
        payload["head_sha"] = check.head_sha
    if check.status == "completed" and check.conclusion:
        payload["conclusion"] = check.conclusion
    return payload


class Writer:
    """One writer per PR; ``github`` None = dry-run (send nothing, render nothing)."""

    def __init__(self, *, render: Render, github: GitHubApi | None, installation_for: InstallationLookup,
                 app_slug: str | None = None, debounce: float = 3.0, pace: float = 1.0,
                 max_delay: float | None = None, clock: Clock | None = None,
                 transient_retries: int = TRANSIENT_RETRIES, rate_limit_retries: int = RATE_LIMIT_RETRIES,
                 leases: Leases | None = None, watermark_visible: WatermarkCheck | None = None,
                 watermark_wait: float = WATERMARK_WAIT_SECONDS, pace_state: BotState | None = None) -> None:
        self._render = render
        self._github = github
        self._installation_for = installation_for
        self._slug = app_slug
        self.debounce = debounce
        self.pace = pace
        # Called after a cycle's writes when the render carries on-call notices (bot.oncall, wired by Bot).
        self.after_write: Callable[[int, PrRef, Rendered], Awaitable[object]] | None = None
        self.max_delay = max_delay if max_delay is not None else max(debounce * MAX_DELAY_FACTOR, debounce)
        self._clock = clock or RealClock()
        self._transient_retries = transient_retries
        self._rate_limit_retries = rate_limit_retries
        self._slots: dict[tuple[str, int], PrSlot] = {}
        self._pacers: dict[int, Pacer] = {}
        # Where the installations' write turns are kept: shared by every instance on the same state.
        self._pace_state = pace_state or (leases.state if leases is not None else None)
        # Shared state (several instances): None in the single process, and in a dry run (nothing to write).
        self._leases = leases if github is not None else None
        self._watermark_visible = watermark_visible
        self._watermark_wait = watermark_wait
        self._announcing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.writes: Counter[str] = Counter()

    @property
    def dry_run(self) -> bool:
        return self._github is None

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Remember the loop the writer runs on, so ``mark_dirty`` is safe from other threads."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    # --- triggers ----------------------------------------------------------------------------------
    def mark_dirty(self, pr: PrRef) -> None:
        """Results (or the PR) changed: re-render after the debounce window. Trunk results are ignored."""
        self._trigger(pr, refresh=False)

    def refresh(self, pr: PrRef) -> None:
        """A human asked for a re-run of the check: re-send it even when nothing changed."""
        self._trigger(pr, refresh=True)

    def _trigger(self, pr: PrRef, *, refresh: bool) -> None:
        if pr.pr_number <= 0 or not pr.upstream_repo:
            return
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._on_loop, pr.upstream_repo, pr.pr_number, refresh)
        else:
            self._on_loop(pr.upstream_repo, pr.pr_number, refresh)

    def _on_loop(self, repo: str, number: int, refresh: bool) -> None:
        if self._leases is None:
            if refresh and (slot := self._slots.get((repo, number))) is not None:
                for entry in slot.checks.values():
                    entry.payload_hash = None
            self._mark(repo, number)
            return
        # Shared state: whichever instance holds (or next claims) the PR's lease must hear of it.
        task = asyncio.get_running_loop().create_task(self._announce(repo, number, refresh),
                                                      name=f"oot-announce {repo}#{number}")
        self._announcing.add(task)
        task.add_done_callback(self._announcing.discard)

    async def _announce(self, repo: str, number: int, refresh: bool) -> None:
        assert self._leases is not None
        try:
            token = await asyncio.to_thread(self._leases.state.announce, PrRef(repo, number), refresh_check=refresh)
        except Exception as exc:
            log.warning("could not announce a PR change to the shared state; writing it from here",
                        extra={"pr": f"{repo}#{number}", "error": str(exc)})
            token = ""
        slot = self._mark(repo, number)
        if token and (slot.mark is None or slot.mark.token != token):
            old = slot.mark
            slot.mark = Mark(repo, number, token, old.watermark if old else None,
                             refresh or bool(old and old.refresh_check))

    async def poll_marks(self) -> int:
        """Read the shared marks once: mark PRs announced since the last poll (and PRs left pending for a
        lease's length with nobody here on them); returns how many were marked."""
        if self._leases is None:
            return 0
        marks = await asyncio.to_thread(self._leases.state.pending)
        now = self._clock.monotonic()
        seen = set()
        marked = 0
        for mark in marks:
            seen.add((mark.upstream_repo, mark.pr_number))
            slot = self._slots.get((mark.upstream_repo, mark.pr_number))
            fresh = slot is None or slot.mark is None or slot.mark.token != mark.token
            stuck = slot is not None and slot.task is None and now - slot.marked_at >= self._leases.config.seconds
            if slot is not None:
                slot.mark = mark
            if fresh or stuck:
                self._mark(mark.upstream_repo, mark.pr_number).mark = mark
                marked += 1
        for key, slot in self._slots.items():
            if key not in seen and slot.lease is None:
                slot.mark = None  # rendered and cleared (here or elsewhere)
        return marked

    def _mark(self, repo: str, number: int) -> PrSlot:
        slot = self._slots.get((repo, number))
        if slot is None:
            self._forget_idle()
            slot = self._slots[(repo, number)] = PrSlot(repo, number)
        now = self._clock.monotonic()
        if not slot.dirty:
            slot.first_dirty = now
        slot.dirty = True
        slot.last_dirty = slot.marked_at = now
        if slot.task is None:
            slot.task = asyncio.get_running_loop().create_task(self._run(slot), name=f"oot-writer {slot.label}")
        return slot

    def _forget_idle(self) -> None:
        """Bound memory: drop the oldest idle PRs (a forgotten PR finds its comment again by paging)."""
        excess = len(self._slots) - MAX_SLOTS + 1
        if excess <= 0:
            return
        idle = [key for key, s in self._slots.items() if s.task is None and not s.failed][:excess]
        for key in idle:
            del self._slots[key]

    def slot(self, repo: str, number: int) -> PrSlot | None:
        return self._slots.get((repo, number))

    def failed_prs(self) -> list[PrRef]:
        return [PrRef(s.repo, s.number) for s in self._slots.values() if s.failed]

    async def sweep_once(self) -> int:
        """Re-mark every PR whose last write failed (and is not being written now); returns how many."""
        again = [slot for slot in self._slots.values() if slot.failed and slot.task is None]
        for slot in again:
            self._mark(slot.repo, slot.number)
        return len(again)

    @property
    def busy(self) -> bool:
        """A change is being announced or a PR written (or waiting for its lease)."""
        return bool(self._announcing) or any(slot.task is not None for slot in self._slots.values())

    async def idle(self) -> None:
        """Wait until no PR is dirty or being written (tests, benchmark, shutdown)."""
        while tasks := [*self._announcing, *(slot.task for slot in self._slots.values() if slot.task is not None)]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = [*self._announcing, *(slot.task for slot in self._slots.values() if slot.task is not None)]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- the per-PR task ---------------------------------------------------------------------------
    async def _run(self, slot: PrSlot) -> None:
        try:
            while slot.dirty:
                if self._leases is not None and slot.lease is None and not await self._claim(slot):
                    slot.dirty = False
                    break
                await self._debounce(slot)
                slot.dirty = False
                try:
                    if self._leases is not None and self._github is not None:
                        # The newest token now, not the last poll's: the clear after this render then fails
                        # only for a change that really came after it (one render less per burst, often).
                        slot.mark = await asyncio.to_thread(self._leases.state.mark_of, slot.pr) or slot.mark
                except Exception as exc:  # the poll's view will do; the clear is conditional anyway
                    log.warning("could not read the PR's mark", extra={"pr": slot.label, "error": str(exc)})
                mark = slot.mark
                try:
                    await self._cycle(slot)
                    slot.failed = False
                except LeaseLost as exc:
                    # Another instance took the PR over (this one stalled past its lease): it writes now.
                    log.warning("lease lost; leaving the PR to its new holder", extra={"pr": slot.label,
                                                                                      "error": str(exc)})
                    slot.lease = None
                    continue
                except Exception as exc:
                    slot.failed = True
                    level = logging.WARNING if isinstance(exc, GitHubError | NotYetVisible) else logging.ERROR
                    log.log(level, "PR write failed; the sweep will retry",
                            exc_info=not isinstance(exc, GitHubError | NotYetVisible),
                            extra={"pr": slot.label, "error": str(exc)})
                if self._leases is not None and slot.lease is not None:
                    await self._finish(slot, mark)
        finally:
            slot.task = None
            if slot.lease is not None and self._leases is not None:
                lease, slot.lease = slot.lease, None
                try:
                    await self._leases.release(lease)
                except Exception:  # it expires by itself
                    log.warning("could not release a lease", extra={"pr": slot.label})

    async def _debounce(self, slot: PrSlot) -> None:
        """Wait until the PR has been quiet for the debounce window (at most ``max_delay`` after the first
        mark), keeping the lease alive meanwhile."""
        while (wait := min(slot.last_dirty + self.debounce, slot.first_dirty + self.max_delay)
               - self._clock.monotonic()) > 0:
            if self._leases is not None and slot.lease is not None:
                config = self._leases.config
                slot.lease = await self._leases.keep(slot.lease, config.keep_above)
                wait = min(wait, max(0.0, slot.lease.remaining(self._clock.monotonic()) - config.keep_above) + 0.01)
            await self._clock.sleep(wait)

    async def _claim(self, slot: PrSlot) -> bool:
        """Take the PR's lease, waiting while another instance holds it and the mark is still pending.
        False when there is nothing left to do here (the mark was cleared by its holder)."""
        assert self._leases is not None
        while True:
            found = await self._leases.claim(slot.pr)
            if isinstance(found, Lease):
                slot.lease = found
                slot.load(found.memo)
                return True
            await self._wait_for_holder(found)
            if slot.mark is None:
                return False

    async def _wait_for_holder(self, busy: Busy) -> None:
        assert self._leases is not None
        # Until the holder's lease would expire (by this clock): a live holder clears the mark before that.
        await self._clock.sleep(min(max(busy.expires_in + 0.05, BUSY_RETRY_MIN_SECONDS), self._leases.config.seconds))

    async def _finish(self, slot: PrSlot, mark: Mark | None) -> None:
        """Record the PR's ids (fenced) and give the lease up; clear the mark this cycle answered unless the
        cycle failed. A newer mark makes the task loop (claim again, debounce, render)."""
        assert self._leases is not None and slot.lease is not None
        lease, slot.lease = slot.lease, None
        try:
            newer = await self._leases.finish(lease, slot.memo(), mark, clear=not slot.failed)
        except LeaseLost as exc:
            log.warning("lease lost before recording; the new holder renders again", extra={"pr": slot.label,
                                                                                            "error": str(exc)})
            return
        except Exception as exc:  # DynamoDB trouble: the mark stays, so this PR is rendered again
            slot.failed = True
            log.warning("could not record the PR's state", extra={"pr": slot.label, "error": str(exc)})
            return
        if newer is not None:
            slot.mark = newer
            self._mark(slot.repo, slot.number)

    async def _cycle(self, slot: PrSlot) -> None:
        slot.cycles += 1
        if self._github is None:
            # Dry run: nothing to send, so nothing to render either; the PR page renders the would-be
            # comment and check run on demand (rendering every busy PR here cost ingest most of its CPU).
            log.debug("dry-run: nothing sent", extra={"pr": slot.label})
            return
        mark = slot.mark if self._leases is not None else None
        if mark is not None:
            if mark.refresh_check:
                for entry in slot.checks.values():
                    entry.payload_hash = None
            if mark.watermark is not None:
                await self._await_watermark(slot, mark.watermark)
        rendered = await self._render(slot.repo, slot.number)
        slot.last_rendered = rendered
        if rendered.comment is None and rendered.check is None:
            return  # no OOT results on this PR: no noise
        installation = await self._installation_for(slot.repo)
        if installation is None:
            log.info("App not installed on the repository; nothing to write", extra={"pr": slot.label})
            return
        if rendered.comment is not None:
            await self._sync_comment(slot, installation, rendered.comment, rendered.short_comment)
        if rendered.check is not None:
            await self._sync_check(slot, installation, rendered.check, may_create=rendered.check_has_results)
        if self.after_write is not None and getattr(rendered, "notices", ()):
            await self.after_write(installation, PrRef(slot.repo, slot.number), rendered)

    async def post_comment(self, installation: int, repo: str, number: int, body: str) -> object:
        """A new comment (not the sticky one), paced and retried like the writer's own writes."""
        assert self._github is not None
        github = self._github
        return await self._call(installation, "comment.create",
                                lambda: github.create_comment(installation, repo, number, body), write=True)

    async def _await_watermark(self, slot: PrSlot, watermark: Watermark) -> None:
        """Return once the warehouse shows the announced row (a replica may lag the insert that landed)."""
        if self._watermark_visible is None:
            return
        deadline = self._clock.monotonic() + self._watermark_wait
        delay = 0.1
        while not await self._watermark_visible(slot.repo, slot.number, watermark):
            if self._clock.monotonic() + delay > deadline:
                raise NotYetVisible(f"the warehouse does not show {watermark.key} v{watermark.version} yet")
            await self._clock.sleep(delay)
            delay = min(delay * 2, 1.0)

    # --- GitHub calls with pacing and retries ------------------------------------------------------
    def pacer(self, installation_id: int) -> Pacer:
        pacer = self._pacers.get(installation_id)
        if pacer is None:
            pacer = self._pacers[installation_id] = Pacer(self.pace, self._clock, state=self._pace_state,
                                                          installation=installation_id)
        return pacer

    async def _call(self, installation_id: int, what: str, fn: Callable[[], Awaitable[T]], *, write: bool,
                    slot: PrSlot | None = None) -> T:
        """One GitHub call; a write waits for its pacing slot and (shared state) enough lease time."""
        pacer = self.pacer(installation_id)
        transient = limited = 0
        while True:
            if write:
                await pacer.slot()
                if self._leases is not None and slot is not None and slot.lease is not None:
                    slot.lease = await self._leases.before_write(slot.lease)
            elif (blocked := pacer.blocked_for) > 0:
                await self._clock.sleep(blocked)
            try:
                result = await fn()
            except RateLimited as exc:
                limited += 1
                waited = await pacer.block_for(exc.retry_after)
                log.warning("GitHub asked to slow down", extra={"installation_id": installation_id, "call": what,
                                                                "status": exc.status, "wait_s": waited})
                if limited > self._rate_limit_retries:
                    raise
                continue
            except Transient as exc:
                transient += 1
                log.warning("GitHub call failed, retrying", extra={"installation_id": installation_id,
                                                                   "call": what, "error": str(exc)})
                if transient > self._transient_retries:
                    raise
                await self._clock.sleep(TRANSIENT_BACKOFF_SECONDS * 2 ** (transient - 1))
                continue
            pacer.succeeded()
            if write:
                self.writes[what] += 1
            return result

    # --- the sticky comment ------------------------------------------------------------------------
    async def _identity(self) -> str | None:
        if self._slug is None and self._github is not None:
            self._slug = await self._github.app_slug()
        return self._slug

    def _is_ours(self, comment: dict[str, Any], slug: str | None) -> bool:
        if COMMENT_MARKER not in str(comment.get("body") or ""):
            return False
        app = comment.get("performed_via_github_app") or {}
        if self._github is not None and isinstance(app, dict) and app.get("id") == self._github.app_id:
            return True
        user = comment.get("user") or {}
        return bool(slug) and isinstance(user, dict) and user.get("login") == f"{slug}[bot]"

    async def _our_comments(self, slot: PrSlot, installation: int) -> list[dict[str, Any]]:
        """This App's marked comments on the PR, oldest first (every page searched)."""
        assert self._github is not None
        github = self._github
        slug = await self._identity()
        comments = await self._call(installation, "comment.list",
                                    lambda: github.list_comments(installation, slot.repo, slot.number), write=False)
        ours = [c for c in comments if self._is_ours(c, slug)]
        return sorted(ours, key=lambda c: int(c["id"]))

    async def _sync_comment(self, slot: PrSlot, installation: int, body: str, short: str | None) -> None:
        assert self._github is not None
        github = self._github
        if slot.comment_id is None:
            ours = await self._our_comments(slot, installation)
            if ours:
                slot.comment_id, slot.comment_hash = int(ours[0]["id"]), digest(ours[0]["body"])
                slot.source_hash = None
                await self._delete_extra(slot, installation, ours[1:])
        if slot.comment_id is not None and digest(body) in (slot.comment_hash, slot.source_hash):
            return  # unchanged: no call
        if slot.comment_id is not None:
            comment_id = slot.comment_id
            try:
                sent = await self._with_fallback(body, short, lambda text: self._call(
                    installation, "comment.update",
                    lambda: github.update_comment(installation, slot.repo, comment_id, text), write=True, slot=slot))
                slot.comment_hash, slot.source_hash = digest(sent), digest(body)
                return
            except NotFound:
                log.info("sticky comment was deleted; creating a new one", extra={"pr": slot.label})
                slot.comment_id = slot.comment_hash = slot.source_hash = None
        sent_holder: dict[str, Any] = {}

        async def create(text: str) -> str:
            sent_holder["comment"] = await self._call(
                installation, "comment.create",
                lambda: github.create_comment(installation, slot.repo, slot.number, text), write=True, slot=slot)
            return text

        sent = await self._with_fallback(body, short, create)
        created = sent_holder["comment"]
        slot.comment_id, slot.comment_hash, slot.source_hash = int(created["id"]), digest(sent), digest(body)
        # No conditional writes on GitHub: another writer may have created one too. Keep the oldest.
        ours = await self._our_comments(slot, installation)
        if ours and (len(ours) > 1 or int(ours[0]["id"]) != slot.comment_id):
            keep = ours[0]
            await self._delete_extra(slot, installation, [c for c in ours if c is not keep])
            slot.comment_id, slot.comment_hash = int(keep["id"]), digest(keep.get("body"))
            if slot.comment_hash != digest(sent):
                keep_id = slot.comment_id
                await self._call(installation, "comment.update",
                                 lambda: github.update_comment(installation, slot.repo, keep_id, sent), write=True,
                                 slot=slot)
                slot.comment_hash = digest(sent)

    async def _delete_extra(self, slot: PrSlot, installation: int, extra: list[dict[str, Any]]) -> None:
        assert self._github is not None
        github = self._github
        for comment in extra:
            comment_id = int(comment["id"])
            try:
                await self._call(installation, "comment.delete",
                                 lambda cid=comment_id: github.delete_comment(installation, slot.repo, cid), write=True,
                                 slot=slot)
            except NotFound:
                pass  # already gone
            log.info("duplicate sticky comment deleted", extra={"pr": slot.label, "comment_id": comment_id})

    @staticmethod
    async def _with_fallback(body: str, short: str | None, send: Callable[[str], Awaitable[Any]]) -> str:
        """Send ``body``; on 422 (too long, despite the renderer's budget) send the short body instead."""
        try:
            await send(body)
            return body
        except Unprocessable:
            if not short or short == body:
                raise
            log.warning("GitHub refused the comment body (422); posting the short fallback")
            await send(short)
            return short

    # --- the check run -----------------------------------------------------------------------------
    async def _sync_check(self, slot: PrSlot, installation: int, check: CheckRunOutput, *, may_create: bool) -> None:
        assert self._github is not None
        github = self._github
        entry = slot.checks.get(check.head_sha)
        if entry is None:
            if not may_create:
                return  # no result for this commit yet: its check run comes with the first one
            found = await self._call(installation, "check.find", lambda: github.find_check_run(
                installation, slot.repo, check.head_sha, check.name, check.external_id), write=False)
            if found is not None:
                entry = CheckEntry(found, None)
        update = check_payload(check, create=False)
        update_hash = payload_digest(update)
        if entry is not None:
            if entry.payload_hash == update_hash:
                return  # unchanged: no call
            check_id = entry.check_run_id
            try:
                await self._call(installation, "check.update",
                                 lambda: github.update_check_run(installation, slot.repo, check_id, update), write=True,
                                 slot=slot)
                entry.payload_hash = update_hash
                slot.checks = {check.head_sha: entry}
                return
            except (NotFound, Unprocessable) as exc:
                log.info("check run cannot be updated; creating a new one",
                         extra={"pr": slot.label, "status": exc.status})
        create = check_payload(check, create=True)
        created = await self._call(installation, "check.create",
                                   lambda: github.create_check_run(installation, slot.repo, create), write=True,
                                   slot=slot)
        # Only the current head's check run is kept: older commits keep theirs as they were.
        slot.checks = {check.head_sha: CheckEntry(int(created["id"]), update_hash)}
