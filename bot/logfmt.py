"""Structured bot logs: one ``event=... key=value`` line per event, the fields also kept on the record."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

from renderers.logfmt import kv

_NOT_WORD = re.compile(r"[^a-z0-9]+")


class KvLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``log.info("delivery accepted", extra={...})`` -> ``event=delivery_accepted delivery_id=... ...``."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = {("field_" + k if k == "event" else k): v for k, v in (kwargs.get("extra") or {}).items()}
        event = _NOT_WORD.sub("_", str(msg).lower()).strip("_")
        return kv(event=event, **fields), kwargs


def get_logger(name: str) -> KvLogger:
    return KvLogger(logging.getLogger(name), {})
