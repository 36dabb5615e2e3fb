"""Durable per-shard stream checkpoints: one JSON file, replaced atomically (tmp + fsync + rename)."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """The checkpoint file is unreadable, or another follower holds it."""


@dataclasses.dataclass(frozen=True, slots=True)
class ShardCheckpoint:
    """How far one shard has been replicated: the last durable sequence number, and whether it is finished."""

    sequence: str | None = None
    done: bool = False


class CheckpointStore(Protocol):
    """What the follower needs from a checkpoint store (tests may use an in-memory one)."""

    def load(self, stream_arn: str) -> tuple[dict[str, ShardCheckpoint], str | None]:
        """The checkpoints for ``stream_arn``, plus the ARN the store last followed (None if new)."""
        ...

    def save(self, stream_arn: str, shards: dict[str, ShardCheckpoint]) -> None: ...


class FileCheckpoints:
    """Checkpoints of one DynamoDB table's stream in ``<state_dir>/<table>.checkpoints.json``.

    Every ``save`` writes the whole (small: a handful of live shards) map to a temporary file, fsyncs it,
    renames it over the old file and fsyncs the directory, so a crash leaves either the old or the new
    file, never a torn one.
    """

    def __init__(self, state_dir: Path, table_name: str) -> None:
        self.state_dir = state_dir
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", table_name)
        self.path = state_dir / f"{safe}.checkpoints.json"
        self._lock_path = state_dir / f"{safe}.follower.lock"

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the follower lock: two followers on one stream would race each other's checkpoints."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = self._lock_path.open("a+")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise CheckpointError(f"another follower holds {self._lock_path}") from exc
            yield
        finally:
            handle.close()  # closing releases the lock

    def load(self, stream_arn: str) -> tuple[dict[str, ShardCheckpoint], str | None]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}, None
        except (OSError, ValueError) as exc:
            # Never start over silently: an unreadable file needs a human (or deleting it plus a reconcile).
            raise CheckpointError(f"cannot read {self.path}: {type(exc).__name__}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise CheckpointError(f"{self.path} is not a version {FORMAT_VERSION} checkpoint file")
        previous = data.get("stream_arn")
        if previous != stream_arn:
            return {}, previous
        shards = {shard_id: _parse(value) for shard_id, value in (data.get("shards") or {}).items()}
        return shards, previous

    def save(self, stream_arn: str, shards: dict[str, ShardCheckpoint]) -> None:
        payload = {
            "format": FORMAT_VERSION,
            "stream_arn": stream_arn,
            "shards": {shard_id: dataclasses.asdict(cp) for shard_id, cp in sorted(shards.items())},
        }
        write_atomically(self.path, json.dumps(payload, indent=1, sort_keys=True).encode())


class MemoryCheckpoints:
    """An in-process checkpoint store (tests; nothing survives the process)."""

    def __init__(self) -> None:
        self.stream_arn: str | None = None
        self.shards: dict[str, ShardCheckpoint] = {}
        self.saves = 0

    def load(self, stream_arn: str) -> tuple[dict[str, ShardCheckpoint], str | None]:
        if self.stream_arn != stream_arn:
            return {}, self.stream_arn
        return dict(self.shards), self.stream_arn

    def save(self, stream_arn: str, shards: dict[str, ShardCheckpoint]) -> None:
        self.stream_arn, self.shards = stream_arn, dict(shards)
        self.saves += 1


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash at any point leaves the old or the new content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


def _parse(value: Any) -> ShardCheckpoint:
    if not isinstance(value, dict):
        raise CheckpointError("a shard checkpoint is not an object")
    sequence = value.get("sequence")
    return ShardCheckpoint(sequence=str(sequence) if sequence is not None else None, done=bool(value.get("done")))
