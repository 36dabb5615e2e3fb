"""The static site: the live pages rendered with relative links into ``DIR``, optionally uploaded to S3.

Layout (every link relative, so the site works from any sub-path and from file://)::

    index.html                      the summary for the default range
    {days}d/index.html              the summary for each range
    {days}d/{org}/{repo}/index.html each backend, for every range (an empty state when it has no results):
                                    cards, trends, its 50 most recently active PRs (older ones: the live site)
                                    and the 30 newest trunk commits of every kind
    {widest}d/{org}/{repo}/trunk-{kind}.html  one trunk kind (push, nightly, periodic, any other reported), in
                                    the widest range only: every range's tabs link there
    badge/{org}/{repo}.svg          its README badge (PR pass rate over 7 days)
    trends/{7,30,90}d/index.html    the trends, always all three ranges

While ``oot-hud serve`` holds the embedded data directory, the pages come from that server instead
(``GET /api/oot/site.tar.gz``), rendered there by the same ``render_site``.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import logging
import tarfile
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from oot_hud.pages import (
    NowDep,
    backend_html,
    badge_svg,
    daily_rows,
    dashboard_rows,
    health_rows,
    level_rows,
    registry_for,
    registry_of,
    stats_rows,
    summary_html,
    summary_rows,
    trend_days,
    trends_html,
)
from oot_hud.responses import WAREHOUSE_DOWN, plain
from renderers.backend import PER_PAGE, TRUNK_KINDS, BackendView, is_event_view
from renderers.badge import BADGE_DAYS
from renderers.frame import DEFAULT_RANGE, RANGES, Site, is_repo_name
from renderers.registry import NO_REGISTRY, Registry
from renderers.trends import TREND_RANGES
from sql.warehouse import Warehouse, WarehouseError

log = logging.getLogger("oot_hud.publish")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".svg": "image/svg+xml"}
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_SITE_BYTES = 512 * 1024 * 1024  # refuse a server answer beyond this (a sanity bound, not a budget)


router = APIRouter(tags=["publish"])


class PublishError(RuntimeError):
    """Publishing cannot proceed; the message says what to do."""


def parse_ranges(text: str) -> tuple[int, ...]:
    """``"1,7,30"`` -> (1, 7, 30); only the ranges the pages offer."""
    try:
        values = tuple(dict.fromkeys(int(part) for part in text.split(",") if part.strip()))
    except ValueError:
        raise PublishError(f"--days takes a comma-separated list of {', '.join(map(str, RANGES))}") from None
    if not values or any(value not in RANGES for value in values):
        raise PublishError(f"--days takes a comma-separated list of {', '.join(map(str, RANGES))}")
    return values


# PR pages published per backend and range: the first (50 PRs); it says older ones are on the live site. A
# second page per range was 180 of 1,357 files and 83 of 230 MB for 100 backends (docs/read-path.md, round 8).
STATIC_PAGES = 1


def render_site(warehouse: Warehouse, *, ranges: Iterable[int], now: datetime, silence_hours: float,
                public_url: str | None = None, registry: Registry = NO_REGISTRY) -> dict[str, str]:
    """Every page of the static site: relative path -> text (HTML, and the badges' SVG). ``public_url``: the
    live site, for the README badge snippet on each backend page; ``registry``: the allowlist and canaries."""
    ranges = tuple(ranges)
    default = DEFAULT_RANGE if DEFAULT_RANGE in ranges else ranges[0]
    # Trunk-kind views only in the widest range (the 30 newest commits of a kind there include the narrower
    # ranges' newest): 3 kinds x every range was 810 of 1,357 files for 100 backends.
    site = Site(static=True, ranges=ranges, pages=STATIC_PAGES, trunk_days=max(ranges))
    files: dict[str, str] = {}
    # registered backends and canaries get pages even when silent: the summary links them
    backends: dict[str, None] = dict.fromkeys([*(entry.repo for entry in registry.entries()), *registry.canaries])
    health = (health_rows(warehouse, registry.canaries, now=now, silence_hours=silence_hours)
              if registry.canaries else None)
    for days in ranges:
        rows = summary_rows(warehouse, days=days, now=now, silence_hours=silence_hours)
        levels = level_rows(warehouse, days=days, now=now)
        backends.update((str(row["downstream_repo"]), None) for row in rows)
        depths = {f"{days}d/index.html": 1, **({"index.html": 0} if days == default else {})}
        for path, depth in depths.items():
            files[path] = summary_html(warehouse, days=days, now=now, silence_hours=silence_hours,
                                       site=site.at(depth), rows=rows, levels=levels, registry=registry, health=health)
    for days in TREND_RANGES:  # always all three: the trends' range links must resolve
        rows = daily_rows(warehouse, "", days=days, now=now)
        backends.update((str(row["backend"]), None) for row in rows)  # so each one's link resolves
        files[f"trends/{days}d/index.html"] = trends_html(warehouse, days=days, now=now, site=site.at(2),
                                                          rows=rows, link_days=default)
    repos = [repo for repo in backends if is_repo_name(repo)]
    for repo in backends.keys() - set(repos):
        log.warning("backend name %r cannot be a path; no page published for it", repo[:100])
    badge_rows = _by_repo(daily_rows(warehouse, "", days=BADGE_DAYS, now=now), "backend")
    for repo in repos:
        files[f"badge/{repo}.svg"] = badge_svg(warehouse, repo, now=now, rows=badge_rows.get(repo, []))

    def render_range(days: int) -> dict[str, str]:
        # One query per kind of row for every backend of the range, then each backend's pages from its rows.
        pages_rows = _by_repo(dashboard_rows(warehouse, "", days=days, now=now, prs=PER_PAGE * STATIC_PAGES))
        daily = _by_repo(daily_rows(warehouse, "", days=trend_days(days), now=now), "backend")
        card_daily = daily if trend_days(days) == days else _by_repo(daily_rows(warehouse, "", days=days, now=now),
                                                                      "backend")
        stats = {str(row["downstream_repo"]): row for row in stats_rows(warehouse, "", days=days, now=now)}
        kinds = dict.fromkeys(TRUNK_KINDS)
        kinds.update((str(kind[0]), None) for rows in pages_rows.values() for kind in rows[0].get("trunk_kinds") or ()
                     if is_event_view(str(kind[0])))
        kind_rows = ({kind: _by_repo(dashboard_rows(warehouse, "", days=days, now=now, event=kind)) for kind in kinds}
                     if days == site.trunk_days else {})
        out: dict[str, str] = {}
        for repo in repos:
            side = BackendView(daily=tuple(daily.get(repo, ())), card_daily=tuple(card_daily.get(repo, ())),
                               stats=stats.get(repo, {}), trend_days=trend_days(days), registry=registry)
            for number, rows in enumerate(split_pages(pages_rows.get(repo, []), PER_PAGE, STATIC_PAGES), 1):
                name = "index.html" if number == 1 else f"page-{number}.html"
                out[f"{days}d/{repo}/{name}"] = backend_html(
                    warehouse, repo, days=days, now=now, silence_hours=silence_hours, site=site.at(3), rows=rows,
                    view=dataclasses.replace(side, page=number), public_url=public_url)
            for kind, by_repo in kind_rows.items():
                out[f"{days}d/{repo}/trunk-{kind}.html"] = backend_html(
                    warehouse, repo, days=days, now=now, silence_hours=silence_hours, site=site.at(3),
                    rows=by_repo.get(repo, []), view=BackendView(event=kind, registry=registry))
        return out

    # Two workers: one renders (Python) while the other waits on the warehouse.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="publish") as pool:
        for pages in pool.map(render_range, ranges):
            files.update(pages)
    return files


def split_pages(rows: list[dict], per_page: int, pages: int) -> list[list[dict]]:
    """A backend's dashboard rows of several PR pages -> the rows of each page (at least one, maybe empty): PRs
    in the query's order (most recently active first), the trunk rows on every page, as the live pages get them."""
    trunk = [row for row in rows if int(row["pr_number"]) == 0]
    by_pr: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        if int(row["pr_number"]) != 0:
            by_pr.setdefault((str(row["upstream_repo"]), int(row["pr_number"])), []).append(row)
    order = sorted(by_pr, key=lambda pr: (max(row["received_at"] for row in by_pr[pr]), pr[1]), reverse=True)
    out = []
    for number in range(pages):
        chosen = order[number * per_page:(number + 1) * per_page]
        if number and not chosen:
            break
        out.append([row for pr in chosen for row in by_pr[pr]] + trunk)
    return out


def _by_repo(rows: Iterable[dict], column: str = "downstream_repo") -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(str(row[column]), []).append(row)
    return grouped


def site_archive(files: Mapping[str, str]) -> bytes:
    """The site as a gzipped tar (how the running server hands it to ``publish``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as archive:
        for path, text in sorted(files.items()):
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def read_archive(data: bytes) -> dict[str, str]:
    """Inverse of ``site_archive``, refusing anything but plain relative files."""
    files: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive:
            path = PurePosixPath(member.name)
            if not member.isfile() or path.is_absolute() or ".." in path.parts or not member.name:
                raise PublishError(f"the server's site archive holds an unexpected entry {member.name[:100]!r}")
            handle = archive.extractfile(member)
            assert handle is not None
            files[str(path)] = handle.read().decode()
    return files


def write_site(files: Mapping[str, str], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for relative, text in sorted(files.items()):
        target = out / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def fetch_site(server_url: str, ranges: Iterable[int], *, timeout: float = 300.0,
               get: Callable[..., Any] | None = None) -> dict[str, str]:
    """Ask the running server (which holds the embedded data directory) to render the site."""
    import httpx

    url = f"{server_url.rstrip('/')}/api/oot/site.tar.gz"
    params = {"days": ",".join(map(str, ranges))}
    try:
        response = (get or httpx.get)(url, params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        raise PublishError(f"the server at {server_url} holds the data directory but did not answer "
                           f"({type(exc).__name__}); check that it is running, or stop it and publish again") from None
    if response.status_code != 200:
        raise PublishError(f"the server at {server_url} answered {response.status_code} to {url}; "
                           "stop it and publish again, or update it to this version")
    if len(response.content) > MAX_SITE_BYTES:
        raise PublishError(f"the server at {server_url} sent more than {MAX_SITE_BYTES} bytes")
    return read_archive(response.content)


@router.get("/api/oot/site.tar.gz", summary="the static site as a gzipped tar (used by `oot-hud publish`)",
            responses={200: {"description": "the site", "content": {"application/gzip": {"schema": {
                "type": "string", "format": "binary"}}}},
                       400: plain("days is not a list of 1, 7, 30"), 403: plain("not a loopback client"),
                       503: plain(WAREHOUSE_DOWN)})
async def site_tarball(request: Request, now: NowDep, days: str = ",".join(map(str, RANGES))) -> Response:
    import asyncio

    # Rendering the whole site is heavy: only the machine's own `oot-hud publish` may ask for it.
    client = request.client.host if request.client else ""
    if client not in LOOPBACK:
        return PlainTextResponse("the site archive is served to loopback clients only; run `oot-hud publish` "
                                 "on the server's machine", status_code=403)
    try:
        ranges = parse_ranges(days)
    except PublishError as exc:
        return PlainTextResponse(str(exc), status_code=400)
    services = await request.app.state.services.settled()

    def build() -> bytes:
        return site_archive(render_site(services.warehouse, ranges=ranges, now=now,
                                        silence_hours=services.settings.silence_hours,
                                        public_url=services.settings.public_url, registry=registry_of(services)))

    try:
        return Response(await asyncio.to_thread(build), media_type="application/gzip")
    except WarehouseError as exc:
        log.error("site archive failed: %s", exc)
        return PlainTextResponse(WAREHOUSE_DOWN, status_code=503)


@dataclasses.dataclass(frozen=True)
class Upload:
    key: str
    content_type: str
    size: int


def upload_site(out: Path, bucket: str, prefix: str, client: Any) -> list[Upload]:
    """Upload every file under ``out`` to ``s3://bucket/prefix/...`` with its content type."""
    prefix = prefix.strip("/")
    uploads = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        relative = path.relative_to(out).as_posix()
        key = f"{prefix}/{relative}" if prefix else relative
        content_type = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        body = path.read_bytes()
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                          CacheControl="max-age=300")
        uploads.append(Upload(key, content_type, len(body)))
    return uploads


