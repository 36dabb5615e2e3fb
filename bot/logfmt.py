"""Structured bot logs: one ``event=... key=value`` line per event, the fields also kept on the record."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import MutableMapping
from typing import Any

_NOT_WORD = re.compile(r"[^a-z0-9]+")


def kv(**fields: Any) -> str:
    """``key=value`` pairs; values quoted when they hold spaces, quotes or ``=`` (and cut at 500 chars)."""
    parts = []
    for name, value in fields.items():
        text = str(value)
        if not text or any(ch in text for ch in ' "=\n\r\t'):
            text = json.dumps(text[:500])
        parts.append(f"{name}={text}")
    return " ".join(parts)


class KvLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``log.info("delivery accepted", extra={...})`` -> ``event=delivery_accepted delivery_id=... ...``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = {("field_" + k if k == "event" else k): v for k, v in (kwargs.get("extra") or {}).items()}
        event = _NOT_WORD.sub("_", str(msg).lower()).strip("_")
        return kv(event=event, **fields), kwargs


def get_logger(name: str) -> KvLogger:
    return KvLogger(logging.getLogger(name), {})
