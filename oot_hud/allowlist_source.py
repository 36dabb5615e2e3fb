"""The current upstream allowlist: read from a file, a URL or (through the App) the upstream repository,
kept in memory and on disk, refreshed periodically and on a ``push`` that touches it.

A copy that fails to read or to parse is logged and the last good copy kept; until a first good copy
exists, ``current`` is None and every consumer behaves as without an allowlist.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from bot.logfmt import get_logger
from policy.allowlist import DEFAULT_PATH, MAX_BYTES, Allowlist, AllowlistError, parse_allowlist

log = get_logger("oot_hud.allowlist")

FETCH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
GITHUB_PREFIX = "github:"
# (upstream repo, path in it) -> the file's text from the repository's default branch, through the App.
GitHubFetch = Callable[[str, str], Awaitable[str]]

_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


@dataclasses.dataclass(frozen=True, slots=True)
class Location:
    """Where the allowlist is read: ``kind`` "file", "url" or "github".

    ``repo``/``ref``/``path`` name the upstream file when known (a GitHub URL, or ``github:``), so that a
    push to that branch touching that path triggers a refresh; ``ref`` None = the default branch."""

    kind: str
    target: str  # the path, the URL, or "owner/repo"
    repo: str | None = None
    ref: str | None = None
    path: str = DEFAULT_PATH

    @property
    def display(self) -> str:
        """Safe to log and show: a URL without its query string or credentials."""
        if self.kind != "url":
            return f"{GITHUB_PREFIX}{self.target}:{self.path}" if self.kind == "github" else self.target
        parts = urlsplit(self.target)
        return urlunsplit((parts.scheme, parts.hostname or "", parts.path, "", ""))


def parse_location(text: str) -> Location:
    """``/path/to/allowlist.yml``, ``https://…`` (a github.com ``blob`` URL is read raw), or
    ``github:owner/repo[:path]`` (the App reads ``path``, default ``.github/allowlist.yml``, from the default
    branch). Raises ValueError with the reason."""
    text = text.strip()
    if text.startswith(GITHUB_PREFIX):
        repo, _, path = text.removeprefix(GITHUB_PREFIX).partition(":")
        if not _REPO.fullmatch(repo):
            raise ValueError(f"{text!r}: expected github:owner/repo[:path]")
        path = path.strip("/") or DEFAULT_PATH
        return Location("github", repo, repo=repo, path=path)
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        segments = [segment for segment in parts.path.split("/") if segment]
        if parts.hostname == "github.com" and len(segments) >= 5 and segments[2] == "blob":
            owner, name, _, ref, *rest = segments
            raw = f"https://raw.githubusercontent.com/{owner}/{name}/{ref}/{'/'.join(rest)}"
            return Location("url", raw, repo=f"{owner}/{name}", ref=ref, path="/".join(rest))
        if parts.hostname == "raw.githubusercontent.com" and len(segments) >= 4:
            owner, name, ref, *rest = segments
            return Location("url", text, repo=f"{owner}/{name}", ref=ref, path="/".join(rest))
        return Location("url", text)
    if not text:
        raise ValueError("the allowlist location is empty")
    return Location("file", text)


@dataclasses.dataclass(frozen=True, slots=True)
class AllowlistStatus:
    """What pages and logs say about the copy in use."""

    location: str
    loaded_at: datetime | None  # when the copy in use was read (None: none yet)
    from_cache: bool  # the copy in use came from the disk cache (the source has not answered yet)
    error: str | None  # the last refresh's failure, cleared by the next success
    error_at: datetime | None


class AllowlistSource:
    """The current allowlist (``current``), refreshed in the background; safe to read from any thread."""

    def __init__(self, location: Location, *, refresh_seconds: float = 300.0, cache_path: Path | None = None,
                 fetch_github: GitHubFetch | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if location.kind == "github" and fetch_github is None:
            raise ValueError(f"OOT_HUD_ALLOWLIST={location.display} is read through the GitHub App: "
                             "set the App's credentials, or use a file or URL")
        self.location = location
        self._refresh_seconds = refresh_seconds
        self._cache_path = cache_path
        self._fetch_github = fetch_github
        self._transport = transport
        self._clock = clock
        self._current: Allowlist | None = None
        self._text: str | None = None
        self._etag: str | None = None
        self._loaded_at: datetime | None = None
        self._from_cache = False
        self._error: str | None = None
        self._error_at: datetime | None = None
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[bool]] = set()
        self._listeners: list[Callable[[], None]] = []
        self.refreshes = 0  # attempts, for tests and logs

    @property
    def current(self) -> Allowlist | None:
        return self._current

    @property
    def status(self) -> AllowlistStatus:
        return AllowlistStatus(self.location.display, self._loaded_at, self._from_cache, self._error,
                               self._error_at)

    # --- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the disk cache, read the source once, then refresh every ``refresh_seconds``."""
        self._loop = asyncio.get_running_loop()
        self._load_cache()
        await self.refresh("start")
        self._task = self._loop.create_task(self._periodic(), name="allowlist refresh")

    async def stop(self) -> None:
        tasks = [task for task in (self._task, *self._pending) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            await self.refresh("periodic")

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) whenever a copy different from the one in use is installed,
        after it is: the levels it assigns decide which backends gate open PRs."""
        self._listeners.append(listener)

    # --- push (bot.context.AllowlistWatch) ---------------------------------------------------------
    def watched_path(self, repo: str, branch: str, default_branch: str) -> str | None:
        """The path whose change on ``repo``'s ``branch`` should refresh the allowlist, else None."""
        if self.location.repo is None or repo.lower() != self.location.repo.lower():
            return None
        return self.location.path if branch == (self.location.ref or default_branch) else None

    def changed(self, repo: str) -> None:
        """A push touched the file: refresh now (in the background; callable from any thread)."""
        if self._loop is None:
            return

        def schedule() -> None:
            task = asyncio.get_running_loop().create_task(self.refresh(f"push to {repo}"))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        self._loop.call_soon_threadsafe(schedule)

    async def idle(self) -> None:
        """Wait for refreshes a push scheduled (tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    # --- reading -----------------------------------------------------------------------------------
    async def refresh(self, reason: str = "manual") -> bool:
        """Read the source now; True when a good copy is in use afterwards (new or unchanged)."""
        async with self._lock:
            self.refreshes += 1
            started = time.monotonic()
            try:
                text = await self._read()
                if text is not None and text != self._text:  # None: not modified since the last read
                    allowlist = parse_allowlist(text)
                    replaced = self._text is not None  # a copy was in use (read before, or the disk cache)
                    self._install(allowlist, text)
                    self._save_cache(text)
                    log.info("allowlist loaded", extra={"location": self.location.display, "reason": reason,
                                                        "backends": len(allowlist)})
                    if replaced:
                        self._changed()
                self._loaded_at, self._from_cache = self._clock(), False
                self._error = self._error_at = None
                return True
            except Exception as exc:  # unreadable, unparsable, a GitHub or HTTP failure: keep the last good copy
                self._error, self._error_at = _reason(exc), self._clock()
            log.error("allowlist refresh failed; keeping the last good copy",
                      extra={"location": self.location.display, "reason": reason, "error": self._error,
                             "kept": self._current is not None,
                             "elapsed_ms": round((time.monotonic() - started) * 1000)})
            return False

    async def _read(self) -> str | None:
        if self.location.kind == "file":
            return await asyncio.to_thread(_read_file, Path(self.location.target))
        if self.location.kind == "github":
            assert self._fetch_github is not None
            return await self._fetch_github(self.location.target, self.location.path)
        return await self._read_url()

    async def _read_url(self) -> str | None:
        headers = {"If-None-Match": self._etag} if self._etag and self._text is not None else {}
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, transport=self._transport,
                                     follow_redirects=True) as client:
            async with client.stream("GET", self.location.target, headers=headers) as response:
                if response.status_code == 304:
                    return None
                if response.status_code != 200:
                    raise LookupError(f"GET answered {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BYTES:
                        raise AllowlistError(f"the file is larger than {MAX_BYTES:,} bytes")
                text = body.decode("utf-8")
                self._etag = response.headers.get("etag")
                return text

    def _changed(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:  # a listener's failure must not make a good copy look unreadable
                log.exception("allowlist change listener failed")

    def _install(self, allowlist: Allowlist, text: str) -> None:
        self._current, self._text = allowlist, text  # one reference swap each: readers never see a mix

    # --- disk cache --------------------------------------------------------------------------------
    def _load_cache(self) -> None:
        if self._cache_path is None or not self._cache_path.exists():
            return
        try:
            text = self._cache_path.read_text(encoding="utf-8")
            self._install(parse_allowlist(text), text)
        except (OSError, UnicodeDecodeError, AllowlistError) as exc:
            log.warning("allowlist cache unreadable, ignored", extra={"error": _reason(exc)})
            return
        self._loaded_at = datetime.fromtimestamp(self._cache_path.stat().st_mtime, UTC)
        self._from_cache = True

    def _save_cache(self, text: str) -> None:
        if self._cache_path is None:
            return
        try:
            self._cache_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._cache_path.with_suffix(".tmp")
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, self._cache_path)
        except OSError as exc:  # the cache only helps a restart while the source is down
            log.warning("allowlist cache not written", extra={"error": _reason(exc)})


def _read_file(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise AllowlistError(f"the file is larger than {MAX_BYTES:,} bytes")
    return data.decode("utf-8")


def _reason(exc: BaseException) -> str:
    """A one-line reason without secrets: exception texts here name fields, statuses and paths only."""
    if isinstance(exc, httpx.HTTPError):
        return type(exc).__name__  # an httpx message can quote the URL, query string included
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
