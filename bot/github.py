"""The GitHub REST calls the bot makes, through githubkit with App authentication.

Every call has a timeout, githubkit's own retry is off (it would sleep inside the awaited call; the
writer owns retries and waits), and failures become the few error kinds the writer acts on.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from githubkit.cache import MemCacheStrategy
from githubkit.exception import RequestError, RequestFailed, RequestTimeout

from bot.clock import Clock, RealClock
from bot.logfmt import get_logger

log = get_logger("oot_hud.bot.github")

DEFAULT_CALL_SECONDS = 15.0
DEFAULT_TIMEOUT = httpx.Timeout(DEFAULT_CALL_SECONDS, connect=5.0)
PER_PAGE = 100
MAX_COMMENT_PAGES = 200  # 20,000 comments: beyond that something is wrong, stop paging
USER_AGENT = "oot-hud"


class GitHubError(Exception):
    """A GitHub call failed. The message names the method, path and status, never a credential."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimited(GitHubError):
    """403/429 secondary or primary limit; ``retry_after`` seconds as GitHub named it, or None."""

    def __init__(self, message: str, status: int, retry_after: float | None) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class Transient(GitHubError):
    """5xx, timeout, connection trouble: worth retrying soon."""


class NotFound(GitHubError):
    """404 (e.g. the comment was deleted by a human)."""


class Unprocessable(GitHubError):
    """422 (e.g. a body over GitHub's size limit)."""


class Refused(GitHubError):
    """Any other 4xx (permissions, bad credentials): retrying soon will not help."""


def _retry_after(headers: Mapping[str, str], wall_now: float) -> float | None:
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - wall_now)
        except (TypeError, ValueError):
            return None
    reset = headers.get("x-ratelimit-reset")
    if headers.get("x-ratelimit-remaining") == "0" and reset and reset.strip().isdigit():
        return max(0.0, float(reset) - wall_now)
    return None


def classify(exc: Exception, what: str, wall_now: float) -> GitHubError:
    """Turn a githubkit/httpx failure into one of the error kinds above."""
    if isinstance(exc, RequestFailed):
        response = exc.response.raw_response
        status = response.status_code
        message = f"{what} -> {status}"
        if status in (403, 429):
            retry_after = _retry_after(response.headers, wall_now)
            try:
                text = str(response.json().get("message", ""))
            except Exception:
                text = ""
            if status == 429 or retry_after is not None or "rate limit" in text.lower():
                return RateLimited(message, status, retry_after)
            return Refused(message, status)
        if status == 404:
            return NotFound(message, status)
        if status == 422:
            return Unprocessable(message, status)
        if status >= 500:
            return Transient(message, status)
        return Refused(message, status)
    if isinstance(exc, RequestTimeout):
        return Transient(f"{what} -> timeout")
    if isinstance(exc, RequestError | httpx.HTTPError):
        return Transient(f"{what} -> {type(getattr(exc, 'exc', exc)).__name__}")
    return GitHubError(f"{what} -> {type(exc).__name__}")


