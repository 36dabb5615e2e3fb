"""Webhook handlers, one module per GitHub event family; ``build_router`` composes their routers."""

from __future__ import annotations

from bot.context import HandlerContext
from bot.handlers import check_run, installation, pull_request
from bot.router import Router


def build_router(ctx: HandlerContext) -> Router:
    return Router(pull_request.router(ctx), check_run.router(ctx), installation.router(ctx))
