"""Live HTML pages: the global summary (``/oot``), a backend's matrix (``/oot/{org}/{repo}``), the trends
(``/oot/trends``).

The ``*_html`` functions (query + build + render) are shared with ``publish``, so the live and the static
pages are the same bytes apart from their links.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from oot_hud.responses import WAREHOUSE_DOWN, html_page, plain
from oot_hud.services import Services
from oot_hud.settings import Settings
from policy.allowlist import Allowlist
from policy.canary import RECENT_PRS
from renderers.backend import MAX_PAGE, MAX_TRUNK, PER_PAGE, BackendView, build_backend, is_event_view, render_backend
from renderers.badge import BADGE_DAYS, badge_rate, render_badge
from renderers.frame import DEFAULT_RANGE, RANGES, Site, is_repo_name
from renderers.health import PipelineHealth, build_health
from renderers.registry import NO_REGISTRY, Registry
from renderers.summary import build_summary, render_summary
from renderers.trends import DEFAULT_TREND_RANGE, TREND_RANGES, TrendsPage, build_trends, render_trends
from sql.records import format_time
from sql.saved import load
from sql.warehouse import Warehouse, WarehouseError

log = logging.getLogger("oot_hud.pages")
router = APIRouter(tags=["pages"])
LIVE = Site()


class BadRange(ValueError):
    pass


def page_clock() -> datetime:
    """The pages' notion of now (a dependency: tests pin it with ``app.dependency_overrides``)."""
    return datetime.now(UTC)


def parse_days(value: str | None, ranges: tuple[int, ...] = RANGES, default: int = DEFAULT_RANGE) -> int:
    if value is None or value == "":
        return default
    if value.strip().isdigit() and int(value) in ranges:
        return int(value)
    raise BadRange(f"days must be one of {', '.join(map(str, ranges))} (got {value[:20]!r})")


def summary_rows(warehouse: Warehouse, *, days: int, now: datetime, silence_hours: float) -> list[dict]:
    return load("oot_summary").run(warehouse, {"days": days, "now": format_time(now),
                                               "silence_hours": silence_hours})


def level_rows(warehouse: Warehouse, *, days: int, now: datetime) -> list[dict]:
    return load("oot_backend_levels").run(warehouse, {"days": days, "now": format_time(now)})


HEALTH_WINDOW_DAYS = 30  # how far back the pipeline health line looks for the canaries' reports


def registry_for(settings: Settings, allowlist: Allowlist | None) -> Registry:
    """What the pages know about backends besides their results: ``allowlist`` and the configured canaries."""
    return Registry(allowlist=allowlist, label_prefix=settings.l3_label_prefix,
                    canaries=tuple(settings.canary_backends))


def registry_of(services: Services) -> Registry:
    """The allowlist in use (refreshed while running) and the canaries, for the live pages."""
    return registry_for(services.settings, services.pr_policy().allowlist)


def health_rows(warehouse: Warehouse, canaries: tuple[str, ...], *, now: datetime,
                silence_hours: float) -> list[dict]:
    return load("oot_canary_health").run(warehouse, {
        "repos": list(canaries), "prs": RECENT_PRS, "days": HEALTH_WINDOW_DAYS, "now": format_time(now),
        "silence_hours": silence_hours})


def pipeline_health(warehouse: Warehouse, registry: Registry, *, now: datetime, silence_hours: float, site: Site,
                    days: int, rows: list[dict] | None = None) -> PipelineHealth | None:
    """The canaries' health line (None: no canary configured); ``rows`` spares the query."""
    if not registry.canaries:
        return None
    if rows is None:
        rows = health_rows(warehouse, registry.canaries, now=now, silence_hours=silence_hours)
    return build_health(rows, now=now, silence_hours=silence_hours, site=site, recent_prs=RECENT_PRS,
                        window_days=HEALTH_WINDOW_DAYS, days=days)


def summary_html(warehouse: Warehouse, *, days: int, now: datetime, silence_hours: float, site: Site,
                 rows: list[dict] | None = None, levels: list[dict] | None = None,
                 registry: Registry = NO_REGISTRY, health: list[dict] | None = None) -> str:
    """The summary page; ``rows`` / ``levels`` / ``health`` (already-fetched ``oot_summary`` /
    ``oot_backend_levels`` / ``oot_canary_health`` rows) spare the queries."""
    pending = None
    if registry.canaries and health is None:  # beside the summary, on the second connection
        pending = _side_pool().submit(health_rows, warehouse.side_reader() or warehouse, registry.canaries,
                                      now=now, silence_hours=silence_hours)
    if rows is None:
        rows = summary_rows(warehouse, days=days, now=now, silence_hours=silence_hours)
    if levels is None:
        levels = level_rows(warehouse, days=days, now=now)
    line = pipeline_health(warehouse, registry, now=now, silence_hours=silence_hours, site=site, days=days,
                           rows=pending.result() if pending is not None else health)
    return render_summary(build_summary(rows, days=days, now=now, site=site, levels=levels, registry=registry,
                                        health=line))


