"""The allowlist and the canary on the pages (issues 12 §2-3, 14 §4): the renderers from fixture rows, then the
live app with an allowlist file and a canary configured, then ``publish`` (every link resolving on disk)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from oot_hud.allowlist_source import AllowlistSource, parse_location
from oot_hud.publish import render_site, write_site
from policy.allowlist import parse_allowlist
from renderers.backend import BackendView, build_backend, render_backend
from renderers.frame import Site
from renderers.health import build_health
from renderers.registry import NO_REGISTRY, Registry
from renderers.summary import build_summary, render_summary
from sql.warehouse import Warehouse
from tests.readpath_app import build_app
from tests.readpath_data import record, row
from tests.test_renderers_html import NOW, backend_rows, parse, record_row, summary_row

ALLOWLIST = """\
L1:
  - onb/quiet
L2:
  - new/was-l1
L3:
  npu:
    contoso/pytorch-npu: [npu-oncall]
    quiet/npu-two: [alice, acme-org/npu-team]
L4:
  - acme/torch-acme: carol, dave
  - quiet/gate
  - pytorch/crcr-test
"""
CANARY = "pytorch/crcr-test"
REGISTRY = Registry(allowlist=parse_allowlist(ALLOWLIST), label_prefix="ciflow/oot/", canaries=(CANARY,))


def summary_rows() -> list[dict[str, Any]]:
    return [summary_row("acme/torch-acme"),  # registered at L4, reported L4
            summary_row("contoso/pytorch-npu", level="L2", successes=1, failures=4),  # registered L3: mismatch
            summary_row("riscv-lab/pytorch-ci", level="L2"),  # not registered
            summary_row(CANARY, successes=0, failures=30)]  # the canary: never in a ranking


def levels() -> list[dict[str, Any]]:
    return [{"downstream_repo": r["downstream_repo"], "level": r["level"]} for r in summary_rows()] + [
        {"downstream_repo": "new/was-l1", "level": "L1"}]  # registered L2, only reported as L1


def sections(html: str) -> dict[str, list[tuple[str, str | None]]]:
    """Per section: (backend, "silent" or None) in page order."""
    out: dict[str, list[tuple[str, str | None]]] = {}
    for part in html.split('<table class="summary" data-level="')[1:]:
        level = part.split('"')[0]
        for tr in part.split("</table>")[0].split("<tr data-backend=")[1:]:
            out.setdefault(level, []).append((tr.split('"')[1], "silent" if 'data-silent="true"' in tr[:200] else None))
    return out


def test_summary_with_the_allowlist() -> None:
    page = build_summary(summary_rows(), days=7, now=NOW, site=Site(), levels=levels(), registry=REGISTRY)
    html = render_summary(page)
    assert sections(html) == {
        # the allowlist decides the section; silent ones last in their section
        "L4": [("acme/torch-acme", None), ("quiet/gate", "silent")],
        "L3": [("contoso/pytorch-npu", None), ("quiet/npu-two", "silent")],
        "L2": [("riscv-lab/pytorch-ci", None), ("new/was-l1", "silent")],
    }
    assert CANARY not in html.split('id="pipeline-health"')[0] + html.split("<table")[1]  # in no section or count
    # counts: the allowlist's registered backends (the canary left out), and how many are silent
    assert page.registered_counts and page.level_counts == (("L4", 2), ("L3", 2), ("L2", 1), ("L1", 1))
    counts = html.split('data-counts="levels">')[1].split("</p>")[0]
    assert counts.startswith("Registered backends (allowlist): ") and "· 4 silent in the last 7 days" in counts
    # the mismatch shows both levels; an unregistered backend says so
    [mismatch] = [tr for tr in html.split("<tr ") if "contoso/pytorch-npu" in tr[:80]]
    assert 'data-mismatch="L3 L2"' in mismatch and "level mismatch: allowlist L3, relay <bdi>L2</bdi>" in mismatch
    [unregistered] = [tr for tr in html.split("<tr ") if "riscv-lab/pytorch-ci" in tr[:80]]
    assert 'data-registered="no"' in unregistered and "not in the allowlist" in unregistered
    [was_l1] = [tr for tr in html.split("<tr ") if "new/was-l1" in tr[:60]]
    assert "reported only as <bdi>L1</bdi> in the last 7 days: results stored, not shown" in was_l1
    assert 'data-mismatch="L2 L1"' in was_l1
    [quiet] = [tr for tr in html.split("<tr ") if "quiet/gate" in tr[:60]]
    assert "registered in the allowlist, no results in the last 7 days" in quiet
    assert parse(quiet).hrefs == ["/oot/quiet/gate?days=7"]  # its page exists (empty, with its registration)
    l1 = html.split('<ul class="names" data-level="L1">')[1].split("</ul>")[0]
    assert "onb/quiet" in l1 and 'data-tag="silent"' in l1 and not parse(l1).hrefs


def test_without_an_allowlist_nothing_changes() -> None:
    plain = build_summary(summary_rows(), days=7, now=NOW, site=Site(), levels=levels())
    assert build_summary(summary_rows(), days=7, now=NOW, site=Site(), levels=levels(),
                         registry=NO_REGISTRY) == plain
    html = render_summary(plain)
    assert "allowlist" not in html and "silent" not in html and "pipeline-health" not in html
    assert not plain.registered_counts and CANARY in html  # no canary configured: an ordinary backend


def test_canary_alone_leaves_the_rankings_and_gets_the_health_line() -> None:
    registry = Registry(canaries=(CANARY,))
    rows = [{"canary": CANARY, "last_report": NOW - timedelta(hours=8), "upstream_repo": "pytorch/pytorch",
             "pr_number": 7, "pr_at": NOW - timedelta(hours=8), "jobs": 3, "expected": 2, "pending": 0,
             "unexpected": 1, "unexpected_jobs": ["<b>job-xfail</b>"]}]
    line = build_health(rows, now=NOW, silence_hours=6, site=Site(), recent_prs=5, window_days=30, days=7)
    page = build_summary(summary_rows(), days=7, now=NOW, site=Site(), levels=levels(), registry=registry,
                         health=line)
    html = render_summary(page)
    assert CANARY not in [b.repo for b in page.backends] and ("L4", 1) in page.level_counts
    health = html.split('id="pipeline-health"')[1].split("</section>")[0]
    assert 'data-health="silent"' in html and 'data-state="silent"' in health and "chip-red" in health
    assert "relay silent" in health and "silent for longer than 6 h" in health and "8h" in health
    assert "Newest PRs: 0 of 1 came back with the expected outcomes" in health
    assert "&lt;b&gt;job-xfail&lt;/b&gt;" in health and "<b>" not in health  # the canary's job names: text
    assert parse(health).hrefs == ["/oot/pytorch/crcr-test?days=7", "/oot/pr/pytorch/pytorch/7"]


def test_backend_page_shows_the_registration_as_text() -> None:
    rows = [dict(r, downstream_repo="contoso/pytorch-npu", downstream_level="L2") for r in backend_rows()]
    page = build_backend(rows, repo="contoso/pytorch-npu", days=7, now=NOW, site=Site(), silence_hours=6,
                         view=BackendView(registry=REGISTRY))
    html = render_backend(page)
    registration = html.split('data-registration="registered">')[1].split("</p>")[0]
    assert 'data-label="ciflow/oot/npu"' in registration and 'data-device="npu"' in registration
    assert "level mismatch: allowlist L3, relay <bdi>L2</bdi>" in registration
    assert "on-call: <span" in registration and "npu-oncall" in registration
    assert not parse(registration).hrefs and "@" not in registration  # never a mention or a link
    two = render_backend(build_backend([], repo="quiet/npu-two", days=7, now=NOW, site=Site(), silence_hours=6,
                                       view=BackendView(registry=REGISTRY)))
    assert "<bdi>alice, acme-org/npu-team</bdi>" in two and 'data-empty="prs"' in two
    other = render_backend(build_backend([record_row(downstream_repo="x/y")], repo="x/y", days=7, now=NOW,
                                         site=Site(), silence_hours=6, view=BackendView(registry=REGISTRY)))
    assert 'data-registration="unregistered"' in other and "(the relay reported it at <bdi>L4</bdi>)" in other
    canary = render_backend(build_backend([], repo=CANARY, days=7, now=NOW, site=Site(), silence_hours=6,
                                          view=BackendView(registry=REGISTRY)))
    assert 'data-canary="true"' in canary
    assert "data-registration" not in backend_page_plain()


def backend_page_plain() -> str:
    return render_backend(build_backend(backend_rows(), repo="acme/torch-acme", days=7, now=NOW, site=Site(),
                                        silence_hours=6))


# ---- live and published, with an allowlist file and a canary configured ---------------------------------


@pytest.fixture
async def configured(warehouse: Warehouse, tmp_path: Path) -> Any:
    now = NOW
    warehouse.insert_job_rows([row(r) for r in [
        record(backend="acme/torch-acme", pr=1, received=now - timedelta(hours=2)),
        record(backend="contoso/pytorch-npu", level="L2", pr=1, conclusion="failure",
               received=now - timedelta(hours=2)),
        record(backend=CANARY, pr=2, job="t-xfail", conclusion="failure", received=now - timedelta(hours=1)),
        record(backend=CANARY, pr=2, job="build", received=now - timedelta(hours=1)),
    ]])
    path = tmp_path / "allowlist.yml"
    path.write_text(ALLOWLIST)
    source = AllowlistSource(parse_location(str(path)), refresh_seconds=3600)
    await source.start()
    app = build_app(warehouse, tmp_path, now=now, canary_backends=CANARY, allowlist=str(path),
                    l3_label_prefix="ciflow/oot/")
    app.state.services.allowlist = source
    try:
        yield app
    finally:
        await source.stop()


async def test_live_pages_with_an_allowlist_and_a_canary(configured: Any, warehouse: Warehouse,
                                                         tmp_path: Path) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=configured), base_url="http://test") as http:
        summary = (await http.get("/oot")).text
        npu = (await http.get("/oot/contoso/pytorch-npu")).text
        quiet = (await http.get("/oot/quiet/gate")).text
    found = sections(summary)
    assert found["L4"] == [("acme/torch-acme", None), ("quiet/gate", "silent")]
    assert found["L3"] == [("contoso/pytorch-npu", None), ("quiet/npu-two", "silent")]
    assert 'data-canary="pytorch/crcr-test" data-state="healthy"' in summary
    assert "Newest PRs: 1 of 1 came back with the expected outcomes" in summary
    assert 'data-mismatch="L3 L2"' in npu and 'data-label="ciflow/oot/npu"' in npu
    assert "registered" in quiet and "<bdi>carol, dave</bdi>" not in quiet  # quiet/gate lists no on-call
    assert "on-call: none listed" in quiet
    rules = configured.state.services.pr_policy()
    assert rules.gate.canaries == {CANARY} and rules.gate.allowlist_configured, "the gate knows the canary"

    # publish: the same lines, and every relative link resolving on disk (silent backends' pages included)
    services = configured.state.services
    from oot_hud.pages import registry_of

    out = tmp_path / "site"
    write_site(render_site(warehouse, ranges=(7,), now=NOW, silence_hours=6, registry=registry_of(services)), out)
    index = (out / "index.html").read_text()
    assert 'data-canary="pytorch/crcr-test" data-state="healthy"' in index and 'data-silent="true"' in index
    assert 'data-mismatch="L3 L2"' in (out / "7d/contoso/pytorch-npu/index.html").read_text()
    for page in out.rglob("*.html"):
        for href in parse(page.read_text()).hrefs:
            if "://" not in href and not href.startswith("#"):
                target = (page.parent / href.split("#")[0]).resolve()
                assert target.exists(), (page.relative_to(out), href)


def test_publish_reads_the_configured_allowlist_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from oot_hud.publish import PublishError, _read_allowlist
    from oot_hud.settings import Settings

    path = tmp_path / "allowlist.yml"
    path.write_text(ALLOWLIST)
    found = _read_allowlist(Settings(data_dir=tmp_path / "data", allowlist=str(path)))
    assert found is not None and found.level_of("quiet/npu-two") == "L3"
    assert _read_allowlist(Settings(data_dir=tmp_path / "data")) is None  # none configured
    # unreadable now: the copy kept on disk (by serve, or by the read above) is used, else none, said so
    assert _read_allowlist(Settings(data_dir=tmp_path / "other", allowlist=str(tmp_path / "gone.yml"))) is None
    assert "not readable" in capsys.readouterr().err
    with pytest.raises(PublishError, match="read through the GitHub App"):
        _read_allowlist(Settings(data_dir=tmp_path / "data", allowlist="github:pytorch/pytorch"))
