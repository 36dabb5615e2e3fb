"""One structured log line: ``key=value`` pairs (logfmt), shared by ingest's and the bot's logs."""

from __future__ import annotations

import json
from typing import Any


def kv(**fields: Any) -> str:
    """``key=value`` pairs; values quoted when they hold spaces, quotes or ``=`` (and cut at 500 chars), so
    text from a downstream repository can never forge another field or another line."""
    parts = []
    for name, value in fields.items():
        text = str(value)
        if not text or any(ch in text for ch in ' "=\n\r\t'):
            text = json.dumps(text[:500])
        parts.append(f"{name}={text}")
    return " ".join(parts)
