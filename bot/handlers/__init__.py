"""Webhook handlers, one module per GitHub event family; ``build_router`` composes their routers."""

from __future__ import annotations

from bot.context import HandlerContext
from bot.handlers import check_run, installation, pull_request, push
from bot.router import Router


def build_router(ctx: HandlerContext) -> Router:
    # Pushes matter only to an allowlist read from the upstream repository; otherwise they stay "ignored".
    pushes = [push.router(ctx)] if ctx.allowlist is not None else []
    return Router(pull_request.router(ctx), check_run.router(ctx), installation.router(ctx), *pushes)
