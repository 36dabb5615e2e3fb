"""The ``oot-hud`` command line: ``serve`` (later: ``dynamo``, ``replicate``, ``publish``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Sequence

from pydantic import SecretStr, ValidationError

from oot_hud import datadir
from oot_hud.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from oot_hud.app import create_app

    generated = None
    if not settings.relay_tokens:
        generated = datadir.relay_token(settings.data_dir)
        settings = settings.model_copy(update={"relay_tokens": [SecretStr(generated)]})
    url = f"http://{args.host}:{args.port}"
    lock = datadir.exclusive(settings.data_dir) if settings.embedded else contextlib.nullcontext()
    try:
        with lock:
            if settings.embedded:
                datadir.record_server(settings.data_dir, url)
            _print_banner(settings, url, generated)
            config = uvicorn.Config(create_app(settings), host=args.host, port=args.port,
                                    log_level=args.log_level, workers=1, access_log=False)
            uvicorn.Server(config).run()
            if settings.embedded:
                datadir.forget_server(settings.data_dir)
    except datadir.DataDirInUse as exc:
        print(f"oot-hud: {exc}. Stop it first, or set OOT_HUD_DATA_DIR to another directory.", file=sys.stderr)
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
    """``oot-hud dynamo create-table``: the results table with its NEW_AND_OLD_IMAGES stream."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from ingest.dynamo_schema import create_table, stream_arn
    from ingest.stores.dynamo import client_config

    table = args.table or settings.dynamo_table
    if not table:
        print("oot-hud: name the table with --table or OOT_HUD_DYNAMO_TABLE", file=sys.stderr)
        return 2
    client = boto3.client("dynamodb", config=client_config())
    try:
        created = create_table(client, table)
        arn = stream_arn(client, table)
    except (BotoCoreError, ClientError) as exc:
        print(f"oot-hud: cannot create table {table}: {type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"table {table} {'created' if created else 'already exists'}; stream {arn}", flush=True)
    return 0


COMMANDS: dict[str, Command] = {"serve": _serve, "dynamo": _dynamo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oot-hud", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run ingest, webhooks, pages and the bot in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    dynamo = sub.add_parser("dynamo", help="DynamoDB administration")
    dynamo_sub = dynamo.add_subparsers(dest="dynamo_command", required=True)
    create = dynamo_sub.add_parser("create-table", help="create the results table with a NEW_AND_OLD_IMAGES stream")
    create.add_argument("--table", default=None, help="table name (default: OOT_HUD_DYNAMO_TABLE)")
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
