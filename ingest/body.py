"""Read a request body while counting: refuse it (413) as soon as it is known to pass the cap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping


class BodyTooLarge(Exception):
    """The body is over the cap; ``announced`` when Content-Length said so before any byte was read."""

    def __init__(self, limit: int, *, announced: bool) -> None:
        how = "Content-Length announces" if announced else "the body streams"
        super().__init__(f"{how} more than {limit} bytes, the most this endpoint accepts")
        self.limit = limit
        self.announced = announced


class BadContentLength(ValueError):
    """The Content-Length header is not a non-negative integer."""


def announced_length(headers: Mapping[str, str]) -> int | None:
    """The Content-Length header as an int, None when absent (chunked)."""
    raw = headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit():
        raise BadContentLength("Content-Length must be a non-negative integer")
    return int(raw)


async def read_capped(headers: Mapping[str, str], chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body if it is at most ``limit`` bytes, else ``BodyTooLarge``, holding at most limit + one chunk.

    An announced length over the cap is refused before reading anything; a chunked or lying stream is
    refused by the chunk that crosses the cap, and nothing after it is read.
    """
    length = announced_length(headers)
    if length is not None and length > limit:
        raise BodyTooLarge(limit, announced=True)
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > limit:
            raise BodyTooLarge(limit, announced=False)
    return bytes(buffer)
