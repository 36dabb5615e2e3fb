"""The embedded data directory: one owning process (a lock), its relay token, and where it listens."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "oot-hud.lock"
SERVER_FILE = "server.json"
TOKEN_FILE = "relay-token"  # noqa: S105 - a file name, not a secret


class DataDirInUse(RuntimeError):
    def __init__(self, data_dir: Path, server_url: str | None) -> None:
        where = f" by the server at {server_url}" if server_url else ""
        super().__init__(f"the data directory {data_dir} is in use{where}; the embedded engine allows one "
                         "process per directory. Stop it first, or set OOT_HUD_DATA_DIR to another directory")
        self.server_url = server_url


@contextlib.contextmanager
def exclusive(data_dir: Path) -> Iterator[None]:
    """Hold the directory for this process, or raise ``DataDirInUse``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = open(data_dir / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(data_dir, running_server_url(data_dir)) from None
        yield
    finally:
        handle.close()


def running_server_url(data_dir: Path) -> str | None:
    try:
        return json.loads((data_dir / SERVER_FILE).read_text()).get("url")
    except (OSError, ValueError):
        return None


def record_server(data_dir: Path, url: str) -> None:
    (data_dir / SERVER_FILE).write_text(json.dumps({"url": url, "pid": os.getpid()}))


def forget_server(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / SERVER_FILE).unlink()


def relay_token(data_dir: Path) -> str:
    """The dev server's generated token, kept (mode 0600) so it survives restarts."""
    path = data_dir / TOKEN_FILE
    with contextlib.suppress(FileNotFoundError):
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
