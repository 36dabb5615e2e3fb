"""HTML renderers from fixture rows: whole-page golden files (UPDATE_GOLDEN=1 rewrites them) plus the safety
properties: escaping, https-only links, bidi controls dropped, huge names cut, chips' fixed colours."""

from __future__ import annotations

import os
import re
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from renderers.backend import BackendView, Cards, ShardGroup, build_backend, render_backend
from renderers.badge import badge_rate, render_badge
from renderers.frame import Site
from renderers.html import bidi, is_https, job_log_url, link, sparkline
from renderers.policy import Verdict
from renderers.summary import build_summary, render_summary
from renderers.trends import TrendsPage, build_trends, render_trends

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
RLO = "\u202e"
HOSTILE_JOB = f'<img src=x onerror=alert(1)>{RLO}exe.txt'
HUGE = "n" * 10_240


def summary_row(repo: str, **over: Any) -> dict[str, Any]:
    base = {"downstream_repo": repo, "level": "L4", "successes": 18, "failures": 2, "timed_out": 0,
            "cancelled": 1, "running": 1, "no_report": 0, "flaky": 1, "total": 22, "avg_duration_s": 2460.0,
            "last_run": datetime(2026, 11, 20, 13, 0), "trunk_successes": 3, "trunk_failures": 1,
            "trunk_timed_out": 0, "trunk_cancelled": 0, "trunk_running": 0, "trunk_no_report": 0,
            "trunk_flaky": 0, "pr_series_days": [date(2026, 11, 18), date(2026, 11, 20)],
            "pr_series_successes": [8, 10], "pr_series_judged": [9, 11]}
    base.update(over)
    return base


def record_row(**over: Any) -> dict[str, Any]:
    base = {"downstream_repo": "acme/torch-acme", "downstream_level": "L4", "event_type": "pull_request",
            "upstream_repo": "pytorch/pytorch", "pr_number": 170001, "head_sha": "3f2a9c1d" + "0" * 32,
            "ref": "", "workflow_name": "acme-ci", "job_name": "test-linux", "check_run_id": "1", "run_id": "9",
            "run_attempt": 1, "workflow_url": "https://github.com/acme/torch-acme/actions/runs/9",
            "artifact_url": "", "status": "completed", "conclusion": "success",
            "started_at": datetime(2026, 11, 20, 10, 3), "completed_at": datetime(2026, 11, 20, 10, 44),
            "queue_time_s": 42.0, "execution_time_s": 2499.6, "tests_passed": 1203, "tests_failed": 0,
            "tests_skipped": 17, "tests_total": 1220, "first_received_at": datetime(2026, 11, 20, 10, 3),
            "received_at": datetime(2026, 11, 20, 10, 44), "current_head_sha": "3f2a9c1d" + "0" * 32,
            "prs_total": 3, "trunk_total": 1}
    base.update(over)
    return base


def backend_rows() -> list[dict[str, Any]]:
    old = "1111111" + "0" * 33
    return [
        record_row(),
        record_row(job_name="test-distributed", check_run_id="2", conclusion="failure", tests_failed=2,
                   artifact_url="https://example.com/artifacts/2"),
        record_row(job_name="test-distributed", check_run_id="3", run_attempt=2, conclusion="success"),
        record_row(job_name="matrix", check_run_id="4"),
        record_row(job_name="matrix", check_run_id="5", conclusion="timed_out", workflow_url="javascript:alert(1)"),
        record_row(job_name="stuck", check_run_id="6", status="in_progress", conclusion="", completed_at=None,
                   started_at=datetime(2026, 11, 20, 1, 0), execution_time_s=None),
        record_row(job_name="new", check_run_id="7", status="in_progress", conclusion="", completed_at=None,
                   started_at=datetime(2026, 11, 20, 13, 0), execution_time_s=None),
        record_row(head_sha=old, check_run_id="8", conclusion="failure", received_at=datetime(2026, 11, 19, 9)),
        record_row(pr_number=170002, check_run_id="9", conclusion="cancelled",
                   head_sha="2" * 40, current_head_sha="2" * 40),
        record_row(pr_number=0, event_type="push", head_sha="c" * 40, current_head_sha="c" * 40,
                   check_run_id="10", conclusion="failure", job_name="test-distributed"),
    ]


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with UPDATE_GOLDEN=1 if intended"


