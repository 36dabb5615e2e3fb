"""A real HTTP proxy on loopback that forwards to a server and, when told, answers with an injected fault
instead (or after forwarding, so the write happened but its answer is lost). Fault drills put it between a
client and a dependency (moto's DynamoDB server, a ClickHouse stand-in) to fail mid-flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


@dataclasses.dataclass(frozen=True)
class Fault:
    """An answer to give instead of the server's; ``after_forwarding``: the server did get the request."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    after_forwarding: bool = False


# Decides, per request (method, path, headers, body), whether to inject a fault; None = forward untouched.
Plan = Callable[[str, str, Mapping[str, str], bytes], Fault | None]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy:
    """``url`` forwards to ``target``; ``plan`` (replaceable at any time) injects faults; ``seen`` counts."""

    def __init__(self, target: str, plan: Plan | None = None) -> None:
        self.target = target.rstrip("/")
        self.plan: Plan = plan or (lambda method, path, headers, body: None)
        self.forwarded = 0
        self.injected = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {key: value for key, value in self.headers.items()}
                proxy._answer(self, self.command, self.path, headers, body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _answer(self, handler: BaseHTTPRequestHandler, method: str, path: str, headers: dict[str, str],
                body: bytes) -> None:
        fault = self.plan(method, path, headers, body)
        if fault is None or fault.after_forwarding:
            upstream = self._client.request(method, self.target + path, content=body, headers={
                key: value for key, value in headers.items() if key.lower() not in _HOP_BY_HOP})
            with self._lock:
                self.forwarded += 1
            status, out, out_headers = upstream.status_code, upstream.content, dict(upstream.headers)
        if fault is not None:
            with self._lock:
                self.injected += 1
            status, out, out_headers = fault.status, fault.body, dict(fault.headers)
        handler.send_response(status)
        for key, value in out_headers.items():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-encoding":
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(out)))
        handler.end_headers()
        handler.wfile.write(out)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


@contextlib.contextmanager
def fault_proxy(target: str, plan: Plan | None = None) -> Iterator[FaultProxy]:
    proxy = FaultProxy(target, plan).start()
    try:
        yield proxy
    finally:
        proxy.stop()
