"""The only module that knows HTTP, signatures and delivery headers: ``POST /api/github/webhook``."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bot.logfmt import get_logger
from bot.memory_state import MemoryBotState
from bot.router import Delivery, Router

log = get_logger("oot_hud.bot.webhook")

WEBHOOK_PATH = "/api/github/webhook"
# GitHub caps deliveries at 25 MB; the events this App subscribes to are a few hundred KB at most.
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024

Spawn = Callable[[Coroutine[Any, Any, Any]], object]
FirstDelivery = Callable[[str], Awaitable[bool]]
"""True the first time a delivery id is seen (``BotState.first_delivery``, shared by every instance)."""


def in_memory_dedupe() -> FirstDelivery:
    """This process's own memory of delivery ids (a receiver built without shared state)."""
    memory = MemoryBotState()

    async def first_delivery(delivery_id: str) -> bool:
        return memory.first_delivery(delivery_id)

    return first_delivery


def signature_problem(secrets: Sequence[bytes], body: bytes, header: str | None,
                      sha1_header: str | None) -> str | None:
    """Why the delivery's signature is unacceptable, or None when it verifies (HMAC-SHA256 of the raw body)
    under one of ``secrets`` (several while the secret is rotated)."""
    if not header:
        if sha1_header:
            return "SHA-1 signatures (X-Hub-Signature) are refused; X-Hub-Signature-256 is required"
        return "missing X-Hub-Signature-256"
    if not header.startswith("sha256="):
        return "X-Hub-Signature-256 must start with sha256="
    given = header.strip().encode()
    matched = False
    for secret in secrets:  # every secret is tried, so the time taken says nothing about which one matched
        expected = b"sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, given)
    return None if matched else "signature does not match"


def webhook_secrets(value: str | Sequence[str] | None) -> list[bytes]:
    """The accepted secrets: a comma-separated string (as configured) or a list; blanks dropped."""
    parts = value.split(",") if isinstance(value, str) else list(value or ())
    return [part.strip().encode() for part in parts if part.strip()]


class WebhookReceiver:
    """Verify, de-duplicate, parse and route one delivery; the routed work runs in the background."""

    def __init__(self, secret: str | Sequence[str] | None, router: Router, spawn: Spawn, *,
                 max_bytes: int = MAX_WEBHOOK_BYTES, first_delivery: FirstDelivery | None = None) -> None:
        self._secrets = webhook_secrets(secret)
        self._router = router
        self._spawn = spawn
        self.max_bytes = max_bytes
        self._first_delivery = first_delivery or in_memory_dedupe()

    async def receive(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """-> (HTTP status, JSON body). Never raises for bad input."""
        if not self._secrets:
            return 503, {"error": "webhooks are disabled: OOT_HUD_GITHUB_WEBHOOK_SECRET is not configured"}
        if len(body) > self.max_bytes:
            return 413, {"error": f"body larger than {self.max_bytes} bytes"}
        problem = signature_problem(self._secrets, body, headers.get("x-hub-signature-256"),
                                    headers.get("x-hub-signature"))
        if problem:
            log.warning("webhook refused", extra={"reason": problem,
                                                  "delivery_id": headers.get("x-github-delivery", "")[:64]})
            return 401, {"error": problem}
        event = headers.get("x-github-event", "").strip()
        delivery_id = headers.get("x-github-delivery", "").strip()
        if not event or not delivery_id:
            return 400, {"error": "X-GitHub-Event and X-GitHub-Delivery headers are required"}
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return 400, {"error": "body is not JSON"}
        if not isinstance(payload, dict):
            return 400, {"error": "body must be a JSON object"}
        delivery = Delivery(event=event[:64], delivery_id=delivery_id[:64], payload=payload)
        if not await self._first_delivery(delivery.delivery_id):
            log.info("duplicate delivery ignored", extra=delivery.log_fields())
            return 200, {"status": "duplicate", "delivery": delivery.delivery_id}
        if not self._router.handles(delivery):
            log.info("event ignored", extra=delivery.log_fields())
            return 200, {"status": "ignored", "event": delivery.event}
        self._spawn(self._router.dispatch(delivery))
        log.info("delivery accepted", extra=delivery.log_fields())
        return 202, {"status": "accepted", "delivery": delivery.delivery_id}


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it exceeds ``limit`` (no unbounded buffering)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"type": "object"}}}}


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _answer("a duplicate delivery, or an event this App does not handle: nothing to do"),
    202: _answer("accepted; the work runs in the background"),
    400: _answer("signed, but not a JSON object or without X-GitHub-Event / X-GitHub-Delivery"),
    401: _answer("missing, SHA-1 or wrong X-Hub-Signature-256: the body is never parsed"),
    413: _answer(f"body over {MAX_WEBHOOK_BYTES} bytes"),
    503: _answer("the GitHub App or its webhook secret is not configured on this server"),
}


def webhook_api(get_receiver: Callable[[Request], WebhookReceiver | None]) -> APIRouter:
    """The FastAPI router; ``get_receiver`` finds the running bot's receiver (None = bot not built)."""
    api = APIRouter(tags=["github"])

    @api.post(WEBHOOK_PATH, summary="GitHub App webhook (signed with the App's webhook secret)",
              responses=_RESPONSES)
    async def github_webhook(request: Request) -> JSONResponse:
        receiver = get_receiver(request)
        if receiver is None:
            return JSONResponse({"error": "the GitHub App is not configured on this server"}, status_code=503)
        body = await _read_capped(request, receiver.max_bytes)
        if body is None:
            return JSONResponse({"error": f"body larger than {receiver.max_bytes} bytes"}, status_code=413)
        headers = {key.lower(): value for key, value in request.headers.items()}
        status, content = await receiver.receive(headers, body)
        return JSONResponse(content, status_code=status)

    return api
