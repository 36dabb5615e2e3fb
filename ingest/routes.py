"""``POST /api/oot/results``: auth, size cap, JSON, extraction, rate limit, store; the contract's responses."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from ingest.auth import authorised
from ingest.body import BadContentLength, BodyTooLarge, read_capped
from ingest.extract import ExtractionError, extract
from ingest.ratelimit import Limiter
from ingest.schemas import Accepted, Refused, request_body_schema
from ingest.stores.base import Outcome, ResultStore
from renderers.logfmt import kv

log = logging.getLogger("ingest.routes")

RESULTS_PATH = "/api/oot/results"
MAX_BODY_BYTES = 2 * 1024 * 1024
STORE_FAILED = "the result store failed; try again"
OTHER_METHODS = ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True)
class IngestContext:
    """What the endpoint needs; the app factory provides it (tests may build their own)."""

    store: ResultStore
    relay_tokens: Sequence[str]
    limiter: Limiter
    max_body_bytes: int = MAX_BODY_BYTES
    clock: Callable[[], datetime] = _utcnow


IngestContextProvider = Callable[[Request], IngestContext]
CONTEXT_STATE = "ingest_context"  # app.state attribute the app factory sets to a provider


async def ingest_context(request: Request) -> IngestContext:
    """The endpoint's context, from the provider the app factory put on ``app.state``.

    Wired through app state rather than ``app.dependency_overrides``: while any override is registered,
    FastAPI rebuilds every route's dependency tree (signature inspection, annotation evaluation) on every
    request, which cost ~1 ms per result. Tests may still override this dependency.
    """
    provider: IngestContextProvider | None = getattr(request.app.state, CONTEXT_STATE, None)
    if provider is None:
        raise RuntimeError(f"app.state.{CONTEXT_STATE} is not set: the app factory must provide it")
    return provider(request)


class IngestRoute(APIRoute):
    """Turns FastAPI's own request validation errors into the contract's 400 shape (never a 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(part) for part in first.get("loc", ()))
                return as_response(_refuse(400, f"{where or 'request'}: {first.get('msg', 'invalid request')}"))

        return route_handler


router = APIRouter(route_class=IngestRoute, tags=["ingest"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Accepted, "description": "stored (`status` is the record's status), or `stale`: older "
          "than what is stored (e.g. in_progress after completed), nothing changed"},
    400: {"model": Refused, "description": "not JSON, wrong shape, a missing or invalid field: the message "
          "names the field and says why; final, do not retry"},
    401: {"model": Refused, "description": "missing or wrong relay token"},
    405: {"model": Refused, "description": "any method other than POST on this path"},
    413: {"model": Refused, "description": "body over 2 MiB (exactly 2 MiB is accepted)"},
    429: {"model": Refused, "description": "this downstream repository is over its rate limit; see "
          "`Retry-After` (seconds)", "headers": {"Retry-After": {"schema": {"type": "integer"}}}},
    500: {"model": Refused, "description": "the store failed; a generic message, retry"},
}


@router.post(
    RESULTS_PATH,
    summary="Post one CI job result (the relay's callback)",
    response_model=Accepted,
    responses=_RESPONSES,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": request_body_schema()}}}},
)
async def post_result(request: Request, ctx: IngestContext = Depends(ingest_context)) -> Response:  # noqa: B008
    """Authenticate, read at most the cap, extract the job record, rate-limit its repo, upsert it."""
    # Served apps answer this path in ``ResultsEndpoint`` (below) before FastAPI routes it; this route
    # documents it and answers the same way for an app that mounts the router without that middleware.
    return as_response(await handle_result(ctx, request.headers, request.stream()))


@router.api_route(RESULTS_PATH, methods=OTHER_METHODS, include_in_schema=False)
async def other_methods() -> Response:
    return as_response(_refuse(405, "only POST is allowed on this path", headers={"Allow": "POST"}))


