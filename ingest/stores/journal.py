"""The embedded store's write-ahead journal: accepted items on disk before they reach the warehouse.

An insert into the embedded engine costs tens of milliseconds of fixed work (a new part, the materialized
view, merges), so answering each write only after its insert ties every caller's latency to that cost.
Instead an accepted write is appended here, one ``write`` for a whole group, and answered; the warehouse
insert follows in bigger batches. A segment is deleted only once every item in it is in the warehouse, and
at start-up whatever segments remain are inserted again (rows carry their version, so a replay collapses
with the copy already stored). Like the engine's own parts, a write reaches the page cache, not the platter:
it survives the process dying (``kill -9``), not the machine losing power.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("ingest.stores.journal")

SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class Segment:
    """One closed journal file; ``discard`` it once its items are in the warehouse."""

    path: Path


class Journal:
    """Append-only JSON-lines segments in ``directory``; one open segment takes appends at a time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        existing = self.segments()
        self._next = (int(existing[-1].path.stem) + 1) if existing else 1
        self._fd: int | None = None
        self._path: Path | None = None
        self._written = False

    def segments(self) -> list[Segment]:
        """The segments on disk, oldest first (a crashed process leaves these behind)."""
        paths = [p for p in self.directory.iterdir() if p.suffix == SUFFIX and p.stem.isdigit()]
        return [Segment(p) for p in sorted(paths, key=lambda p: int(p.stem))]

    def append(self, items: Iterable[dict[str, Any]]) -> None:
        """Write the items with one ``write`` call; when it returns they survive the process dying."""
        data = "".join(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n"
                       for item in items).encode()
        if not data:
            return
        if self._fd is None:
            self._path = self.directory / f"{self._next:012d}{SUFFIX}"
            self._next += 1
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        view = memoryview(data)
        while view:  # a regular file takes it all at once; the loop covers the rare short write
            view = view[os.write(self._fd, view):]
        self._written = True

    def rotate(self) -> Segment | None:
        """Close the open segment (None when nothing was written) so later appends start a new one."""
        if self._fd is None or self._path is None or not self._written:
            return None
        os.close(self._fd)
        segment = Segment(self._path)
        self._fd, self._path, self._written = None, None, False
        return segment

    def discard(self, segment: Segment) -> None:
        segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self._path is not None and not self._written:
                self._path.unlink(missing_ok=True)


def read_items(segment: Segment) -> Iterator[dict[str, Any]]:
    """A segment's items; a line cut short by a crash belonged to a write nobody was answered for."""
    with segment.path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                item = json.loads(line)
            except ValueError:
                log.warning("event=journal_line_skipped segment=%s line=%d", segment.path.name, number)
                continue
            if isinstance(item, dict):
                yield item
