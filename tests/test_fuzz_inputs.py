"""Hypothesis over the two other untrusted doors, through HTTP (ASGI):

- the webhook under random bodies, signatures and headers: only a body whose X-Hub-Signature-256 is the
  HMAC-SHA256 of exactly those bytes under the secret is ever parsed or routed; anything else is a 401 before
  the body is looked at (a non-JSON body with a bad signature is a 401, not a 400);
- the saved-query API, for every query folder, under random parameter names, types and values: a 200 or a
  400 that says why, never a 5xx, and the warehouse only ever runs the saved SQL text with exactly the
  declared parameters (values bound, never spliced).

``FUZZ_EXAMPLES`` scales both (see tests/test_fuzz_properties.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from bot.router import Delivery, Router
from bot.webhook import WEBHOOK_PATH, WebhookReceiver, webhook_api
from sql.saved import load, names
from sql.warehouse import Warehouse
from tests.readpath_app import build_app
from tests.test_fuzz_properties import bounded, json_values

SECRET = b"fuzz-webhook-secret"

# ---- webhook -----------------------------------------------------------------------------------------------


def _sign(body: bytes, secret: bytes = SECRET) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                   st.dictionaries(st.text(max_size=8), json_values, max_size=3).map(lambda v: json.dumps(v).encode()))


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, dict[str, str], bool]:
    """(body, headers, correctly signed?)."""
    body = draw(bodies)
    kind = draw(st.sampled_from(["good", "good", "other-body", "other-secret", "upper-prefix", "sha1-only",
                                 "truncated", "random", "missing", "bare-hex", "good-plus-byte"]))
    signature: str | None = {
        "good": _sign(body), "other-body": _sign(body + b" "), "other-secret": _sign(body, b"not-the-secret"),
        "upper-prefix": _sign(body).replace("sha256=", "SHA256="), "sha1-only": None, "truncated": _sign(body)[:-1],
        "random": draw(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)),
        "missing": None, "bare-hex": _sign(body)[7:], "good-plus-byte": _sign(body) + "0",
    }[kind]
    headers = {"X-GitHub-Event": draw(st.sampled_from(["fuzz", "fuzz", "", "push"])),
               "X-GitHub-Delivery": draw(st.uuids().map(str) | st.just("")), "Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    if kind == "sha1-only":
        headers["X-Hub-Signature"] = "sha1=" + hmac.new(SECRET, body, hashlib.sha1).hexdigest()
    return body, headers, kind == "good"


@bounded(120)
@given(st.lists(deliveries(), min_size=1, max_size=4))
async def test_the_webhook_parses_only_correctly_signed_bodies(sent: list[tuple[bytes, dict[str, str], bool]]) -> None:
    routed: list[Delivery] = []
    router = Router()

    async def record(delivery: Delivery) -> None:
        routed.append(delivery)

    router.add("fuzz", None, record)
    tasks: list[asyncio.Task[Any]] = []
    receiver = WebhookReceiver(SECRET.decode(), router, lambda coro: tasks.append(asyncio.ensure_future(coro)))
    app = FastAPI()
    app.include_router(webhook_api(lambda request: receiver))
    expected: list[dict[str, Any]] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        for body, headers, signed in sent:
            response = await http.post(WEBHOOK_PATH, content=body, headers=headers)
            if not signed:
                assert response.status_code == 401, (response.status_code, response.text)
                continue
            assert response.status_code in (200, 202, 400), response.text
            if response.status_code == 202:
                expected.append(json.loads(body))
    await asyncio.gather(*tasks)
    assert [delivery.payload for delivery in routed] == expected


# ---- saved-query API ----------------------------------------------------------------------------------------


class RecordingWarehouse:
    """The test's warehouse, recording every query the app runs on it."""

    def __init__(self, inner: Warehouse) -> None:
        self._inner = inner
        self.queries: list[tuple[str, dict[str, Any]]] = []

    def query(self, sql: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        self.queries.append((sql, dict(params or {})))
        return self._inner.query(sql, params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


QUERIES = names()
SQL_TEXT = ["'; DROP TABLE oot_job_results; --", "1 OR 1=1", "{days:UInt32}", "0x10", "1e3", "-0", " 7", "7 ",
            "", "NaN", "inf", "2026-11-20T14:00:00Z", "now()", "\u0000", "名", "a,b,,c", "9" * 30, "true", "null"]
values = st.one_of(st.sampled_from(SQL_TEXT), st.text(max_size=40), st.integers().map(str),
                   st.floats(allow_nan=True).map(str))


@st.composite
def query_calls(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    name = draw(st.sampled_from(QUERIES))
    declared = sorted(load(name).params)
    param_names = st.one_of(st.sampled_from(declared), st.sampled_from(["x", "DAYS", "now ", "sql", "format",
                                                                        "query", "max_threads", "param_days"]),
                            st.text(min_size=1, max_size=12))
    # Mostly the declared names (so many calls reach the warehouse), some of them repeated or foreign.
    pairs = [(key, draw(values)) for key in declared if draw(st.integers(0, 5))]
    pairs += draw(st.lists(st.tuples(param_names, values), max_size=3))
    return name, draw(st.permutations(pairs))


@bounded(60)
@given(st.lists(query_calls(), min_size=1, max_size=5))
async def test_the_query_api_answers_200_or_a_400_with_a_reason(warehouse: Warehouse, tmp_path: Path,
                                                                calls: list[tuple[str, list[tuple[str, str]]]]) -> None:
    recording = RecordingWarehouse(warehouse)
    app = build_app(recording, tmp_path)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        for name, pairs in calls:
            query = load(name)
            recording.queries.clear()
            response = await http.get(f"/api/oot/query/{name}", params=pairs)
            assert response.status_code in (200, 400), (name, pairs, response.status_code, response.text[:300])
            given_names = [key for key, _ in pairs]
            must_refuse = (set(given_names) - set(query.params) or len(set(given_names)) < len(given_names)
                           or set(query.params) - set(given_names) - set(query.defaults))
            if response.status_code == 400:
                body = response.json()
                assert body["ok"] is False and "parameter" in body["error"], body
                assert recording.queries == [], "a refused call reached the warehouse"
                continue
            assert not must_refuse, (name, pairs)
            assert isinstance(response.json(), list)
            # Exactly the saved SQL, exactly the declared parameters: input never becomes SQL.
            assert recording.queries and all(sql == query.sql and set(params) == set(query.params)
                                             for sql, params in recording.queries), recording.queries