class _Constant(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _Constant(f"{name} is not valid JSON")


# One decoder: json.loads with any keyword argument builds a new decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(raw: bytes) -> Any:
    """Strict JSON from the body bytes, or ``ExtractionError`` saying what is wrong with it."""
    if not raw.strip():
        raise ExtractionError("the body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ExtractionError(f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise ExtractionError(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ExtractionError("the body is not acceptable JSON: nested too deeply") from None
    except ValueError as exc:  # NaN/Infinity, integers with thousands of digits
        raise ExtractionError(f"the body is not acceptable JSON: {exc}") from None


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    """An answer of the endpoint: status, JSON body bytes, extra headers."""

    status: int
    body: bytes
    headers: dict[str, str] | None = None


# Starlette's JSONResponse rendering, with one encoder instead of json.dumps' per-call setup.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _reply(status: int, content: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, _ENCODER.encode(content).encode("utf-8"), headers)


async def handle_result(ctx: IngestContext, headers: Mapping[str, str], chunks: AsyncIterator[bytes]) -> Reply:
    """Authenticate, read at most the cap, extract the job record, rate-limit its repo, upsert it."""
    if not authorised(headers, ctx.relay_tokens):
        _log_refusal(401, "missing or wrong relay token")
        return _refuse(401, "missing or wrong relay token (X-OOT-Relay-Token)")
    try:
        raw = await read_capped(headers, chunks, ctx.max_body_bytes)
    except BodyTooLarge as exc:
        _log_refusal(413, str(exc))
        # The rest of the body is never read, so the connection cannot be reused.
        return _refuse(413, str(exc), headers={"Connection": "close"})
    except BadContentLength as exc:
        return _refuse(400, str(exc), headers={"Connection": "close"})
    except ClientDisconnect:
        return _refuse(400, "the client disconnected before sending the whole body")
    try:
        record = extract(parse_json(raw), received_at=ctx.clock())
    except ExtractionError as exc:
        _log_refusal(400, str(exc))
        return _refuse(400, str(exc))

    decision = await ctx.limiter.admit(record.downstream_repo)
    if not decision.allowed:
        _log_refusal(429, "rate limited", verified_repo=record.downstream_repo, dynamoKey=record.key)
        return _refuse(429, f"{record.downstream_repo} is over its limit of {ctx.limiter.per_minute} results a "
                       f"minute; retry after {decision.retry_after_s} s",
                       headers={"Retry-After": str(decision.retry_after_s)})
    try:
        result = await ctx.store.upsert(record)
    except Exception as exc:  # any store failure is retryable for the relay; details go to the log only
        log.error("%s", kv(event="store_failed", dynamoKey=record.key, verified_repo=record.downstream_repo,
                           store=ctx.store.name, error=f"{type(exc).__name__}: {exc}"))
        return _refuse(500, STORE_FAILED)
    stale = result.outcome is Outcome.STALE
    # DEBUG, not INFO: the warehouse already records every accepted write (received_at, version), and a log
    # line per result cost ~15 % of the event loop's time at full load (docs/ingest.md). Refusals stay INFO.
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s", kv(event="result_stale" if stale else "result_stored", dynamoKey=record.key,
                          verified_repo=record.downstream_repo, status=record.status, version=result.version))
    return _reply(200, {"ok": True, "status": "stale" if stale else result.status, "dynamoKey": record.key})


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return _reply(status, {"ok": False, "error": message}, headers)


def as_response(reply: Reply) -> Response:
    return Response(reply.body, status_code=reply.status, headers=reply.headers, media_type="application/json")


class ResultsEndpoint:
    """The ASGI app for ``POST /api/oot/results`` alone; the app factory routes that request here first.

    The hottest path of the service skips FastAPI's per-request telemetry checks (they read the
    environment), middleware, routing, dependency solving and response classes: together about half of
    the event loop's time per result (docs/ingest.md). It answers through ``handle_result`` with the
    context the app provides, like the documented route, so both answer alike.
    """

    def __init__(self, context: IngestContextProvider) -> None:
        self.context = context

    @staticmethod
    def handles(scope: Scope) -> bool:
        return scope["type"] == "http" and scope["path"] == RESULTS_PATH and scope["method"] == "POST"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            request = Request(scope, receive)
            # A plain dict (the first of repeated headers wins, as in Starlette's Headers): the handler looks
            # up three names, and Headers scans and lower-cases the list for each.
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(scope["headers"])}
            await send_reply(send_tracked, await handle_result(self.context(request), headers, request.stream()))
        except Exception:  # outside FastAPI's error middleware: a bug here still answers in the contract's shape
            log.exception("event=ingest_handler_failed")
            if started:
                raise
            await send_reply(send, _refuse(500, STORE_FAILED))


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(reply.body)).encode())]
    if reply.headers:
        headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


def _log_refusal(status: int, reason: str, **fields: Any) -> None:
    log.info("%s", kv(event="result_refused", http_status=status, reason=reason, **fields))
