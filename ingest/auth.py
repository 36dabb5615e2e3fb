"""Relay authentication: a shared token in ``X-OOT-Relay-Token`` (or the older ``x-hud-internal-bot``)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

TOKEN_HEADERS = ("x-oot-relay-token", "x-hud-internal-bot")


def presented_tokens(headers: Mapping[str, str]) -> list[str]:
    """The token values a request carries, in header order (either header may be set)."""
    return [value for name in TOKEN_HEADERS if (value := headers.get(name))]


def token_matches(presented: str, accepted: Sequence[str]) -> bool:
    """Compare in constant time against EVERY accepted token (no early exit reveals which one matched)."""
    candidate = presented.encode("latin-1", "replace")  # HTTP header values arrive latin-1 decoded
    matched = False
    for token in accepted:
        # hmac.compare_digest is constant-time for equal lengths and does not leak contents otherwise.
        matched |= hmac.compare_digest(candidate, token.encode("utf-8"))
    return matched and bool(accepted)


def authorised(headers: Mapping[str, str], accepted: Sequence[str]) -> bool:
    """True when any presented relay token equals any accepted token; nothing else (cookies...) counts."""
    results = [token_matches(value, accepted) for value in presented_tokens(headers)]
    return any(results)
