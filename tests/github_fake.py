"""One stateful fake of the GitHub REST endpoints the bot uses, installed as respx routes.

It keeps comments and check runs per repository, pages comment lists like GitHub (``Link: rel="next"``),
refuses bodies over GitHub's limit with 422, records every request, and lets a test queue failures
(a status with headers, or an exception such as a timeout) for the next matching calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import dataclasses
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import respx

FAKE_API = "https://api.github.test"
APP_ID = 4242
APP_SLUG = "oot-hud-test"
INSTALLATION_ID = 777
COMMENT_LIMIT = 65_536
CHECK_TEXT_LIMIT = 65_535


@dataclasses.dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    json: Any
    status: int

    @property
    def kind(self) -> str:
        """A short name for the call: comment.create, comment.update, check.create, ..."""
        return _kind(self.method, self.path)


@dataclasses.dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    make: Callable[[httpx.Request], httpx.Response]
    times: int


def _kind(method: str, path: str) -> str:
    table = [
        ("POST", r"/app/installations/\d+/access_tokens$", "token"),
        ("GET", r"/app$", "app"),
        ("GET", r"/repos/[^/]+/[^/]+/installation$", "installation"),
        ("GET", r"/issues/\d+/comments$", "comment.list"),
        ("POST", r"/issues/\d+/comments$", "comment.create"),
        ("GET", r"/issues/comments/\d+$", "comment.get"),
        ("PATCH", r"/issues/comments/\d+$", "comment.update"),
        ("DELETE", r"/issues/comments/\d+$", "comment.delete"),
        ("GET", r"/commits/[^/]+/check-runs$", "check.find"),
        ("POST", r"/check-runs$", "check.create"),
        ("PATCH", r"/check-runs/\d+$", "check.update"),
        ("GET", r"^/repos/[^/]+/[^/]+/contents/.+$", "contents.get"),
    ]
    for verb, pattern, name in table:
        if method == verb and re.search(pattern, path):
            return name
    return f"{method} {path}"


WRITE_KINDS = frozenset({"comment.create", "comment.update", "comment.delete", "check.create", "check.update"})


class GitHubFake:
    """State + request log. ``install(router)`` adds two respx routes: token exchange and the REST API."""

    def __init__(self, base_url: str = FAKE_API, *, app_id: int = APP_ID, slug: str = APP_SLUG,
                 installation_id: int = INSTALLATION_ID) -> None:
        self.base_url = base_url.rstrip("/")
        self.base_path = httpx.URL(self.base_url).path.rstrip("/")
        self.app_id = app_id
        self.slug = slug
        self.installation_id = installation_id
        self.comments: dict[int, dict[str, Any]] = {}  # id -> comment (with "repo" and "number")
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.tokens_issued = 0
        self._ids = itertools.count(1000)
        self._faults: list[Fault] = []
        self.on_request: Callable[[Recorded], None] | None = None
        self.token_ttl = timedelta(hours=1)
        self.installed_repos: set[str] | None = None  # None: installed everywhere
        self.files: dict[tuple[str, str], str] = {}  # (repo, path) -> text on the default branch

    # --- test helpers ------------------------------------------------------------------------------
    def install(self, router: respx.MockRouter) -> None:
        router.post(url__regex=rf"^{re.escape(self.base_url)}/app/installations/\d+/access_tokens$",
                    name="token").mock(side_effect=self._handle)
        router.route(url__startswith=self.base_url + "/", name="api").mock(side_effect=self._handle)

    def fail(self, method: str, path_regex: str, status: int = 502, *, headers: dict[str, str] | None = None,
             body: Any = None, times: int = 1) -> None:
        """The next ``times`` calls matching ``method`` and ``path_regex`` answer ``status``."""

        def make(request: httpx.Request) -> httpx.Response:
            return httpx.Response(status, headers=headers or {}, json=body or {"message": f"fake {status}"})

        self._faults.append(Fault(method, re.compile(path_regex), make, times))

    def raise_on(self, method: str, path_regex: str, exc: type[Exception] = httpx.ReadTimeout, *,
                 times: int = 1) -> None:
        def make(request: httpx.Request) -> httpx.Response:
            raise exc("fake failure", request=request)  # type: ignore[call-arg]

        self._faults.append(Fault(method, re.compile(path_regex), make, times))

    def add_comment(self, repo: str, number: int, body: str, *, login: str = "someone",
                    app_id: int | None = None) -> dict[str, Any]:
        """A comment written by a person (or another App), as if posted earlier."""
        return self._new_comment(repo, number, body, login=login, app_id=app_id)

    def pr_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return [c for c in sorted(self.comments.values(), key=lambda c: c["id"])
                if c["repo"] == repo and c["number"] == number]

    def bot_comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return [c for c in self.pr_comments(repo, number) if c["user"]["login"] == f"{self.slug}[bot]"]

    def runs_for(self, repo: str, sha: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.check_runs.values() if r["repo"] == repo and (sha is None or r["head_sha"] == sha)]

    def calls(self, *kinds: str) -> list[Recorded]:
        return [r for r in self.requests if not kinds or r.kind in kinds]

    def writes(self) -> list[Recorded]:
        """Content-creating calls that GitHub accepted."""
        return [r for r in self.requests if r.kind in WRITE_KINDS and r.status < 400]

    def sent_bodies(self) -> list[str]:
        """Every comment body and check-run output the bot sent (for safety assertions)."""
        out: list[str] = []
        for r in self.requests:
            if isinstance(r.json, dict):
                if "body" in r.json:
                    out.append(r.json["body"])
                output = r.json.get("output") or {}
                out += [output.get("title", ""), output.get("summary", ""), output.get("text", "")]
        return out

    # --- the fake server ---------------------------------------------------------------------------
    def _handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path[len(self.base_path):] if self.base_path else request.url.path
        body = json.loads(request.content) if request.content else None
        query = parse_qs(request.url.query.decode())
        recorded = Recorded(request.method, path, query, body, 0)
        self.requests.append(recorded)
        if self.on_request is not None:
            self.on_request(recorded)
        response = self._fault(request, path) or self._serve(request, path, body, query)
        recorded.status = response.status_code
        return response

    def _fault(self, request: httpx.Request, path: str) -> httpx.Response | None:
        for fault in self._faults:
            if fault.times > 0 and fault.method == request.method and fault.pattern.search(path):
                fault.times -= 1
                try:
                    return fault.make(request)
                except Exception:
                    self.requests[-1].status = 599  # the exception reaches the client
                    raise
        return None

    def _serve(self, request: httpx.Request, path: str, body: Any, query: dict[str, list[str]]) -> httpx.Response:
        kind = _kind(request.method, path)
        if kind == "token":
            assert request.headers["authorization"].startswith("Bearer "), "token exchange needs the App JWT"
            self.tokens_issued += 1
            expires = (datetime.now(UTC) + self.token_ttl).strftime("%Y-%m-%dT%H:%M:%SZ")
            return httpx.Response(201, json={"token": f"ghs_fake{self.tokens_issued}", "expires_at": expires})
        if kind in ("app", "installation"):
            assert request.headers["authorization"].startswith("Bearer "), "App routes use the JWT"
            if kind == "app":
                return httpx.Response(200, json={"id": self.app_id, "slug": self.slug})
            repo = "/".join(path.split("/")[2:4])
            if self.installed_repos is not None and repo not in self.installed_repos:
                return httpx.Response(404, json={"message": "Not Found"})
            return httpx.Response(200, json={"id": self.installation_id})
        assert request.headers["authorization"].startswith("token ghs_fake"), "installation token expected"
        parts = path.split("/")
        repo = f"{parts[2]}/{parts[3]}" if len(parts) > 3 else ""
        if kind == "comment.list":
            return self._list_comments(repo, int(parts[5]), query)
        if kind == "comment.create":
            if len(body["body"]) > COMMENT_LIMIT:
                return httpx.Response(422, json={"message": "Validation Failed", "errors": [{"code": "custom"}]})
            comment = self._new_comment(repo, int(parts[5]), body["body"], login=f"{self.slug}[bot]",
                                        app_id=self.app_id)
            return httpx.Response(201, json=_public(comment))
        if kind.startswith("comment."):
            comment = self.comments.get(int(parts[-1]))
            if comment is None or comment["repo"] != repo:
                return httpx.Response(404, json={"message": "Not Found"})
            if kind == "comment.get":
                return httpx.Response(200, json=_public(comment))
            if kind == "comment.delete":
                del self.comments[comment["id"]]
                return httpx.Response(204)
            assert comment["user"]["login"] == f"{self.slug}[bot]", "the bot edited someone else's comment"
            if len(body["body"]) > COMMENT_LIMIT:
                return httpx.Response(422, json={"message": "Validation Failed"})
            comment["body"] = body["body"]
            return httpx.Response(200, json=_public(comment))
        if kind == "contents.get":
            file_path = "/".join(parts[5:])
            text = self.files.get((repo, file_path))
            if text is None:
                return httpx.Response(404, json={"message": "Not Found"})
            return httpx.Response(200, json={"type": "file", "encoding": "base64", "path": file_path,
                                             "content": base64.encodebytes(text.encode()).decode()})
        if kind == "check.find":
            sha = parts[5]
            name = query.get("check_name", [None])[0]
            runs = [_public(r) for r in self.runs_for(repo, sha) if name in (None, r["name"])]
            runs.sort(key=lambda r: r["id"], reverse=True)
            return httpx.Response(200, json={"total_count": len(runs), "check_runs": runs})
        if kind == "check.create":
            if _too_long(body):
                return httpx.Response(422, json={"message": "Validation Failed"})
            run = {**body, "id": next(self._ids), "repo": repo, "app": {"id": self.app_id}}
            self.check_runs[run["id"]] = run
            return httpx.Response(201, json=_public(run))
        if kind == "check.update":
            run = self.check_runs.get(int(parts[-1]))
            if run is None:
                return httpx.Response(404, json={"message": "Not Found"})
            if _too_long(body):
                return httpx.Response(422, json={"message": "Validation Failed"})
            run.update(body)
            return httpx.Response(200, json=_public(run))
        return httpx.Response(404, json={"message": f"fake GitHub does not serve {request.method} {path}"})

    def _new_comment(self, repo: str, number: int, body: str, *, login: str, app_id: int | None) -> dict[str, Any]:
        comment_id = next(self._ids)
        comment = {
            "id": comment_id, "repo": repo, "number": number, "body": body,
            "user": {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"},
            "performed_via_github_app": {"id": app_id, "slug": self.slug} if app_id else None,
            "created_at": datetime.now(UTC).isoformat(),
        }
        self.comments[comment_id] = comment
        return comment

    def _list_comments(self, repo: str, number: int, query: dict[str, list[str]]) -> httpx.Response:
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = int(query.get("page", ["1"])[0])
        everything = [_public(c) for c in self.pr_comments(repo, number)]
        chunk = everything[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(everything):
            next_query = urlencode({"per_page": per_page, "page": page + 1})
            headers["link"] = (f'<{self.base_url}/repos/{repo}/issues/{number}/comments?{next_query}>; rel="next", '
                               f'<{self.base_url}/repos/{repo}/issues/{number}/comments?page=1>; rel="first"')
        return httpx.Response(200, json=chunk, headers=headers)


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("repo", "number")}


def _too_long(body: dict[str, Any]) -> bool:
    output = body.get("output") or {}
    return any(len(str(output.get(field, "")).encode()) > CHECK_TEXT_LIMIT for field in ("summary", "text"))


def signed_headers(body: bytes, secret: str, *, event: str, delivery: str) -> dict[str, str]:
    """The headers GitHub sends with a delivery signed by ``secret``."""
    import hashlib
    import hmac

    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": f"sha256={digest}",
            "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/fake"}


class GitHubStandIn:
    """The fake over real HTTP, as slow as GitHub: ``with GitHubStandIn(write_latency=0.4) as hub:`` serves
    ``hub.url`` on a free loopback port (several processes can share it). Content-creating calls take
    ``write_latency`` seconds before they apply and answer; ``done`` logs each accepted write with the
    monotonic time it completed. Read the fake's state through ``snapshot`` (the server runs in a thread)."""

    def __init__(self, *, write_latency: float = 0.4) -> None:
        self.fake = GitHubFake("http://127.0.0.1")
        self.write_latency = write_latency
        self.done: list[tuple[float, Recorded]] = []
        self.arrived: list[float] = []
        self._lock = threading.Lock()
        self._server: contextlib.AbstractContextManager[str] | None = None
        self.url = ""

    def __enter__(self) -> GitHubStandIn:
        from tests.servers import serve

        self._server = serve(self._app())
        self.url = self._server.__enter__()
        self.fake.base_url = self.url
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.__exit__(None, None, None)

    def snapshot(self, read: Callable[[GitHubFake], Any]) -> Any:
        with self._lock:
            return copy.deepcopy(read(self.fake))

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def handle(request: Request) -> Response:
            body = await request.body()
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            outgoing = httpx.Request(request.method, self.fake.base_url + path, headers=request.headers.raw,
                                     content=body)
            if _kind(request.method, request.url.path) in WRITE_KINDS:
                with self._lock:
                    self.arrived.append(time.monotonic())
                await asyncio.sleep(self.write_latency)
            with self._lock:
                answer = self.fake._handle(outgoing)
                recorded = self.fake.requests[-1]
                if recorded.kind in WRITE_KINDS and recorded.status < 400:
                    self.done.append((time.monotonic(), recorded))
            headers = {name: value for name, value in answer.headers.items() if name in ("content-type", "link")}
            return Response(answer.content, status_code=answer.status_code, headers=headers)

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PATCH", "DELETE"])])
