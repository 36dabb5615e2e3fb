"""``POST /api/oot/results``: auth, size cap, JSON, extraction, rate limit, store; the contract's responses."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

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
                return _refuse(400, f"{where or 'request'}: {first.get('msg', 'invalid request')}")

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
    if not authorised(request.headers, ctx.relay_tokens):
        _log_refusal(401, "missing or wrong relay token")
        return _refuse(401, "missing or wrong relay token (X-OOT-Relay-Token)")
    try:
        raw = await read_capped(request.headers, request.stream(), ctx.max_body_bytes)
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
    status = "stale" if result.outcome is Outcome.STALE else result.status
    log.info("%s", kv(event="result_" + ("stale" if result.outcome is Outcome.STALE else "stored"),
                      dynamoKey=record.key, verified_repo=record.downstream_repo, status=record.status,
                      version=result.version))
    return JSONResponse({"ok": True, "status": status, "dynamoKey": record.key})


@router.api_route(RESULTS_PATH, methods=OTHER_METHODS, include_in_schema=False)
async def other_methods() -> Response:
    return _refuse(405, "only POST is allowed on this path", headers={"Allow": "POST"})


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


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status, headers=headers)


def _log_refusal(status: int, reason: str, **fields: Any) -> None:
    log.info("%s", kv(event="result_refused", http_status=status, reason=reason, **fields))