# ---- the `oot-hud publish` command ----------------------------------------------------------------------

def add_arguments(parser: Any) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory to write the site into")
    parser.add_argument("--days", default=",".join(map(str, RANGES)),
                        help="comma-separated ranges to publish (default: 1,7,30)")
    parser.add_argument("--s3-bucket", help="also upload the site to this S3 bucket (boto3's own settings)")
    parser.add_argument("--s3-prefix", default="", help="key prefix inside the bucket")


def command(args: Any, settings: Any) -> int:
    """Render (locally, or through the running server), write ``--out``, upload when asked."""
    import sys
    import time

    from oot_hud import datadir

    started = time.monotonic()
    try:
        ranges = parse_ranges(args.days)
        if settings.embedded:
            try:
                with datadir.exclusive(settings.data_dir):
                    files = _render_locally(settings, ranges)
            except datadir.DataDirInUse as exc:
                if not exc.server_url:
                    raise PublishError(str(exc)) from None
                print(f"oot-hud: the data directory is held by the server at {exc.server_url}; "
                      "asking it to render the site", file=sys.stderr)
                files = fetch_site(exc.server_url, ranges)
        else:
            files = _render_locally(settings, ranges)
        written = write_site(files, args.out)
        print(f"oot-hud: wrote {len(written)} pages to {args.out.resolve()} "
              f"in {time.monotonic() - started:.1f}s; open {(args.out / 'index.html').resolve()}")
        if args.s3_bucket:
            import boto3

            uploads = upload_site(args.out, args.s3_bucket, args.s3_prefix, boto3.client("s3"))
            print(f"oot-hud: uploaded {len(uploads)} files to s3://{args.s3_bucket}/{args.s3_prefix.strip('/')}")
    except PublishError as exc:
        print(f"oot-hud: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # boto3 / warehouse failures: say what failed, not a traceback
        print(f"oot-hud: publish failed: {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr)
        return 1
    return 0


def _render_locally(settings: Any, ranges: tuple[int, ...]) -> dict[str, str]:
    from oot_hud.services import open_warehouse

    registry = registry_for(settings, _read_allowlist(settings))
    warehouse = open_warehouse(settings)
    try:
        return render_site(warehouse, ranges=ranges, now=datetime.now(UTC), silence_hours=settings.silence_hours,
                           public_url=settings.public_url, registry=registry)
    finally:
        warehouse.close()


def _read_allowlist(settings: Any) -> Any:
    """The allowlist as ``serve`` would read it (``OOT_HUD_ALLOWLIST``), once; a ``github:`` source, read
    through the App that only ``serve`` runs, falls back to the copy ``serve`` kept on disk. None: none
    configured, or no copy readable (the pages then show no allowlist, and publish says so)."""
    import asyncio
    import sys

    from oot_hud.services import build_allowlist

    try:
        source = build_allowlist(settings, lambda: None)
    except ValueError as exc:
        raise PublishError(str(exc)) from None
    if source is None:
        return None

    async def once() -> None:
        await source.start()  # the disk copy, then one read of the source
        await source.stop()

    asyncio.run(once())
    if source.current is None:
        print(f"oot-hud: the allowlist at {source.location.display} is not readable "
              f"({source.status.error}); publishing without it", file=sys.stderr)
    return source.current
