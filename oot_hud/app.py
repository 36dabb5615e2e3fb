"""The app factory: one FastAPI app mounting one router per domain, wired to the services."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from bot.webhook import WebhookReceiver, webhook_api
from ingest.routes import CONTEXT_STATE as INGEST_CONTEXT_STATE
from ingest.routes import IngestContext, ResultsEndpoint
from ingest.routes import router as ingest_router
from oot_hud.pages import router as pages_router
from oot_hud.pr_pages import router as pr_pages_router
from oot_hud.publish import router as publish_router
from oot_hud.query_api import router as query_api_router
from oot_hud.services import Services, build_limiter, build_services, close_services
from oot_hud.settings import Settings


class _App(FastAPI):
    """FastAPI, except that ``POST /api/oot/results`` goes straight to ingest's endpoint (docs/ingest.md)."""

    ingest_endpoint: ResultsEndpoint | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.ingest_endpoint is not None and ResultsEndpoint.handles(scope):
            scope["app"] = self
            await self.ingest_endpoint(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """Build the app. With ``services`` given (tests), the caller owns their lifecycle."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            app.state.services = services
            yield
            return
        built = await build_services(settings)
        app.state.services = built
        # Everything built so far lives as long as the process: out of the collector's sight, a full
        # collection scans only what came later (~70 ms for the ~100,000 start-up objects otherwise, a stall
        # of every request in flight; docs/ingest.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await close_services(built)

    app = _App(title="oot-hud", version="0.1.0", lifespan=lifespan,
               description="Results of PyTorch's out-of-tree backend CI.")

    health = {"content": {"application/json": {"schema": {"type": "object", "required": ["ok"]}}}}

    @app.get("/healthz", tags=["ops"], responses={
        200: {"description": "the store and the warehouse answer", **health},
        503: {"description": "the store or the warehouse does not answer", **health}})
    async def healthz(request: Request) -> JSONResponse:
        current: Services = request.app.state.services
        store_ok = await current.store.ping()
        warehouse_ok = current.warehouse.ping()
        body = {"ok": store_ok and warehouse_ok, "store": current.store.name, "store_reachable": store_ok,
                "warehouse": current.warehouse.kind, "warehouse_reachable": warehouse_ok}
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    # Ingest: one limiter for the app's life; store and tokens come from the running services.
    limiter = build_limiter(settings)

    def _ingest_context(request: Request) -> IngestContext:
        current: Services = request.app.state.services
        return IngestContext(store=current.store, relay_tokens=current.relay_tokens, limiter=limiter,
                             max_body_bytes=settings.max_body_bytes)

    # Provided on app.state, not app.dependency_overrides: any override makes FastAPI rebuild every
    # route's dependencies on every request (see ingest.routes.ingest_context).
    setattr(app.state, INGEST_CONTEXT_STATE, _ingest_context)
    app.ingest_endpoint = ResultsEndpoint(_ingest_context)
    app.include_router(ingest_router)
    app.include_router(pr_pages_router)  # /oot/pr/{owner}/{repo}/{number}
    app.include_router(pages_router)  # /, /oot, /oot/{org}/{repo}
    app.include_router(query_api_router)  # /api/oot/query/{name}
    app.include_router(publish_router)  # /api/oot/site.tar.gz (publish while serve holds the data dir)

    def _webhook_receiver(request: Request) -> WebhookReceiver | None:
        bot = getattr(request.app.state.services, "bot", None)
        return bot.receiver if bot is not None else None

    app.include_router(webhook_api(_webhook_receiver))  # /api/github/webhook

    return app