class Collector(HTMLParser):
    """Every href and every element, to check links and structure without substring guessing."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        self.hrefs.extend(value or "" for name, value in attrs if name == "href")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Collector:
    collector = Collector()
    collector.feed(html)
    return collector


def summary_page(rows: list[dict[str, Any]], site: Site | None = None) -> str:
    return render_summary(build_summary(rows, days=7, now=NOW, site=site or Site()))


def backend_page(rows: list[dict[str, Any]], site: Site | None = None, repo: str = "acme/torch-acme") -> str:
    return render_backend(build_backend(rows, repo=repo, days=7, now=NOW, site=site or Site(), silence_hours=6))


def test_golden_summary() -> None:
    rows = [summary_row("acme/torch-acme", successes=5, failures=5),
            summary_row("contoso/pytorch-npu", level="L3"),
            summary_row("riscv-lab/pytorch-ci", level="L2", successes=0, failures=0, timed_out=0,
                        cancelled=1, pr_series_days=[], pr_series_successes=[], pr_series_judged=[],
                        trunk_successes=0, trunk_failures=0, last_run=None, avg_duration_s=None)]
    check_golden("summary.html", summary_page(rows))


def test_golden_summary_empty_and_static() -> None:
    check_golden("summary_empty.html", summary_page([]))
    check_golden("summary_static.html", summary_page([summary_row("acme/torch-acme")], Site(static=True, depth=1)))


def test_golden_backend() -> None:
    check_golden("backend.html", backend_page(backend_rows()))
    check_golden("backend_empty.html", backend_page([], repo="nobody/nothing"))


def test_chip_colours_are_fixed() -> None:
    verdict_colour: dict[str, set[str]] = {}
    for chip in _chips(backend_page(backend_rows())):
        verdict_colour.setdefault(chip["data-verdict"], set()).add(chip["class"].split()[1])
    assert verdict_colour == {"success": {"chip-green"}, "failure": {"chip-red"}, "timed_out": {"chip-amber"},
                              "cancelled": {"chip-amber"}, "running": {"chip-blue"}, "no_report": {"chip-grey"}}


def _chips(html: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []

    class Chips(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            data = {k: v or "" for k, v in attrs}
            if "data-verdict" in data:
                found.append(data)

    Chips().feed(html)
    return found


@pytest.mark.parametrize(("rate", "band"), [(0.95, "green"), (0.949, "amber"), (0.8, "amber"), (0.79, "red"),
                                            (None, "grey")])
def test_pass_rate_chip_bands(rate: float | None, band: str) -> None:
    judged = 1000
    ok = 0 if rate is None else round(rate * judged)
    row = summary_row("a/b", successes=ok, failures=0 if rate is None else judged - ok, timed_out=0,
                      trunk_successes=0, trunk_failures=0)
    html = summary_page([row])
    assert f'data-band="{band}"' in html.split('<td data-rate="pr">')[1].split("</td>")[0]


def test_hostile_strings_are_inert() -> None:
    rows = [record_row(job_name=HOSTILE_JOB, workflow_name=HUGE, check_run_id="h1",
                       workflow_url='https://x.example/"onmouseover="alert(1)',
                       artifact_url="http://insecure.example/a"),
            record_row(job_name="j2", check_run_id="h2", workflow_url="javascript:alert(document.cookie)",
                       artifact_url="data:text/html,<script>alert(1)</script>"),
            record_row(job_name="j3", check_run_id="h3", workflow_url=" https://leading.space/"),
            record_row(job_name="j4", check_run_id="h4", workflow_url="https://ok.example/run/4")]
    html = backend_page(rows)
    doc = parse(html)
    assert "script" not in doc.tags and "img" not in doc.tags
    assert RLO not in html
    for href in doc.hrefs:
        assert href.startswith(("https://", "/oot")), href
    assert "https://ok.example/run/4" in doc.hrefs
    assert not any(name.startswith("on") for name, _ in doc.attrs)
    assert "javascript:" not in "".join(doc.hrefs) and "http://insecure" not in "".join(doc.hrefs)
    # the 10 kB workflow name: cut on screen (the column header), kept whole only in the tooltip
    assert not any(HUGE in text for text in doc.text)
    assert len(html) < 80_000


def test_hostile_backend_name_in_summary() -> None:
    name = f"<script>alert(1)</script>{RLO}/x"
    html = summary_page([summary_row(name), summary_row("ok/" + "y" * 90)])
    doc = parse(html)
    assert "script" not in doc.tags and RLO not in html
    assert doc.hrefs.count("/oot/ok/" + "y" * 90 + "?days=7") == 1
    assert not any("alert" in href for href in doc.hrefs)  # an impossible repo name gets no link


def test_filters_directly() -> None:
    assert str(bidi("<b>")) == "<bdi>&lt;b&gt;</bdi>"
    assert str(link("javascript:alert(1)", "x")) == "<bdi>x</bdi>"
    assert str(link("https://a.example/?q=1&r=2", "x")).startswith('<a href="https://a.example/?q=1&amp;r=2"')
    assert not is_https("https:///nohost") and not is_https("https://a.example/\nx") and is_https("https://a.b")
    assert not is_https("https://[x]/") and str(link("https://[x]/", "x")) == "<bdi>x</bdi>"  # no ValueError
    svg = str(sparkline([1.0, None, 0.5, 0.0]))
    assert svg.startswith("<svg") and svg.count("<polyline") == 2 and "<script" not in svg
    assert str(sparkline([None, None])) == ""


def test_static_links_are_relative() -> None:
    html = backend_page(backend_rows(), Site(static=True, depth=3))
    hrefs = parse(html).hrefs
    internal = [h for h in hrefs if not h.startswith("https://")]
    assert internal and all(not h.startswith("/") for h in internal)
    assert "../../../index.html" in internal and "../../../1d/acme/torch-acme/index.html" in internal
    # PR pages are not published: PR numbers link to GitHub instead
    assert "https://github.com/pytorch/pytorch/pull/170001" in hrefs


def test_times_are_iso_in_time_elements() -> None:
    html = backend_page(backend_rows())
    assert '<time datetime="2026-11-20T10:44:00Z">2026-11-20 10:44 UTC</time>' in html
    assert '<time datetime="2026-11-20T14:00:00Z">' in html  # the footer's "data as of"


def test_summary_series_spans_the_range() -> None:
    page = build_summary([summary_row("a/b")], days=7, now=NOW, site=Site())
    series = page.backends[0].series
    assert len(series) == 8 and series[-1] == pytest.approx(10 / 11) and series[-3] == pytest.approx(8 / 9)
    assert page.backends[0].series_days[0] == (NOW - timedelta(days=7)).date()


def test_renderer_modules_import_each_other_without_cycles() -> None:
    """The page frame lives in ``renderers.frame``: no renderer module imports one that imports it back."""
    import ast

    folder = Path(__file__).resolve().parent.parent / "renderers"
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("renderers."):
                imported.add(node.module.removeprefix("renderers."))
        graph[path.stem] = imported

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()) - seen:
            if nxt == target or reaches(nxt, target, seen | {nxt}):
                return True
        return False

    assert graph["frame"] == set() and "html" in graph["backend"]
    assert not [name for name in graph if reaches(name, name, set())]


def daily_row(day: date, kind: str = "pr", backend: str = "acme/torch-acme", **over: Any) -> dict[str, Any]:
    base = {"day": day, "backend": backend, "level": "L4", "kind": kind, "passed": 9, "failed": 1,
            "timed_out": 0, "cancelled": 2, "total": 12}
    base.update(over)
    return base


def trends_page(rows: list[dict[str, Any]], days: int = 7, site: Site | None = None) -> str:
    site = site or Site()
    return render_trends(TrendsPage(days=days, generated_at=NOW, site=site,
                                    backends=build_trends(rows, days=days, now=NOW, site=site)))


def test_trend_chart_gaps_axes_and_numbers() -> None:
    """A day without data splits the line (a gap, never a zero); both axes are labelled; every point has a
    <title> with its numbers, and the same numbers are in the table one click away (<details>)."""
    day = NOW.date()
    rows = [daily_row(day - timedelta(days=6)), daily_row(day - timedelta(days=5), passed=5, failed=5),
            daily_row(day - timedelta(days=2), passed=1, failed=0, timed_out=1, total=2), daily_row(day),
            daily_row(day - timedelta(days=1), kind="trunk", passed=0, failed=3, total=3),
            daily_row(day - timedelta(days=3), passed=0, failed=0, timed_out=0, cancelled=4, total=4),
            daily_row(day, backend="zeta/l2", level="L2"), daily_row(day, backend="beta/l3", level="L3")]
    html = trends_page(rows)
    block = html.split('data-trend="acme/torch-acme"')[1].split('data-trend="')[0]
    svg = block.split("<svg")[1].split("</svg>")[0]
    # PR: days -6,-5 | gap (-4, and -3 has only cancelled jobs: nothing judged) | -2 | gap (-1) | 0
    assert svg.count('<polyline class="pr"') == 1 and svg.count('<circle class="pr"') == 4
    assert svg.count('<circle class="trunk"') == 1 and '<polyline class="trunk"' not in svg
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert {"0 %", "50 %", "100 %", "pass rate", "day (UTC)", "Nov 13", "Nov 20"} <= set(texts)
    assert f"<title>{(day - timedelta(days=5)).isoformat()} · PR: 50.0 % (5 passed, 5 failed, 0 timed out of " \
           "12 jobs)</title>" in svg
    table = block.split("<details")[1].split("</details>")[0]
    days_in_table = re.findall(r'<tr data-day="([0-9-]+)">', table)
    assert days_in_table == [(day - timedelta(days=n)).isoformat() for n in (0, 1, 2, 3, 5, 6)]  # newest first
    assert "50.0 %" in table and "5 / 5 / 0 / 12" in table
    # L4 first, then L3, then L2; each block anchored for links from its backend page
    assert [m for m in re.findall(r'data-trend="([^"]+)"', html)] == ["acme/torch-acme", "beta/l3", "zeta/l2"]
    assert 'id="b-acme--torch-acme"' in html and "<script" not in html
    assert '<meta http-equiv="refresh" content="60">' in html
    static = trends_page(rows, site=Site(static=True, depth=2))
    assert 'http-equiv="refresh"' not in static and 'href="../../7d/acme/torch-acme/index.html"' in static
    assert 'href="../../trends/90d/index.html"' in static  # the range switcher: 7, 30, 90 days


def test_trends_hostile_backend_name_is_inert() -> None:
    name = f"<img src=x onerror=alert(1)>{RLO}/x"
    html = trends_page([daily_row(NOW.date(), backend=name)])
    doc = parse(html)
    assert "img" not in doc.tags and RLO not in html and "script" not in doc.tags
    assert not any("onerror" in href for href in doc.hrefs) and 'id="b-' not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_summary_sections_by_level_worst_first() -> None:
    rows = [summary_row("b/l2-good", level="L2"), summary_row("a/l4-good"),
            summary_row("c/l4-bad", successes=3, failures=3), summary_row("d/l3", level="L3"),
            summary_row("e/odd", level="L9"), summary_row("f/l4-unrated", successes=3, failures=0, timed_out=0,
                                                         trunk_successes=3, trunk_failures=0)]
    levels = [{"downstream_repo": "z/onboarding", "level": "L1"}, {"downstream_repo": "y/onboarding", "level": "L1"}]
    page = build_summary(rows, days=7, now=NOW, site=Site(), levels=levels)
    assert [(s.level, [b.repo for b in s.backends]) for s in page.sections] == [
        ("L4", ["c/l4-bad", "a/l4-good", "f/l4-unrated"]), ("L3", ["d/l3"]), ("L2", ["b/l2-good"]),
        ("other", ["e/odd"])]
    assert page.onboarding == ("y/onboarding", "z/onboarding")
    assert page.level_counts == (("L4", 3), ("L3", 1), ("L2", 1), ("L1", 2), ("L9", 1))
    html = render_summary(page)
    l1 = html.split('<ul class="names" data-level="L1">')[1].split("</ul>")[0]
    assert parse(l1).tags == ["li", "bdi", "li", "bdi"] and not parse(l1).hrefs  # by name only, no link


def shard_rows() -> list[dict[str, Any]]:
    rows = [record_row(job_name=f"test-{n}", check_run_id=str(100 + n),
                       conclusion="failure" if n == 3 else "success") for n in (1, 2, 3, 4, 10)]
    rows += [record_row(job_name=f"build-{n}", check_run_id=str(200 + n)) for n in (1, 2)]  # two: no group
    rows += [record_row(job_name="lint", check_run_id="abc", workflow_url="https://github.com/a/b/actions/runs/9?x=1")]
    return rows


def test_backend_shards_collapse_into_their_worst_result() -> None:
    page = build_backend(shard_rows(), repo="acme/torch-acme", days=7, now=NOW, site=Site(), silence_hours=6)
    labels = [column.label for column in page.prs.columns]
    assert labels == ["build-1", "build-2", "lint", "test ×5"]
    group = page.prs.rows[0].cells[3]
    assert isinstance(group, ShardGroup) and [name for name, _ in group.shards] == [
        "test-1", "test-2", "test-3", "test-4", "test-10"]  # by number, not by text
    assert group.verdict is Verdict.FAILURE and group.failed == 1
    assert page.prs.counts.failure == 1 and page.prs.counts.success == 7  # shards still count one by one
    html = render_backend(page)
    cell = html.split('<details class="shards">')[1].split("</details>")[0]
    summary = cell.split("</summary>")[0]
    assert 'data-verdict="failure"' in summary and "1 of 5 failed" in summary and "<a " not in summary
    assert cell.count("<li>") == 5 and cell.count('data-verdict="success"') == 4
    assert 'data-shards="5"' in html and "<script" not in html


def test_backend_cells_link_the_jobs_log_and_the_run() -> None:
    html = render_backend(build_backend(shard_rows(), repo="acme/torch-acme", days=7, now=NOW, site=Site(),
                                        silence_hours=6))
    hrefs = parse(html).hrefs
    run = "https://github.com/acme/torch-acme/actions/runs/9"
    assert f"{run}/job/101" in hrefs and f"{run}/job/201" in hrefs  # each chip: its job's own log
    assert run in hrefs  # and the run beside it
    # a check-run id that is no number, or a run URL with a query: no made-up log link, the run only
    assert not any("/job/abc" in href or "?x=1/job" in href for href in hrefs)
    assert str(job_log_url("javascript:alert(1)", "5")) == "None" and job_log_url(run + "/", "7") == run + "/job/7"


def test_backend_rows_show_title_author_and_the_commit() -> None:
    kinds = [("nightly", "c" * 40, datetime(2026, 11, 20, 10), 1, "pytorch/pytorch"),
             ("workflow_dispatch", "d" * 40, datetime(2026, 11, 19), 2, "pytorch/pytorch"),
             ("Bad Kind!", "e" * 40, datetime(2026, 11, 18), 1, "pytorch/pytorch")]  # every row carries them
    rows = [record_row(pr_title='Fix <b>it</b> @everyone ![x](https://evil.example/x.png)',
                       pr_author="octo-cat", trunk_kinds=kinds),
            record_row(pr_number=0, event_type="nightly", head_sha="c" * 40, current_head_sha="c" * 40,
                       check_run_id="10", trunk_kinds=kinds)]
    html = render_backend(build_backend(rows, repo="acme/torch-acme", days=7, now=NOW, site=Site(),
                                        silence_hours=6))
    doc = parse(html)
    assert "b" not in doc.tags and "img" not in doc.tags
    assert "Fix &lt;b&gt;it&lt;/b&gt; @everyone" in html and "by <bdi>octo-cat</bdi>" in html
    assert not any("evil.example" in href or "octo-cat" in href for href in doc.hrefs)  # text, never a link
    assert f"https://github.com/pytorch/pytorch/commit/{'3f2a9c1d' + '0' * 32}" in doc.hrefs
    assert f"https://github.com/pytorch/pytorch/commit/{'c' * 40}" in doc.hrefs
    # the trunk kinds: the three usual ones and any other reported, each with its newest commit linked
    tabs = re.findall(r'data-event="([^"]+)"', html)
    assert tabs == ["push", "nightly", "periodic", "Bad Kind!", "workflow_dispatch"]
    assert "/oot/acme/torch-acme?days=7&event=workflow_dispatch" in doc.hrefs
    assert not any("Bad" in href for href in doc.hrefs)  # a kind that cannot be a parameter gets no view
    assert f"https://github.com/pytorch/pytorch/commit/{'d' * 40}" in doc.hrefs


def test_backend_cards_paging_badge_and_trunk_view() -> None:
    daily = [daily_row(NOW.date(), passed=8, failed=1, timed_out=1, cancelled=2, total=13),
             daily_row(NOW.date() - timedelta(days=1), passed=2, failed=0, timed_out=0, cancelled=0, total=2),
             daily_row(NOW.date(), kind="trunk", passed=0, failed=5, total=5)]
    rows = [record_row(prs_total=120)]
    view = BackendView(page=2, daily=tuple(daily), stats={"prs": 31, "avg_queue_s": 95.0,
                                                          "avg_execution_s": 3000.0},
                       trend_days=7, public_url="https://hud.example/")
    page = build_backend(rows, repo="acme/torch-acme", days=7, now=NOW, site=Site(), silence_hours=6, view=view)
    assert page.cards == Cards(passed=10, failed=1, timed_out=1, cancelled=2, jobs=15, prs=31, avg_queue_s=95.0,
                               avg_execution_s=3000.0)
    assert page.cards.rate == pytest.approx(10 / 12) and page.cards.timeout_rate == pytest.approx(1 / 14)
    html = render_backend(page)
    cards = {part.split('"')[0]: " ".join(" ".join(parse(part.split(">", 1)[1].split("</section>")[0]).text)
                                          .split()) for part in html.split('data-card="')[1:]}
    assert cards == {"pass-rate": "PR pass rate 83.3 % 10 passed of 12 judged jobs",
                     "prs": "Pull requests 31 distinct PRs tested",
                     "failures": "Failures and timeouts 1 + 1 failed + timed out, of 15 jobs",
                     "timeout-rate": "Timeout rate 7.1 % of 14 finished jobs",
                     "queue": "Average queue time 1m dispatch to start",
                     "execution": "Average execution time 50m start to finish PR jobs in the last 7 days; "
                                  "times over every execution (each attempt and leg) that reported one."}
    hrefs = parse(html).hrefs
    assert "/oot/acme/torch-acme?days=7" in hrefs and "/oot/acme/torch-acme?days=7&page=3" in hrefs  # prev / next
    assert "page 2 of 3" in html and 'rel="prev"' in html and 'rel="next"' in html
    snippet = "[![OOT PR pass rate](https://hud.example/oot/badge/acme/torch-acme.svg)](https://hud.example/oot/acme/torch-acme)"
    assert f'<pre class="snippet"><code>{snippet}</code></pre>' in html.replace("&amp;", "&")
    assert not any("badge" in href for href in hrefs)  # text to copy; no anchor offers it
    assert '<svg class="trend"' in html and "/oot/trends?days=90#b-acme--torch-acme" in hrefs
    # the static site publishes two PR pages: the second says where the others are
    static = render_backend(build_backend(rows, repo="acme/torch-acme", days=7, now=NOW, silence_hours=6,
                                          site=Site(static=True, depth=3, pages=2), view=view))
    assert "older PRs are on the live site" in static and 'rel="next"' not in static
    assert "index.html" in " ".join(parse(static).hrefs)
    # a trunk kind's view: that kind's commits only, no cards, PRs or trends
    trunk = build_backend([record_row(pr_number=0, event_type="nightly", head_sha="c" * 40,
                                      current_head_sha="c" * 40)],
                          repo="acme/torch-acme", days=7, now=NOW, site=Site(), silence_hours=6,
                          view=BackendView(event="nightly"))
    html = render_backend(trunk)
    assert trunk.cards is None and 'id="prs"' not in html and 'id="cards"' not in html
    assert "Trunk: <bdi>nightly</bdi>" in html and 'class="tab current"' in html
    assert "/oot/acme/torch-acme?days=30&event=nightly" in parse(html).hrefs  # ranges keep the view


def test_badge_svg() -> None:
    for rate, colour, text in ((0.975, "#1a7f37", "97.5%"), (0.8, "#9a6700", "80.0%"), (0.5, "#cf222e", "50.0%"),
                               (None, "#59636e", "no data")):
        svg = render_badge(rate)
        assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and f'fill="{colour}"' in svg
        assert f">{text}</text>" in svg and "<script" not in svg and "href" not in svg
    assert badge_rate([daily_row(NOW.date(), passed=3, failed=1), daily_row(NOW.date(), kind="trunk", failed=9)]) \
        == 0.75
