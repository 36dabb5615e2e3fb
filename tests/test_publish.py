"""``oot-hud publish``: a static site whose links resolve on disk from any directory, S3 upload (moto
server mode), and publishing while ``serve`` holds the embedded data directory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from oot_hud import datadir
from oot_hud.publish import (
    PublishError,
    fetch_site,
    parse_ranges,
    read_archive,
    render_site,
    site_archive,
    upload_site,
    write_site,
)
from sql.warehouse import Warehouse
from tests.conftest import RELAY_FIXTURES, relay_payload
from tests.readpath_app import build_app, serve
from tests.readpath_data import NOW, record, row
from tests.servers import REPO_ROOT, ServerProcess, free_port, running_server

BACKENDS = ("acme/torch-acme", "contoso/pytorch-npu")


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs.extend(value or "" for name, value in attrs if name == "href")


def assert_links_resolve(root: Path) -> int:
    """Every non-https link of every page is relative and names a file that exists. Returns links checked."""
    checked = 0
    for page in root.rglob("*.html"):
        parser = Links()
        parser.feed(page.read_text())
        for href in parser.hrefs:
            if href.startswith("https://"):
                continue
            parts = urlsplit(href)
            assert not parts.scheme and not href.startswith("/"), f"{page}: {href} is not relative"
            target = (page.parent / parts.path).resolve()
            assert target.is_file(), f"{page.relative_to(root)} links to missing {href}"
            checked += 1
    return checked


def seed(warehouse: Warehouse) -> None:
    warehouse.insert_job_rows([
        row(record()), row(record(job="b", conclusion="failure")), row(record(pr=0, sha="c" * 40)),
        row(record(backend="contoso/pytorch-npu", level="L3", received=NOW - timedelta(days=3))),
        row(record(backend="bad name/../x", level="L3")),  # cannot be a path: no page, no link
    ])


def test_static_site_links_resolve_from_any_directory(warehouse: Warehouse, tmp_path: Path) -> None:
    seed(warehouse)
    files = render_site(warehouse, ranges=(1, 7, 30), now=NOW, silence_hours=6)
    expected = {"index.html", "1d/index.html", "7d/index.html", "30d/index.html"}
    expected |= {f"{d}d/{repo}/index.html" for d in (1, 7, 30) for repo in BACKENDS}
    expected |= {f"30d/{repo}/trunk-{kind}.html" for repo in BACKENDS  # the widest range only
                 for kind in ("push", "nightly", "periodic")}
    expected |= {f"trends/{d}d/index.html" for d in (7, 30, 90)} | {f"badge/{repo}.svg" for repo in BACKENDS}
    assert set(files) == expected  # every backend in every range (contoso has no 1-day data: an empty page)
    assert 'data-empty="prs"' in files["1d/contoso/pytorch-npu/index.html"]
    for where in (tmp_path / "site", tmp_path / "deep" / "sub" / "path"):
        write_site(files, where)
        assert assert_links_resolve(where) > 20
    assert "/oot" not in files["index.html"].split("<main>")[1]  # no live-site links leak in


def test_publish_only_some_ranges(warehouse: Warehouse, tmp_path: Path) -> None:
    seed(warehouse)
    files = render_site(warehouse, ranges=(30,), now=NOW, silence_hours=6)
    assert "1d/index.html" not in files and "index.html" in files
    write_site(files, tmp_path)
    assert_links_resolve(tmp_path)  # the range switcher only offers what was published
    assert parse_ranges("7,1") == (7, 1)
    for bad in ("2", "", "7,x"):
        with pytest.raises(PublishError, match="comma-separated list of 1, 7, 30"):
            parse_ranges(bad)


def test_archive_round_trip_and_refusals(tmp_path: Path) -> None:
    files = {"index.html": "<p>é</p>", "7d/a/b/index.html": "x"}
    assert read_archive(site_archive(files)) == files
    import io
    import tarfile
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as archive:
        info = tarfile.TarInfo("../escape.html")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(PublishError, match="unexpected entry"):
        read_archive(evil.getvalue())


def test_fetch_from_running_server_equals_local_render(warehouse: Warehouse, tmp_path: Path) -> None:
    seed(warehouse)
    with serve(build_app(warehouse, tmp_path, now=NOW)) as url:
        fetched = fetch_site(url, (1, 7))
        live_badge = httpx.get(f"{url}/oot/badge/acme/torch-acme.svg").text
        assert httpx.get(f"{url}/api/oot/site.tar.gz", params={"days": "5"}).status_code == 400
    assert fetched == render_site(warehouse, ranges=(1, 7), now=NOW, silence_hours=6,
                                  public_url="http://127.0.0.1:8000")  # the server's (default) public URL
    assert fetched["badge/acme/torch-acme.svg"] == live_badge and ">50.0%</text>" in live_badge  # same figure


async def test_site_archive_refused_to_remote_clients(warehouse: Warehouse, tmp_path: Path) -> None:
    app = build_app(warehouse, tmp_path, now=NOW)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/api/oot/site.tar.gz")
    assert response.status_code == 403 and "loopback clients only" in response.text


def test_upload_to_s3(moto_endpoint: str, tmp_path: Path) -> None:
    import boto3

    write_site({"index.html": "<p>hi</p>", "7d/acme/torch-acme/index.html": "<p>m</p>"}, tmp_path)
    (tmp_path / "7d" / "style.css").write_text("p{}")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="oot-site")
    uploads = upload_site(tmp_path, "oot-site", "/pages/", s3)
    assert {u.key for u in uploads} == {"pages/index.html", "pages/7d/acme/torch-acme/index.html",
                                        "pages/7d/style.css"}
    head = s3.head_object(Bucket="oot-site", Key="pages/7d/acme/torch-acme/index.html")
    assert head["ContentType"] == "text/html; charset=utf-8"
    assert s3.head_object(Bucket="oot-site", Key="pages/7d/style.css")["ContentType"] == "text/css; charset=utf-8"
    body = s3.get_object(Bucket="oot-site", Key="pages/index.html")["Body"].read()
    assert body == b"<p>hi</p>"


# ---- the command itself, as subprocesses (chDB: one data path per process) -------------------------------

def publish_cli(data_dir: Path, out: Path, *extra: str, env: dict[str, str] | None = None,
                timeout: float = 180) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OOT_HUD_")}
    child_env.update({"OOT_HUD_DATA_DIR": str(data_dir)}, **(env or {}))
    return subprocess.run([sys.executable, "-m", "oot_hud", "publish", "--out", str(out), *extra],
                          env=child_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


@contextlib.contextmanager
def fake_holder(data_dir: Path, server_url: str | None) -> Iterator[None]:
    """Hold the data dir's lock from this process, as a running server would."""
    with datadir.exclusive(data_dir):
        if server_url:
            datadir.record_server(data_dir, server_url)
        try:
            yield
        finally:
            datadir.forget_server(data_dir)


