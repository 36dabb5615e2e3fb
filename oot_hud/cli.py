"""The ``oot-hud`` command line: ``serve``, ``dynamo create-table``, ``replicate``, ``publish``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr, ValidationError

from oot_hud import datadir
from oot_hud.settings import Settings

if TYPE_CHECKING:
    from replicator.sink import RetryPolicy

Command = Callable[[argparse.Namespace, Settings], int]


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    # chDB imports pyarrow when it is installed, for Arrow APIs nothing here calls (clickhouse-connect reads
    # Native): blocking it keeps ~50 MiB out of the server's RSS (docs/ingest.md).
    sys.modules.setdefault("pyarrow", None)  # type: ignore[arg-type]
    import uvicorn

    from oot_hud.app import create_app

    generated = None
    if not settings.relay_tokens:
        generated = datadir.relay_token(settings.data_dir)
        settings = settings.model_copy(update={"relay_tokens": [SecretStr(generated)]})
    url = f"http://{args.host}:{args.port}"
    lock = _embedded_lock(settings)
    try:
        with lock:
            if settings.embedded:
                datadir.record_server(settings.data_dir, url)
            _print_banner(settings, url, generated)
            # Keep-alive longer than a load balancer's idle timeout (ALB: 60 s), so the server is never the side
            # that closes a connection a client is about to reuse (the client would see a reset mid-request).
            config = uvicorn.Config(create_app(settings), host=args.host, port=args.port,
                                    log_level=args.log_level, workers=1, access_log=False, timeout_keep_alive=75)
            uvicorn.Server(config).run()
            if settings.embedded:
                datadir.forget_server(settings.data_dir)
    except datadir.DataDirInUse as exc:
        print(f"oot-hud: {exc}.", file=sys.stderr)
        return 2
    return 0


def _print_banner(settings: Settings, url: str, generated: str | None) -> None:
    store = f"DynamoDB table {settings.dynamo_table}" if settings.dynamo_table else "embedded warehouse"
    lines = [f"oot-hud listening on {url}  ({store})", f"  pages:    {url}/oot", f"  API docs: {url}/docs"]
    if settings.embedded:
        lines.append(f"  data dir: {settings.data_dir.resolve()}")
    if generated:
        # The generated development token is printed on purpose: it is the operator's own local secret.
        lines += [f"  relay token: {generated}", "  post a sample result:",
                  f"    curl -sS -X POST {url}/api/oot/results -H 'Content-Type: application/json' \\",
                  f"      -H 'X-OOT-Relay-Token: {generated}' \\",
                  "      --data-binary @tests/fixtures/relay/01_pr_in_progress.json"]
    print("\n".join(lines), flush=True)


def _dynamo(args: argparse.Namespace, settings: Settings) -> int:
    """``oot-hud dynamo create-table``: the results table with its NEW_AND_OLD_IMAGES stream, and the bot's
    state table beside it (leases, the PRs' GitHub ids, marks, delivery ids, rate-limit counters)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from ingest.dynamo_schema import create_state_table, create_table, state_table_name, stream_arn
    from ingest.stores.dynamo import client_config

    table = args.table or settings.dynamo_table
    if not table:
        print("oot-hud: name the table with --table or OOT_HUD_DYNAMO_TABLE", file=sys.stderr)
        return 2
    state = settings.dynamo_state_table or state_table_name(table)
    client = boto3.client("dynamodb", config=client_config())
    try:
        created = create_table(client, table)
        arn = stream_arn(client, table)
        state_created = create_state_table(client, state)
    except (BotoCoreError, ClientError) as exc:
        print(f"oot-hud: cannot create table {table} or {state}: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"table {table} {'created' if created else 'already exists'}; stream {arn}", flush=True)
    print(f"state table {state} {'created' if state_created else 'already exists'} (TTL on expires_at)", flush=True)
    return 0


def _replicate(args: argparse.Namespace, settings: Settings) -> int:
    """``oot-hud replicate --follow | --reconcile``: the DynamoDB table's changes into the warehouse."""
    if args.follow:
        return _replicate_follow(args, settings)
    return _replicate_reconcile(args, settings)


def _replicate_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Scan each routed DynamoDB table and re-send items newer than the warehouse's (after long outages)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from ingest.stores.dynamo import client_config
    from oot_hud.services import open_warehouse
    from replicator.reconcile import ReconcileError
    from sql.warehouse import WarehouseError

    routes = settings.replication_routes()
    if not routes:
        print("oot-hud: set OOT_HUD_DYNAMO_TABLE (or OOT_HUD_REPLICATOR_ROUTES) to the table to reconcile",
              file=sys.stderr)
        return 2
    dynamodb = boto3.client("dynamodb", config=client_config())
    lock = _embedded_lock(settings)
    try:
        with lock:
            warehouse = open_warehouse(settings)
            try:
                for table in routes:
                    result = _reconcile_job(settings, dynamodb, warehouse, table)()
                    counts = " ".join(f"{name}={value}" for name, value in vars(result).items())
                    print(f"reconciled {table} into {routes[table]}: {counts}", flush=True)
            finally:
                warehouse.close()
    except datadir.DataDirInUse as exc:
        print(f"oot-hud: {exc}.", file=sys.stderr)
        return 2
    except (ReconcileError, WarehouseError, BotoCoreError, ClientError) as exc:
        print(f"oot-hud: reconcile failed ({type(exc).__name__}); nothing was skipped, run it again",
              file=sys.stderr)
        return 1
    return 0


def _reconcile_job(settings: Settings, dynamodb: object, warehouse: object, table: str) -> Callable[[], object]:
    """What the follower calls when the stream lost records: one reconcile of ``table`` into the warehouse."""
    from replicator.pipeline import Replicator
    from replicator.reconcile import reconcile
    from sql.records import JOB_RESULTS_TABLE

    destination = settings.replication_routes().get(table, JOB_RESULTS_TABLE)
    replicator = Replicator.for_warehouse(warehouse, {table: destination}, retry=_insert_retry(settings))

    def run() -> object:
        # Raises ReconcileError when a batch does not land: the follower logs, backs off and asks again.
        return reconcile(dynamodb, warehouse, replicator, table)

    return run


def _replicate_follow(args: argparse.Namespace, settings: Settings) -> int:
    """Follow every routed table's stream until SIGTERM/SIGINT, checkpointing per shard in the state dir."""
    import signal
    import threading

    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from ingest.dynamo_schema import stream_arn
    from ingest.stores.dynamo import client_config
    from oot_hud.services import open_warehouse, replicator_announcer
    from replicator.checkpoints import CheckpointError, FileCheckpoints
    from replicator.follower import StreamFollower
    from replicator.pipeline import Replicator

    routes = settings.replication_routes()
    if not routes:
        print("oot-hud: set OOT_HUD_DYNAMO_TABLE (or OOT_HUD_REPLICATOR_ROUTES) to the table to follow",
              file=sys.stderr)
        return 2
    dynamodb = boto3.client("dynamodb", config=client_config())
    streams = boto3.client("dynamodbstreams", config=client_config())  # thread-safe: shared by followers
    arns: dict[str, str] = {}
    for table in routes:
        try:
            arn = stream_arn(dynamodb, table)
        except (BotoCoreError, ClientError) as exc:
            print(f"oot-hud: cannot describe table {table}: {type(exc).__name__}", file=sys.stderr)
            return 1
        if not arn:
            print(f"oot-hud: table {table} has no stream; run: oot-hud dynamo create-table --table {table}",
                  file=sys.stderr)
            return 2
        arns[table] = arn
    state_dir = args.state_dir or settings.data_dir / "replicator"
    checkpoints = {table: FileCheckpoints(state_dir, table) for table in routes}
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    retry = _insert_retry(settings)
    announce = replicator_announcer(settings)  # the bot's shared marks: PRs re-rendered within seconds
    failed: list[str] = []

    def follow(follower: StreamFollower) -> None:
        try:
            follower.run()
        except Exception:  # a dead follower must not leave the others running unnoticed
            logging.getLogger("oot_hud.replicate").exception("follower crashed table=%s", follower.table_name)
            failed.append(follower.table_name)
            stop.set()

    lock = _embedded_lock(settings)
    try:
        with lock, contextlib.ExitStack() as held:
            for store in checkpoints.values():
                held.enter_context(store.exclusive())
            warehouse = open_warehouse(settings)
            try:
                threads = []
                for table, destination in routes.items():
                    follower = StreamFollower(
                        streams, arns[table], table,
                        Replicator.for_warehouse(warehouse, {table: destination}, retry=retry, on_changes=announce),
                        checkpoints[table], _reconcile_job(settings, dynamodb, warehouse, table), stop=stop)
                    print(f"following {arns[table]} into {warehouse.kind} table {destination}; "
                          f"checkpoints in {checkpoints[table].path}", flush=True)
                    threads.append(threading.Thread(target=follow, args=(follower,), name=f"follow-{table}"))
                for thread in threads:
                    thread.start()
                for thread in threads:
                    while thread.is_alive():
                        thread.join(0.5)  # short joins keep the main thread free to take SIGTERM/SIGINT
            finally:
                warehouse.close()
    except (datadir.DataDirInUse, CheckpointError) as exc:
        print(f"oot-hud: {exc}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from oot_hud import publish

    return publish.command(args, settings)


def _embedded_lock(settings: Settings) -> contextlib.AbstractContextManager[None]:
    """Hold the embedded data directory for this command (a ClickHouse server needs no lock)."""
    return datadir.exclusive(settings.data_dir) if settings.embedded else contextlib.nullcontext()


def _insert_retry(settings: Settings) -> RetryPolicy:
    from replicator.sink import RetryPolicy

    return RetryPolicy(attempts=settings.replicator_insert_attempts, timeout=settings.replicator_insert_timeout_s)


COMMANDS: dict[str, Command] = {"serve": _serve, "dynamo": _dynamo, "replicate": _replicate}
COMMANDS["publish"] = _publish


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oot-hud", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run ingest, webhooks, pages and the bot in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    dynamo = sub.add_parser("dynamo", help="DynamoDB administration")
    dynamo_sub = dynamo.add_subparsers(dest="dynamo_command", required=True)
    create = dynamo_sub.add_parser("create-table", help="create the results table (with a NEW_AND_OLD_IMAGES "
                                   "stream) and the bot's state table")
    create.add_argument("--table", default=None, help="results table name (default: OOT_HUD_DYNAMO_TABLE; the "
                        "state table: OOT_HUD_DYNAMO_STATE_TABLE, or this name + '-state')")
    replicate = sub.add_parser("replicate", help="DynamoDB stream -> warehouse (table: OOT_HUD_DYNAMO_TABLE)")
    mode = replicate.add_mutually_exclusive_group(required=True)
    mode.add_argument("--follow", action="store_true", help="follow the table's stream until stopped")
    mode.add_argument("--reconcile", action="store_true", help="re-send items newer than the warehouse's")
    replicate.add_argument("--state-dir", type=Path, default=None,
                           help="follower checkpoints (default: $OOT_HUD_DATA_DIR/replicator)")
    from oot_hud import publish

    publish.add_arguments(sub.add_parser("publish", help="render the pages to a static site (and upload it to S3)"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"oot-hud: bad configuration:\n{exc}", file=sys.stderr)
        return 2
    return COMMANDS[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main())
