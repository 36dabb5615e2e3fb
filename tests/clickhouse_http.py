"""A loopback server speaking ClickHouse's HTTP interface in front of this process's chDB engine (tests only).

Enough of the protocol for clickhouse-connect's HTTP client: ``GET /ping``; ``GET``/``POST /`` with the query
in the ``query`` parameter or the body (a body after a ``query`` parameter is the INSERT's data);
``param_<name>`` bound parameters; ``database``; any other parameter is a setting; ``INSERT … FORMAT <fmt>``
with the data after the first newline (Content-Encoding lz4/zstd/gzip, chunked bodies); ``X-ClickHouse-*``
response headers and exception codes. Each request gets its own chDB connection, so ``USE``/``SET`` never leak.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb
from clickhouse_connect.driver._backend.chdb_backend import CHDB_TRANSPORT_SETTINGS
from clickhouse_connect.driver.compression import _zstd_decompress

_NOT_SETTINGS = CHDB_TRANSPORT_SETTINGS | {"query", "default_format", "user", "password"}
_INSERT = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code: (\d+)\.")


def _decompress(body: bytes, encoding: str | None) -> bytes:
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.decompress(body)
    if encoding == "zstd":
        return _zstd_decompress(body)
    if encoding in ("gzip", "deflate"):
        import zlib

        return zlib.decompress(body, 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    return body


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ClickHouseHttpServer:
    """``with ClickHouseHttpServer(engine_path) as server:`` serves ``server.url`` on a free loopback port."""

    def __init__(self, engine_path: str) -> None:
        self.engine_path = os.path.realpath(engine_path)  # chDB compares engine paths literally
        self.down = False  # when set, every request answers 503 (a warehouse outage)
        self.requests: list[str] = []
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="clickhouse-http", daemon=True)

    @property
    def port(self) -> int:
        return self._http.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ClickHouseHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def execute(self, params: dict[str, str], body: bytes) -> tuple[bytes, str | None, dict[str, Any]]:
        """Run one request's statement; returns (body, result format or None, summary)."""
        sql = params.get("query")
        data: bytes | None = None
        if sql is None:
            head, newline, rest = body.partition(b"\n")  # INSERT data after the first newline is binary
            if newline and _INSERT.match(head.decode(errors="replace")):
                sql, data = head.decode(), rest
            else:
                sql = body.decode()
        elif body:
            data = body
        bound = {name[6:]: value for name, value in params.items() if name.startswith("param_")}
        settings = {k: v for k, v in params.items() if k not in _NOT_SETTINGS and not k.startswith("param_")}
        with self._lock:
            conn = chdb.connect(self.engine_path)
            try:
                if params.get("database"):
                    conn.query(f"USE `{params['database'].replace('`', '')}`", "TabSeparated")
                for name, value in settings.items():
                    if re.fullmatch(r"\w+", name):
                        conn.query(f"SET {name} = {_sql_string(value)}", "TabSeparated")
                insert = _INSERT.match(sql)
                if insert and data is not None:
                    return self._insert(conn, insert.group(1), insert.group(2), data)
                fmt = _TRAILING_FORMAT.search(sql)
                result_format = fmt.group(1) if fmt else params.get("default_format", "TabSeparated")
                result = conn.query(sql, result_format, params=bound)
                payload = result.bytes() or b""
                is_result_set = bool(payload) or bool(re.match(r"\s*(SELECT|WITH|SHOW|DESCRIBE|EXISTS)\b", sql, re.I))
                return payload, result_format if is_result_set else None, {"read_rows": str(result.rows_read())}
            finally:
                conn.close()

    @staticmethod
    def _insert(conn: Any, statement: str, fmt: str, data: bytes) -> tuple[bytes, None, dict[str, Any]]:
        with tempfile.NamedTemporaryFile(suffix=".data", delete=False) as tmp:
            tmp.write(data)
        try:
            result = conn.query(f"{statement} FROM INFILE {_sql_string(tmp.name)} FORMAT {fmt}", "TabSeparated")
            return b"", None, {"written_rows": str(result.rows_read())}
        finally:
            os.unlink(tmp.name)


def _handler_for(server: ClickHouseHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures
            return

        def do_GET(self) -> None:
            if urlsplit(self.path).path == "/ping":
                self._reply(200, b"Ok.\n", {})
            else:
                self.do_POST()

        def do_POST(self) -> None:
            params = dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))
            body = _decompress(self._body(), self.headers.get("Content-Encoding"))
            query_id = params.get("query_id") or str(uuid.uuid4())
            headers = {"X-ClickHouse-Query-Id": query_id, "X-ClickHouse-Timezone": "UTC",
                       "X-ClickHouse-Server-Display-Name": "chdb-loopback"}
            if server.down:
                self._reply(503, b"Code: 210. DB::NetException: warehouse is down (test). (NETWORK_ERROR)\n",
                            {**headers, "X-ClickHouse-Exception-Code": "210"})
                return
            server.requests.append(params.get("query") or body[:200].decode(errors="replace"))
            try:
                payload, fmt, summary = server.execute(params, body)
            except Exception as exc:
                message = str(exc)
                code = _ERROR_CODE.search(message)
                self._reply(500, message.encode() + b"\n",
                            {**headers, "X-ClickHouse-Exception-Code": code.group(1) if code else "1000"})
                return
            headers["X-ClickHouse-Summary"] = json.dumps(summary)
            if fmt:
                headers["X-ClickHouse-Format"] = fmt
            self._reply(200, payload, headers)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler
