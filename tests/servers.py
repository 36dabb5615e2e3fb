"""Run ``python -m oot_hud serve`` as a real subprocess on loopback, with its own data dir and env.

Shared by tests and benchmarks that need a whole server: start, wait for /healthz, kill -9, restart on
the same data dir. The child's own environment is the parent's minus every ``OOT_HUD_*`` variable (a
developer's settings never leak in), plus the data dir, a relay token and the caller's overrides.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """One oot-hud server subprocess; ``base_url`` and ``token`` are what a client needs."""

    def __init__(self, data_dir: Path, *, env: Mapping[str, str] | None = None, token: str | None = None,
                 port: int | None = None, log_level: str = "warning",
                 entry: Sequence[str] = ("-m", "oot_hud"), wrapper: Sequence[str] = ()) -> None:
        self.data_dir = data_dir
        self.token = token or secrets.token_urlsafe(24)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self.log_level = log_level
        self.entry = list(entry)  # how Python runs the CLI (a wrapper script, for profiling)
        self.wrapper = list(wrapper)  # a command that execs the rest (e.g. into a mount namespace): same pid
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("OOT_HUD_")}
        self.env.update({"OOT_HUD_DATA_DIR": str(data_dir), "OOT_HUD_RELAY_TOKENS": self.token,
                         "PYTHONUNBUFFERED": "1"})
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the server is not running"
        return self.proc.pid

    @property
    def headers(self) -> dict[str, str]:
        return {"X-OOT-Relay-Token": self.token, "Content-Type": "application/json"}

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> ServerProcess:
        """Start the server and return once /healthz answers 200 (raise with the log tail if it never does)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # the child keeps its own copy of the descriptor
        try:
            self.proc = subprocess.Popen(
                [*self.wrapper, sys.executable, *self.entry, "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", self.log_level],
                env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oot-hud serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=2.0).status_code == 200:
                    return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"oot-hud serve did not become healthy in {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """``kill -9``: no shutdown hooks, no flush; what was acknowledged must already be on disk."""
        self._signal(signal.SIGKILL)

    def stop(self, timeout: float = 20.0) -> None:
        """A graceful stop (SIGTERM), falling back to SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self, timeout: float = STARTUP_TIMEOUT_S) -> ServerProcess:
        """Start again on the same port and data dir (after ``kill`` or ``stop``)."""
        self.stop()
        return self.start(timeout)

    def rss_kib(self) -> int:
        """The server's resident set size (VmRSS, KiB) from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("VmRSS not found")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal(self, signum: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signum)
        self.proc.wait(30)


@contextlib.contextmanager
def running_server(data_dir: Path, *, env: Mapping[str, str] | None = None,
                   token: str | None = None) -> Iterator[ServerProcess]:
    """A started server, stopped (or killed) on exit whatever happens."""
    server = ServerProcess(data_dir, env=env, token=token)
    try:
        yield server.start()
    finally:
        server.stop()


def query_data_dir(data_dir: Path, sql: str, database: str = "oot_hud", timeout: float = 120.0,
                   wrapper: Sequence[str] = ()) -> list[dict]:
    """Run a read on a data dir no server holds, in a fresh Python process (chDB: one path per process)."""
    import json

    program = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from sql.warehouse import Warehouse\n"
        "wh = Warehouse.connect(url=None, data_dir=Path(sys.argv[1]), database=sys.argv[2])\n"
        "print(json.dumps(wh.query(sys.argv[3]), default=str))\n"
    )
    done = subprocess.run([*wrapper, sys.executable, "-c", program, str(data_dir), database, sql], cwd=REPO_ROOT,
                          capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"query failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port in a thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
