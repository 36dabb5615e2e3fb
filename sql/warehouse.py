"""The one seam to ClickHouse: an embedded chDB engine or a server, through clickhouse-connect.

Every call is serialised by a lock: chDB's in-process engine is not safe to drive from several threads,
and callers are asyncio code that hands blocking work to threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sql.records import COLUMN_NAMES, JOB_RESULTS_TABLE

# Recent ClickHouse releases (and the chDB that embeds them) default to asynchronous inserts: an insert
# would return before its data is readable. Every client is opened with these session settings, so every
# insert is synchronous and "200" means stored (tests/test_records.py checks the session has them).
INSERT_SETTINGS: dict[str, Any] = {"async_insert": 0, "wait_for_async_insert": 1}
# The embedded engine's global thread pool keeps up to 1,000 idle threads by default, and every thread that
# ran a query holds three /proc files open (its CPU and I/O counters) for as long as it lives: a burst of
# reads (a publish renders every page) left the server with threads and descriptors it never gave back.
# Idle threads above this many exit (docs/soak.md).
# The pool that loads a part's marks asynchronously (50 threads by default) keeps every thread it ever
# started: the first read of a Wide part (one marks file per column, ~40) grew the server by ~35 threads and
# ~100 descriptors for good, minutes into a soak. Marks are read once per part and then cached: a few threads
# are plenty (docs/soak.md).
ENGINE_OPTIONS: dict[str, Any] = {"max_thread_pool_free_size": 16, "load_marks_threadpool_pool_size": 4}


class WarehouseError(RuntimeError):
    """The warehouse could not be reached or refused a statement."""


class Warehouse:
    """A clickhouse-connect client bound to one database, plus the schema that database must hold."""

    def __init__(self, client: Any, database: str, *, kind: str, opener: Callable[[], Any] | None = None) -> None:
        self._client = client
        self.database = database
        self.kind = kind  # "embedded" or "clickhouse"
        self._lock = threading.Lock()
        self._types: dict[str, dict[str, str]] = {}
        self._opener = opener  # opens another client on the same warehouse
        self._side: Warehouse | None = None
        self._side_lock = threading.Lock()

    @classmethod
    def connect(cls, *, url: str | None, data_dir: Path | None, database: str = "oot_hud") -> Warehouse:
        """Open the embedded engine on ``data_dir`` when ``url`` is None, else the server at ``url``."""
        import clickhouse_connect  # lazily: importing chDB must not happen before a fork (pitfalls.md)

        if url is None:
            if data_dir is None:
                raise ValueError("the embedded warehouse needs a data directory")
            data_dir.mkdir(parents=True, exist_ok=True)
            options: dict[str, Any] = {"interface": "chdb", "path": str(data_dir), "chdb_options": ENGINE_OPTIONS}
            kind = "embedded"
        else:
            parts = urlsplit(url)
            database = parts.path.strip("/") or database
            options = {
                "interface": parts.scheme or "http",
                "host": parts.hostname or "localhost",
                "port": parts.port or (8443 if parts.scheme == "https" else 8123),
                "username": unquote(parts.username or "default"),
                "password": unquote(parts.password or ""),
                "connect_timeout": 10,
                "send_receive_timeout": 60,
            }
            kind = "clickhouse"
        def open_client() -> Any:
            # Insert settings travel with the session: per-call settings cost the embedded engine extra
            # statements on every insert.
            return clickhouse_connect.get_client(settings=INSERT_SETTINGS, **options)

        try:
            # One client (and at most one more, ``side_reader``): chDB opens per-connection descriptors it
            # never returns, so connect once and bind the database afterwards (every query then names it).
            client = open_client()
            client.command(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}")
            client.database = database
        except Exception as exc:
            # The message may carry the URL; never echo credentials.
            raise WarehouseError(f"cannot open the {kind} warehouse: {type(exc).__name__}") from exc
        return cls(client, database, kind=kind, opener=open_client)

    def side_reader(self) -> Warehouse | None:
        """A second connection to the same warehouse and database, for a read that should run beside one on
        this connection (a connection runs one statement at a time; the embedded engine runs statements of
        different connections in parallel). Opened on first use and closed with this one. None when this
        warehouse wraps a client it cannot reopen (the tests' shared engine client)."""
        if self._opener is None:
            return None
        with self._side_lock:
            if self._side is None:
                try:
                    client = self._opener()
                    client.database = self.database
                    self._side = Warehouse(client, self.database, kind=self.kind)
                except Exception as exc:
                    raise WarehouseError(f"cannot open a second {self.kind} connection: "
                                         f"{type(exc).__name__}") from exc
            return self._side

    def apply_schema(self) -> None:
        """Run every ``sql/schema/*.sql`` in name order; each statement is idempotent."""
        for statement in schema_statements():
            self.command(statement)
        with self._lock:
            self._types.clear()

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        with self._lock:
            try:
                return self._client.command(sql, parameters=parameters)
            except Exception as exc:  # clickhouse-connect raises many types; callers need one
                raise WarehouseError(str(exc)) from exc

    def query(self, sql: str, parameters: dict[str, Any] | None = None,
              settings: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a SELECT and return rows as dicts. Values are bound server-side, never spliced."""
        return self._rows(sql, parameters=parameters, settings=settings)

    def query_aware(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """``query``, but UTC DateTime values come back timezone-aware (``tzinfo=UTC``), not naive. For hot
        readers that need aware times: the driver builds them at no extra cost, while attaching the zone
        afterwards costs a ``datetime.replace`` per value (~3 ms of the PR view's ~7 ms on a 573-row PR)."""
        return self._rows(sql, parameters=parameters, tz_mode="aware")

    def _rows(self, sql: str, **options: Any) -> list[dict[str, Any]]:
        with self._lock:
            try:
                result = self._client.query(sql, **options)
            except Exception as exc:  # clickhouse-connect raises many types; callers need one
                raise WarehouseError(str(exc)) from exc
        names = result.column_names
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def insert(self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str], *,
               column_oriented: bool = False) -> None:
        """Insert rows with explicit column names and synchronous insert settings. ``column_oriented``:
        ``rows`` is one sequence per column instead (the driver then skips turning rows into columns)."""
        if not rows:
            return
        with self._lock:
            try:
                types = self._column_types_locked(table)
                self._client.insert(table, list(rows), column_names=list(column_names),
                                    column_type_names=[types[name] for name in column_names],
                                    column_oriented=column_oriented)
            except Exception as exc:
                raise WarehouseError(str(exc)) from exc

    def _column_types_locked(self, table: str) -> dict[str, str]:
        """The table's column types, asked once: without them clickhouse-connect runs a ``DESCRIBE TABLE``
        before every insert (~1 ms on the embedded engine). Tables change only in ``apply_schema``, which
        forgets them. An unknown column name raises KeyError, reported like any other refused insert."""
        types = self._types.get(table)
        if types is None:
            described = self._client.query(f"DESCRIBE TABLE {quote_identifier(table)}")
            names = described.column_names
            types = {str(row[names.index("name")]): str(row[names.index("type")]) for row in described.result_rows}
            self._types[table] = types
        return types

    def insert_job_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        self.insert(JOB_RESULTS_TABLE, list(rows), COLUMN_NAMES)

    def ping(self) -> bool:
        try:
            return self.query("SELECT 1 AS ok")[0]["ok"] == 1
        except WarehouseError:
            return False

    def close(self) -> None:
        with self._lock:
            self._client.close()
        with self._side_lock:
            side, self._side, self._opener = self._side, None, None
        if side is not None:
            side.close()


def quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def schema_statements() -> list[str]:
    """The schema files' statements; table names are unqualified (the client is bound to a database)."""
    folder = resources.files("sql") / "schema"
    statements: list[str] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            text = "\n".join(line for line in entry.read_text().splitlines()
                             if not line.lstrip().startswith("--"))
            statements.extend(part.strip() for part in text.split(";") if part.strip())
    return statements
