"""``GET /api/oot/query/{name}?param=value…``: a saved query's rows as JSON, for HUD-like consumers and scripts.

Parameters are parsed strictly by the saved query's declaration: unknown query -> 404, an undeclared,
missing (and without a default in params.json), repeated or mistyped parameter -> 400 with the message.
Datetimes are ISO-8601 strings (UTC).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from oot_hud.responses import WAREHOUSE_DOWN, json_error
from oot_hud.services import Services
from sql.records import format_time, parse_time
from sql.saved import QueryNotFound, QueryParamError, SavedQuery, load
from sql.warehouse import WarehouseError

log = logging.getLogger("oot_hud.query_api")
router = APIRouter(prefix="/api/oot/query", tags=["query"])
# String parameters that the saved queries parse as an instant ('' = the server's clock).
INSTANT_PARAMS = frozenset({"now"})


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


def check_params(query: SavedQuery, items: list[tuple[str, str]]) -> dict[str, str]:
    """Query-string pairs -> a parameter dict; repeated names and malformed instants are refused."""
    given: dict[str, str] = {}
    for name, value in items:
        if name in given:
            raise QueryParamError(f"parameter {name} is given more than once")
        given[name] = value
    for name in INSTANT_PARAMS & set(query.params) & set(given):
        if given[name]:
            try:
                parse_time(given[name])
            except ValueError:
                raise QueryParamError(f"parameter {name} must be an ISO-8601 instant, or empty for now") from None
    return given


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value if value.tzinfo else value.replace(tzinfo=UTC))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


_ROWS = {"description": "the rows, one JSON object each (datetimes as ISO-8601 UTC strings)",
         "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}}


@router.get("/{name}", summary="run a saved query; its declared parameters come from the query string",
            responses={200: _ROWS, 400: json_error("a parameter is undeclared, missing, repeated or mistyped"),
                       404: json_error("no saved query of that name"), 503: json_error(WAREHOUSE_DOWN)})
async def run_query(name: str, request: Request) -> JSONResponse:
    try:
        query = load(name)
    except QueryNotFound:
        return _error(404, f"no saved query named {name[:80]!r}")
    services: Services = await request.app.state.services.settled()
    try:
        params = check_params(query, list(request.query_params.multi_items()))
        rows = await asyncio.to_thread(query.run, services.warehouse, params, from_text=True)
    except QueryParamError as exc:
        return _error(400, str(exc))
    except WarehouseError as exc:
        log.error("saved query %s failed: %s", name, exc)
        return _error(503, "the results warehouse did not answer; try again shortly")
    return JSONResponse([jsonable(row) for row in rows])