def dashboard_rows(warehouse: Warehouse, repo: str, *, days: int, now: datetime, page: int = 1,
                   prs: int = PER_PAGE, event: str | None = None) -> list[dict]:
    """``oot_backend_dashboard`` rows of one backend, or of every backend when ``repo`` is '': the ``page``-th
    ``prs`` PRs and the trunk commits (of ``event`` only, when given; then no PR)."""
    return load("oot_backend_dashboard").run(warehouse, {
        "repo": repo, "days": days, "now": format_time(now), "offset": (page - 1) * prs,
        "max_prs": 0 if event else prs, "max_trunk": MAX_TRUNK, "event": event or ""})


def stats_rows(warehouse: Warehouse, repo: str, *, days: int, now: datetime) -> list[dict]:
    """``oot_backend_stats`` rows of one backend, or of every backend when ``repo`` is ''."""
    return load("oot_backend_stats").run(warehouse, {"repo": repo, "days": days, "now": format_time(now)})


def trend_days(days: int) -> int:
    """The backend page's trend covers its range, and at least a week (a one-day chart says little)."""
    return max(days, min(TREND_RANGES))


def side_rows(warehouse: Warehouse, repo: str, *, days: int, now: datetime) -> BackendView:
    """The rows a backend page shows beside the matrix: the trend, the cards' counts, the cards' stats."""
    daily = tuple(daily_rows(warehouse, repo, days=trend_days(days), now=now))
    card_daily = daily if trend_days(days) == days else tuple(daily_rows(warehouse, repo, days=days, now=now))
    stats = stats_rows(warehouse, repo, days=days, now=now)
    return BackendView(daily=daily, card_daily=card_daily, stats=stats[0] if stats else {},
                       trend_days=trend_days(days))


def backend_html(warehouse: Warehouse, repo: str, *, days: int, now: datetime, silence_hours: float,
                 site: Site, rows: list[dict] | None = None, view: BackendView | None = None,
                 public_url: str | None = None) -> str:
    """A backend's page. ``view`` says which page or trunk kind and may carry the side rows already fetched;
    ``rows`` (already-fetched dashboard rows of this view) spares the dashboard query. The side queries run on
    a second connection while the dashboard runs (when the warehouse has one)."""
    view = view or BackendView()
    pending = None
    if view.event is None and view.daily is None:
        side = warehouse.side_reader() or warehouse
        pending = _side_pool().submit(side_rows, side, repo, days=days, now=now)
    if rows is None:
        rows = dashboard_rows(warehouse, repo, days=days, now=now, page=view.page, event=view.event)
    if pending is not None:
        fetched = pending.result()
        view = dataclasses.replace(view, daily=fetched.daily, card_daily=fetched.card_daily, stats=fetched.stats,
                                   trend_days=fetched.trend_days)
    view = dataclasses.replace(view, public_url=public_url)
    page = build_backend(rows, repo=repo, days=days, now=now, site=site, silence_hours=silence_hours, view=view)
    return render_backend(page)


@functools.cache
def _side_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="page-side")


def daily_rows(warehouse: Warehouse, repo: str, *, days: int, now: datetime) -> list[dict]:
    """``oot_daily_pass_rate`` rows of one backend, or of every backend when ``repo`` is ''."""
    return load("oot_daily_pass_rate").run(warehouse, {"repo": repo, "days": days, "now": format_time(now)})


def trends_html(warehouse: Warehouse, *, days: int, now: datetime, site: Site,
                rows: list[dict] | None = None, link_days: int = DEFAULT_RANGE) -> str:
    """The trends page; ``link_days``: the range of the backend pages it links to."""
    if rows is None:
        rows = daily_rows(warehouse, "", days=days, now=now)
    backends = build_trends(rows, days=days, now=now, site=site, link_days=link_days)
    return render_trends(TrendsPage(days=days, generated_at=now, site=site, backends=backends))


async def _services(request: Request) -> Services:
    return await request.app.state.services.settled()


ServicesDep = Annotated[Services, Depends(_services)]
NowDep = Annotated[datetime, Depends(page_clock)]


