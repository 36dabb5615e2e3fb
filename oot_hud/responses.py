"""OpenAPI declarations of every answer a route gives, so the document is a contract clients can rely on.

``tests/test_fuzz_api.py`` drives every operation of the live document with schemathesis and fails on an
answer whose status code or body the route does not declare here.
"""

from __future__ import annotations

from typing import Any

Responses = dict[int | str, dict[str, Any]]

_PLAIN = {"text/plain": {"schema": {"type": "string"}}}
_HTML = {"text/html": {"schema": {"type": "string"}}}
ERROR_JSON_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["ok", "error"],
    "properties": {"ok": {"type": "boolean", "enum": [False]}, "error": {"type": "string"}},
}


def plain(description: str) -> dict[str, Any]:
    """An answer with a short plain-text message."""
    return {"description": description, "content": _PLAIN}


def json_error(description: str) -> dict[str, Any]:
    """An answer ``{"ok": false, "error": "..."}``."""
    return {"description": description, "content": {"application/json": {"schema": ERROR_JSON_SCHEMA}}}


def html_page(description: str) -> dict[str, Any]:
    return {"description": description, "content": _HTML}


WAREHOUSE_DOWN = "the results warehouse did not answer; retry shortly"
