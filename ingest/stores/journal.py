"""The embedded store's write-ahead journal: accepted items on stable storage before they reach the warehouse.

An insert into the embedded engine costs tens of milliseconds of fixed work (a new part, the materialized
view, merges), so answering each write only after its insert ties every caller's latency to that cost.
Instead an accepted group is appended here with one ``write`` and one ``fdatasync`` (and the directory is
fsynced when a segment is created, so the file's name survives too), and only then answered; the warehouse
insert follows in bigger batches. A segment is deleted only once every item in it is in the warehouse, and
at start-up whatever segments remain are inserted again (rows carry their version, so a replay collapses
with the copy already stored). So an answered write survives the process dying and the machine losing
power. A failed write or sync raises (the group's callers get a retryable 500) and the segment is closed
where its last synced group ended: after a failed ``fsync`` the kernel may have dropped the pages it could
not write and report the next ``fsync`` as clean, so the file is never trusted with another group.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("ingest.stores.journal")

SUFFIX = ".jsonl"
# One encoder: json.dumps with any keyword argument builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)

Sync = Callable[[int], None]
"""Makes a file descriptor's writes durable (``os.fdatasync``; tests inject their own)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One closed journal file; ``discard`` it once its items are in the warehouse."""

    path: Path


class Journal:
    """Append-only JSON-lines segments in ``directory``; one open segment takes appends at a time.

    ``sync`` makes a segment's appended data durable (``os.fdatasync``), ``sync_directory`` the directory
    entry of a new segment (``os.fsync`` on the directory); ``None`` skips them (a journal that only has to
    survive the process, for tools and tests).
    """

    def __init__(self, directory: Path, *, sync: Sync | None = os.fdatasync,
                 sync_directory: Sync | None = os.fsync) -> None:
        self.directory = directory
        self._sync = sync
        self._sync_directory = sync_directory
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            self._sync_dir(directory.parent)
        existing = self.segments()
        self._next = (int(existing[-1].path.stem) + 1) if existing else 1
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # bytes in the open segment, all of them synced
        self._closed: list[Segment] = []  # closed since the last rotate(), oldest first

    def segments(self) -> list[Segment]:
        """The segments on disk, oldest first (a crashed process leaves these behind)."""
        paths = [p for p in self.directory.iterdir() if p.suffix == SUFFIX and p.stem.isdigit()]
        return [Segment(p) for p in sorted(paths, key=lambda p: int(p.stem))]

    @staticmethod
    def encode(items: Iterable[dict[str, Any]]) -> bytes:
        """The JSON lines for these items (separate from ``append``: callers may encode on one thread and
        write on another)."""
        return "".join(_ENCODER.encode(item) + "\n" for item in items).encode()

    def append(self, items: Iterable[dict[str, Any]]) -> None:
        """Write the items with one ``write`` and sync them; when it returns they survive a power cut."""
        self.append_encoded(self.encode(items))

    def append_encoded(self, data: bytes) -> None:
        """``append`` for lines from ``encode``. Raises ``OSError`` (disk full, I/O error) when the data may
        not be durable; the segment then ends at its last synced group and the next append starts a new one."""
        if not data:
            return
        if self._fd is None:
            self._open()
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:  # a regular file takes it all at once; the loop covers the rare short write
                view = view[os.write(self._fd, view):]
            if self._sync is not None:
                self._sync(self._fd)
        except OSError:
            self._abandon()
            raise
        self._size += len(data)

    def _open(self) -> None:
        path = self.directory / f"{self._next:012d}{SUFFIX}"
        self._next += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self._sync_dir(self.directory)  # the new name must survive a power cut with the data
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._fd, self._path, self._size = fd, path, 0

    def _sync_dir(self, directory: Path) -> None:
        if self._sync_directory is None:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._sync_directory(fd)
        finally:
            os.close(fd)

    def _abandon(self) -> None:
        """After a failed write or sync: cut the segment back to what was synced and close it for good."""
        assert self._fd is not None and self._path is not None
        try:
            os.ftruncate(self._fd, self._size)  # best effort: a replay skips a torn line anyway
        except OSError:
            log.warning("event=journal_truncate_failed segment=%s", self._path.name)
        os.close(self._fd)
        if self._size:
            self._closed.append(Segment(self._path))
        else:
            self._path.unlink(missing_ok=True)
        self._fd, self._path, self._size = None, None, 0

    def rotate(self) -> list[Segment]:
        """Close the open segment so later appends start a new one; the segments closed since the last call
        (empty when nothing was written)."""
        if self._fd is not None and self._path is not None and self._size:
            os.close(self._fd)
            self._closed.append(Segment(self._path))
            self._fd, self._path, self._size = None, None, 0
        closed, self._closed = self._closed, []
        return closed

    def discard(self, segment: Segment) -> None:
        segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            if self._path is not None and not self._size:
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