class GitHubApi:
    """App-authenticated access; one githubkit client per installation sharing one token cache."""

    def __init__(self, app_id: int | str, private_key: str, *, base_url: str = "https://api.github.com",
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None, clock: Clock | None = None,
                 deadline: float = DEFAULT_CALL_SECONDS) -> None:
        self.app_id = int(app_id)
        # The whole call, however its phases add up: a lease holder counts on a write ending by then.
        self.deadline = deadline
        self._clock = clock or RealClock()
        self._app_auth = AppAuthStrategy(str(app_id), private_key)
        # One cache for JWTs and installation tokens: githubkit caches each installation token until a
        # minute before it expires and fetches a fresh one on the next call.
        self._cache = MemCacheStrategy()
        self._options: dict[str, Any] = {
            "base_url": base_url, "timeout": timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            "auto_retry": False, "http_cache": False, "cache_strategy": self._cache,
            "user_agent": USER_AGENT, "async_transport": transport, "rest_api_validate_body": False,
            # githubkit opens a client per call; building the TLS context once saves ~70 ms a call.
            "ssl_verify": httpx.create_ssl_context(),
        }
        self._app_client = GitHub(self._app_auth, **self._options)
        self._clients: dict[int, GitHub[Any]] = {}

    def _client(self, installation_id: int) -> GitHub[Any]:
        client = self._clients.get(installation_id)
        if client is None:
            strategy = AppInstallationAuthStrategy(str(self.app_id), self._app_auth.private_key, installation_id)
            client = self._clients[installation_id] = GitHub(strategy, **self._options)
        return client

    async def _call(self, client: GitHub[Any], method: str, url: str, **kwargs: Any) -> httpx.Response:
        what = f"{method} {url.split('?')[0]}"
        try:
            async with asyncio.timeout(self.deadline):
                response = await client.arequest(method, url, **kwargs)
        except TimeoutError:
            raise Transient(f"{what} -> no answer in {self.deadline:g} s") from None
        except Exception as exc:
            raise classify(exc, what, self._clock.wall()) from None
        return response.raw_response

    # --- App-level (JWT) ---------------------------------------------------------------------------
    async def app_slug(self) -> str:
        response = await self._call(self._app_client, "GET", "/app")
        return str(response.json()["slug"])

    async def repo_installation(self, repo: str) -> int:
        response = await self._call(self._app_client, "GET", f"/repos/{_repo(repo)}/installation")
        return int(response.json()["id"])

    # --- contents ----------------------------------------------------------------------------------
    async def file_text(self, installation_id: int, repo: str, path: str) -> str:
        """A file's text from the repository's default branch (``contents: read``)."""
        url = f"/repos/{_repo(repo)}/contents/{quote(path, safe='/')}"
        body = (await self._call(self._client(installation_id), "GET", url)).json()
        if not isinstance(body, dict) or body.get("type") != "file" or body.get("encoding") != "base64":
            raise GitHubError(f"GET {url} -> not a file GitHub sent inline")
        return base64.b64decode(str(body.get("content") or "")).decode("utf-8")

    # --- comments ----------------------------------------------------------------------------------
    async def list_comments(self, installation_id: int, repo: str, number: int) -> list[dict[str, Any]]:
        """Every comment of the issue/PR, all pages, oldest first."""
        client = self._client(installation_id)
        url: str | None = f"/repos/{_repo(repo)}/issues/{number}/comments?per_page={PER_PAGE}"
        comments: list[dict[str, Any]] = []
        for _ in range(MAX_COMMENT_PAGES):
            if url is None:
                break
            response = await self._call(client, "GET", url)
            page = response.json()
            if not isinstance(page, list):
                raise Transient(f"GET comments -> unexpected body of type {type(page).__name__}")
            comments.extend(item for item in page if isinstance(item, dict))
            url = response.links.get("next", {}).get("url")
        return comments

    async def get_comment(self, installation_id: int, repo: str, comment_id: int) -> dict[str, Any]:
        response = await self._call(self._client(installation_id), "GET",
                                    f"/repos/{_repo(repo)}/issues/comments/{comment_id}")
        return dict(response.json())

    async def create_comment(self, installation_id: int, repo: str, number: int, body: str) -> dict[str, Any]:
        response = await self._call(self._client(installation_id), "POST",
                                    f"/repos/{_repo(repo)}/issues/{number}/comments", json={"body": body})
        return dict(response.json())

    async def update_comment(self, installation_id: int, repo: str, comment_id: int, body: str) -> dict[str, Any]:
        response = await self._call(self._client(installation_id), "PATCH",
                                    f"/repos/{_repo(repo)}/issues/comments/{comment_id}", json={"body": body})
        return dict(response.json())

    async def delete_comment(self, installation_id: int, repo: str, comment_id: int) -> None:
        await self._call(self._client(installation_id), "DELETE",
                         f"/repos/{_repo(repo)}/issues/comments/{comment_id}")

    # --- check runs --------------------------------------------------------------------------------
    async def find_check_run(self, installation_id: int, repo: str, sha: str, name: str,
                             external_id: str) -> int | None:
        """This App's newest check run ``name`` for this PR (``external_id``) on ``sha``, after a restart."""
        url = (f"/repos/{_repo(repo)}/commits/{quote(sha, safe='')}/check-runs"
               f"?check_name={quote(name, safe='')}&filter=latest&app_id={self.app_id}&per_page={PER_PAGE}")
        response = await self._call(self._client(installation_id), "GET", url)
        for run in response.json().get("check_runs", []):
            app = run.get("app") or {}
            if (run.get("name") == name and app.get("id") in (None, self.app_id)
                    and run.get("external_id") == external_id):
                return int(run["id"])
        return None

    async def create_check_run(self, installation_id: int, repo: str, payload: dict[str, Any]) -> dict[str, Any]:
        response = await self._call(self._client(installation_id), "POST",
                                    f"/repos/{_repo(repo)}/check-runs", json=payload)
        return dict(response.json())

    async def update_check_run(self, installation_id: int, repo: str, check_run_id: int,
                               payload: dict[str, Any]) -> dict[str, Any]:
        response = await self._call(self._client(installation_id), "PATCH",
                                    f"/repos/{_repo(repo)}/check-runs/{check_run_id}", json=payload)
        return dict(response.json())


def _repo(repo: str) -> str:
    owner, _, name = repo.partition("/")
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"