def test_cli_publishes_through_the_server_then_locally_and_uploads(moto_endpoint: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with running_server(data_dir) as server:
        for name in sorted(p.stem for p in RELAY_FIXTURES.glob("[0-9]*.json")):
            response = httpx.post(f"{server.base_url}/api/oot/results", json=relay_payload(name),
                                  headers=server.headers, timeout=30)
            assert response.status_code == 200
        via_server = publish_cli(data_dir, tmp_path / "a", "--days", "7,30")
        assert via_server.returncode == 0, via_server.stderr
        assert f"held by the server at {server.base_url}" in via_server.stderr
    pages = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.html"))
    assert "7d/acme-accel/torch-acme/index.html" in pages and "30d/riscv-lab/pytorch-ci/index.html" in pages
    # index, 2 summaries, 3 trends, 3 backends x (2 ranges x the first PR page + 3 trunk kinds in the widest)
    assert len(pages) == 1 + 2 + 3 + 3 * (2 + 3)
    assert_links_resolve(tmp_path / "a")

    env = {"AWS_ENDPOINT_URL_S3": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket="site-cli")
    local = publish_cli(data_dir, tmp_path / "b", "--s3-bucket", "site-cli", "--s3-prefix", "oot", env=env)
    assert local.returncode == 0, local.stderr
    # index, 3 summaries, 3 trends, 3 backends x (3 ranges + 3 trunk kinds in the widest), 3 badges
    assert "uploaded 28 files to s3://site-cli/oot" in local.stdout
    keys = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").list_objects_v2(
        Bucket="site-cli", Prefix="oot/")["Contents"]
    assert len(keys) == 28 and any(k["Key"] == "oot/index.html" for k in keys)
    assert_links_resolve(tmp_path / "b")


def test_cli_says_what_to_do_when_the_data_dir_is_held(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with fake_holder(data_dir, None):
        done = publish_cli(data_dir, tmp_path / "out")
    assert done.returncode == 2
    assert "is in use" in done.stderr and "Stop it first, or set OOT_HUD_DATA_DIR" in done.stderr
    dead = f"http://127.0.0.1:{free_port()}"
    with fake_holder(data_dir, dead):
        done = publish_cli(data_dir, tmp_path / "out")
    assert done.returncode == 2
    assert f"the server at {dead} holds the data directory but did not answer" in done.stderr
    assert "Traceback" not in done.stderr
    bad = publish_cli(data_dir, tmp_path / "out", "--days", "2")
    assert bad.returncode == 2 and "--days takes" in bad.stderr
    assert not (tmp_path / "out").exists()


def test_publish_after_a_crash_includes_what_the_server_had_only_journaled(tmp_path: Path) -> None:
    """``kill -9`` between the answer and the insert: publishing from the data dir replays the journal first."""
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, env={"OOT_HUD_FLUSH_INTERVAL_MS": "600000"}).start()
    try:
        for name in ("01_pr_in_progress", "07_pr_l3_matrix_leg_a"):  # the second waits for the interval
            response = httpx.post(f"{server.base_url}/api/oot/results", json=relay_payload(name),
                                  headers=server.headers, timeout=30)
            assert response.status_code == 200
        assert list((data_dir / "journal" / "oot_hud").glob("*.jsonl"))
    finally:
        server.kill()
    done = publish_cli(data_dir, tmp_path / "site", "--days", "30")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "30d" / "contoso" / "pytorch-npu" / "index.html").is_file()
    assert not list((data_dir / "journal" / "oot_hud").glob("*.jsonl"))