def _html(body: str) -> HTMLResponse:
    # Pages carry their own CSP <meta>; the header repeats it for clients that prefer headers.
    return HTMLResponse(body, headers={
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                   "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    })


def _unavailable(exc: WarehouseError) -> PlainTextResponse:
    log.error("page query failed: %s", exc)
    return PlainTextResponse("the results warehouse is not answering; try again shortly", status_code=503)


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/oot", status_code=307)


@router.get("/oot", response_class=HTMLResponse, summary="every backend's pass rate, worst first",
            responses={200: html_page("the summary page"), 400: plain("days is not one of 1, 7, 30"),
                       503: plain(WAREHOUSE_DOWN)})
async def summary_page(services: ServicesDep, now: NowDep, days: str | None = None) -> Response:
    try:
        chosen = parse_days(days)
    except BadRange as exc:
        return PlainTextResponse(str(exc), status_code=400)
    try:
        body = await asyncio.to_thread(summary_html, services.warehouse, days=chosen, now=now,
                                       silence_hours=services.settings.silence_hours, site=LIVE,
                                       registry=registry_of(services))
    except WarehouseError as exc:
        return _unavailable(exc)
    return _html(body)


BADGE_MAX_AGE_S = 60  # as fresh as the live pages, which reload every 60 s


def badge_svg(warehouse: Warehouse, repo: str, *, now: datetime, rows: list[dict] | None = None) -> str:
    """The backend's badge; ``rows`` (``oot_daily_pass_rate`` rows of this backend over 7 days) spares the query."""
    if rows is None:
        rows = daily_rows(warehouse, repo, days=BADGE_DAYS, now=now)
    return render_badge(badge_rate(rows))


@router.get("/oot/badge/{org}/{repo}.svg", summary="a backend's README badge: its PR pass rate over 7 days",
            responses={200: {"description": "the badge", "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
                       404: plain("not a repository name"), 503: plain(WAREHOUSE_DOWN)})
async def badge(org: str, repo: str, services: ServicesDep, now: NowDep) -> Response:
    name = f"{org}/{repo}"
    if not is_repo_name(name):
        return PlainTextResponse("a backend is named owner/repository (letters, digits, '.', '_', '-')",
                                 status_code=404)
    try:
        body = await asyncio.to_thread(badge_svg, services.warehouse, name, now=now)
    except WarehouseError as exc:
        return _unavailable(exc)
    return Response(body, media_type="image/svg+xml", headers={
        "Cache-Control": f"public, max-age={BADGE_MAX_AGE_S}", "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})


@router.get("/oot/trends", response_class=HTMLResponse, summary="every backend's daily PR and trunk pass rate",
            responses={200: html_page("the trends page"), 400: plain("days is not one of the offered ranges"),
                       503: plain(WAREHOUSE_DOWN)})
async def trends_page(services: ServicesDep, now: NowDep, days: str | None = None) -> Response:
    try:
        chosen = parse_days(days, TREND_RANGES, DEFAULT_TREND_RANGE)
    except BadRange as exc:
        return PlainTextResponse(str(exc), status_code=400)
    try:
        body = await asyncio.to_thread(trends_html, services.warehouse, days=chosen, now=now, site=LIVE)
    except WarehouseError as exc:
        return _unavailable(exc)
    return _html(body)


def parse_view(page: str | None, event: str | None) -> BackendView:
    """``?page=`` (PR pages, from 1) and ``?event=`` (one trunk kind's view); a clear message when wrong."""
    number = 1
    if page not in (None, ""):
        if not page.strip().isdigit() or not 1 <= int(page) <= MAX_PAGE:
            raise BadRange(f"page must be a whole number from 1 to {MAX_PAGE} (got {page[:20]!r})")
        number = int(page)
    if event in (None, ""):
        return BackendView(page=number)
    if not is_event_view(event):
        raise BadRange("event must be a trunk event type such as push, nightly or periodic "
                       "(lower-case letters, digits, '_')")
    if number != 1:
        raise BadRange("page applies to the pull requests; a trunk kind's view has one page")
    return BackendView(event=event)


@router.get("/oot/{org}/{repo}", response_class=HTMLResponse, summary="one backend's PR x job matrix",
            responses={200: html_page("the matrix page"),
                       400: plain("days is not one of 1, 7, 30, or page / event is malformed"),
                       404: plain("not a repository name"), 503: plain(WAREHOUSE_DOWN)})
async def backend_page(org: str, repo: str, services: ServicesDep, now: NowDep, days: str | None = None,
                       page: str | None = None, event: str | None = None) -> Response:
    name = f"{org}/{repo}"
    if not is_repo_name(name):
        return PlainTextResponse("a backend is named owner/repository (letters, digits, '.', '_', '-')",
                                 status_code=404)
    try:
        chosen = parse_days(days)
        view = parse_view(page, event)
    except BadRange as exc:
        return PlainTextResponse(str(exc), status_code=400)
    try:
        body = await asyncio.to_thread(backend_html, services.warehouse, name, days=chosen, now=now,
                                       silence_hours=services.settings.silence_hours, site=LIVE,
                                       view=dataclasses.replace(view, registry=registry_of(services)),
                                       public_url=services.settings.public_url)
    except WarehouseError as exc:
        return _unavailable(exc)
    return _html(body)
