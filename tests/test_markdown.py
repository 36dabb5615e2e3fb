"""PR comment and check-run Markdown: goldens, headline and conclusion policy, escaping, budgets.

Safety properties are checked on the HTML that GitHub's own parser (cmark-gfm, via cmarkgfm) makes of the
comment: which tags and links exist, how many cells each table row has, that ``<details>`` pairs balance.
Goldens: ``UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_markdown.py`` rewrites ``tests/golden/``.
"""

from __future__ import annotations

import itertools
import os
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options

from renderers.markdown import (
    CHECK_RUN_NAME,
    CHECK_SUMMARY_BUDGET_BYTES,
    COMMENT_BUDGET_CHARS,
    COMMENT_MARKER,
    check_status,
    render_check_run,
    render_pr_comment,
    short_fallback_comment,
)
from renderers.md_escape import md_text, safe_url
from renderers.pr_view import PrView, build_pr_view, gate_decision

GOLDEN = Path(__file__).parent / "golden"
PUBLIC = "https://hud.example"
NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
SHA = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"
OLD_SHA = "0f0e0d0c0b0a09080706050403020100ffeeddcc"
PR_PAGE = f"{PUBLIC}/oot/pr/pytorch/pytorch/4242"
_seq = itertools.count()


def row(backend: str = "acme/torch-acme", level: str = "L4", workflow: str = "ci", job: str = "test", *,
        attempt: int = 1, status: str = "completed", conclusion: str = "success", sha: str = SHA,
        head: str = SHA, check_run: str | None = None, trunk: bool = False, url: str | None = None,
        artifact: str = "", tests: tuple[int, int, int] | None = (100, 0, 2), duration: float = 600.0,
        received: datetime | None = None) -> dict[str, Any]:
    """One ``oot_pr_results`` row (the query's columns), for pure renderer tests."""
    n = next(_seq)
    received = received or T0 + timedelta(seconds=n)
    completed = status == "completed"
    passed, failed, skipped = tests if (tests and completed) else (None, None, None)
    return {
        "key": f"{backend}/{n}", "downstream_repo": backend, "downstream_level": level,
        "event_type": "pull_request", "delivery_id": f"d{n}", "upstream_repo": "pytorch/pytorch",
        "pr_number": 4242, "head_sha": sha, "workflow_name": workflow, "job_name": job,
        "check_run_id": check_run or f"cr{n}", "run_id": "1", "run_attempt": attempt,
        "workflow_url": url if url is not None else f"https://github.com/{backend}/actions/runs/{100 + attempt}",
        "artifact_url": artifact, "status": status, "conclusion": conclusion if completed else "",
        "started_at": received - timedelta(seconds=duration), "completed_at": received if completed else None,
        "queue_time_s": 5.0, "execution_time_s": duration if completed else None,
        "tests_passed": passed, "tests_failed": failed, "tests_skipped": skipped, "tests_total": None,
        "first_received_at": received, "received_at": received,
        "current_head_sha": head, "head_source": "webhook", "also_failing_on_trunk": int(trunk),
    }


def view_of(rows: list[dict[str, Any]], *, now: datetime = NOW) -> PrView:
    return build_pr_view(rows, now=now, silence_hours=6, public_url=PUBLIC + "/", upstream_repo="pytorch/pytorch",
                         pr_number=4242)


def full_scenario() -> list[dict[str, Any]]:
    """Every kind of result the comment distinguishes."""
    return [
        row(job="build", artifact="https://github.com/acme/torch-acme/actions/runs/101/artifacts/9"),
        row(job="test", conclusion="failure", tests=(90, 10, 0)),
        row(job="test", attempt=2, conclusion="failure", trunk=True, tests=(91, 9, 0)),
        row(job="lint", conclusion="failure"),
        row(job="lint", attempt=2),
        row(job="dist", status="in_progress", received=NOW - timedelta(hours=1)),
        row("contoso/pytorch-npu", "L3", "npu-ci", "test", check_run="leg-a"),
        row("contoso/pytorch-npu", "L3", "npu-ci", "test", conclusion="timed_out", check_run="leg-b", tests=None),
        row("contoso/pytorch-npu", "L3", "npu-ci", "build"),
        row("riscv-lab/pytorch-ci", "L2", "riscv", "build", conclusion="cancelled", tests=None),
        row("riscv-lab/pytorch-ci", "L2", "riscv", "test", conclusion="failure"),
        row("onboard/new-backend", "L1", "x", "y", conclusion="failure"),
        row(job="test", sha=OLD_SHA, received=T0 - timedelta(hours=2)),
        row("contoso/pytorch-npu", "L3", "npu-ci", "test", sha=OLD_SHA, conclusion="failure",
            received=T0 - timedelta(hours=2)),
    ]


# ---- GitHub's parser and a small DOM summary ------------------------------------------------------------


def gfm(markdown: str) -> str:
    """HTML as cmark-gfm makes it; raw HTML passes (UNSAFE), the worst case before GitHub's sanitiser."""
    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


class Dom(HTMLParser):
    """Tags, links, text, table shapes and the ``<details>`` nesting of rendered HTML."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []
        self.tables: list[list[int]] = []  # cells per row, per table
        self.details_depth = 0
        self.max_details_depth = 0
        self.details_closed = 0
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append(0)
        elif tag in ("td", "th"):
            self.tables[-1][-1] += 1
        elif tag == "details":
            self.details_depth += 1
            self.max_details_depth = max(self.max_details_depth, self.details_depth)

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.details_depth -= 1
            self.details_closed += 1
            assert self.details_depth >= 0, "a </details> closed more than was opened"

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


ALLOWED_TAGS = {"h2", "h3", "p", "table", "thead", "tbody", "tr", "th", "td", "a", "details", "summary", "ul",
                "li", "strong", "code", "em"}


def assert_safe_structure(markdown: str, *, main_rows: int | None = None) -> Dom:
    dom = Dom(gfm(markdown))
    assert set(dom.tags) <= ALLOWED_TAGS, set(dom.tags) - ALLOWED_TAGS
    assert dom.details_depth == 0 and dom.max_details_depth <= 1
    assert dom.details_closed == dom.tags.count("details")
    for table in dom.tables:
        assert all(cells == table[0] for cells in table), table
    if main_rows is not None:
        assert len(dom.tables[0]) == main_rows + 1  # + the header row
    for href in dom.hrefs:
        assert href.startswith((PUBLIC + "/oot/", "https://github.com/", "https://ok.example/")), href
    text = dom.all_text
    assert not re.search(r"@[A-Za-z0-9]", text), "live mention"
    assert not re.search(r"(?i)www\.|https?://|javascript:(?!\u200b)|[a-z]@[a-z]", text), "autolink candidate"
    assert not re.search(r"(?<![A-Za-z0-9])#[0-9A-Za-z]", text), "issue reference"
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", text), "bidi override"
    return dom


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden (UPDATE_GOLDEN=1 rewrites)"


# ---- goldens and structure -----------------------------------------------------------------------------


def test_full_comment_golden_and_structure() -> None:
    view = view_of(full_scenario())
    comment = render_pr_comment(view)
    assert comment is not None
    assert_golden("pr_comment_full.md", comment)
    assert comment.splitlines()[0] == COMMENT_MARKER
    assert comment.splitlines()[1] == ("## ❌ Out-of-Tree Backends: 1 blocking failure · 1 timed out · 3 passed · "
                                       "1 running")
    assert "As of commit `a1b2c3d` (results for older commits are hidden below)" in comment
    dom = assert_safe_structure(comment, main_rows=2)
    # Main table, L2 table; Failures (open) + flaky + L2 + superseded collapsible sections.
    assert len(dom.tables) == 2 and dom.tags.count("details") == 4
    assert "<details open><summary>Failures (2)</summary>" in comment
    failures = comment.split("<summary>Failures (2)</summary>")[1].split("</details>")[0]
    assert failures.index("torch-acme") < failures.index("pytorch-npu")  # L4 first
    assert "failed at attempt 2 · also failing on trunk" in failures
    assert "timed out at attempt 1 · 1 of 2 legs failed" in failures
    assert "onboard" not in comment  # L1 is never shown
    assert f"[matrix]({PUBLIC}/oot/acme/torch-acme)" in comment
    assert f"[full results page]({PR_PAGE})" in comment


def test_check_run_golden() -> None:
    check = render_check_run(view_of(full_scenario()))
    assert (check.name, check.head_sha, check.status, check.conclusion) == (CHECK_RUN_NAME, SHA, "completed",
                                                                             "failure")
    assert check.title == "❌ 1 blocking failure · 1 timed out · 3 passed · 1 running"
    assert check.details_url == PR_PAGE and check.external_id == "pytorch/pytorch#4242"
    assert COMMENT_MARKER not in check.summary
    assert_golden("check_summary_full.md", check.summary)
    assert_golden("check_text_full.md", check.text)
    dom = assert_safe_structure(check.text)
    assert len(dom.tables[0]) == 1 + 8  # header + every current L4/L3/L2 job, L1 excluded
    assert all(cells == 10 for cells in dom.tables[0])


def test_rendering_is_deterministic_and_has_no_clock() -> None:
    rows = full_scenario()
    first = render_pr_comment(view_of(rows, now=NOW))
    assert first == render_pr_comment(view_of(rows, now=NOW + timedelta(minutes=30)))
    assert "2026-11-20" not in (first or "")


# ---- policy: headline icon and check-run conclusion ----------------------------------------------------


@pytest.mark.parametrize(("rows", "icon", "status", "conclusion"), [
    pytest.param([row(conclusion="failure"), row(job="b", status="in_progress")], "❌", "completed", "failure",
                 id="L4 failure completes at once even while L4 runs"),
    pytest.param([row(), row("o/l3", "L3", conclusion="failure"), row(job="b", status="in_progress")], "⚠️",
                 "in_progress", None, id="L3 failure beats running; L4 running keeps the check open"),
    pytest.param([row(), row("o/l3", "L3", status="in_progress")], "⏳", "completed", "success",
                 id="L3 running does not hold the check"),
    pytest.param([row(), row("o/l3", "L3")], "✅", "completed", "success", id="all passed"),
    pytest.param([row(conclusion="cancelled")], "⚠️", "completed", "neutral", id="L4 cancelled is neutral"),
    pytest.param([row("o/l3", "L3")], "✅", "completed", "neutral", id="no L4 job is neutral"),
    pytest.param([row("o/l2", "L2", conclusion="failure")], "⚠️", "completed", "neutral",
                 id="only L2: headline from L2, never blocking"),
    pytest.param([row(status="in_progress", received=NOW - timedelta(hours=7))], "⚠️", "in_progress", None,
                 id="silent L4 job is no report, and still holds the gate"),
    pytest.param([row(status="in_progress", received=NOW - timedelta(hours=25))], "⚠️", "completed", "neutral",
                 id="silent past the max pending age: the gate lets go"),
    pytest.param([row(), row(job="b", conclusion="timed_out")], "⚠️", "completed", "success",
                 id="L4 timeout is infrastructure: not in the conclusion"),
    pytest.param([row(conclusion="failure"), row(attempt=2)], "✅", "completed", "success",
                 id="final attempt wins (flaky)"),
])
def test_headline_and_conclusion(rows: list[dict[str, Any]], icon: str, status: str,
                                 conclusion: str | None) -> None:
    view = view_of(rows)
    comment = render_pr_comment(view)
    assert comment is not None and comment.splitlines()[1].startswith(f"## {icon} Out-of-Tree Backends: ")
    assert check_status(view) == (status, conclusion)
    check = render_check_run(view)
    assert (check.status, check.conclusion) == (status, conclusion)


@pytest.mark.parametrize(("conclusions", "headline", "cell", "row_icon"), [
    (("failure", "timed_out", "success"), "1 blocking failure · 1 timed out · 1 passed", "1 ✗ · 1 timed out · 1 ✓",
     "❌"),
    (("timed_out", "timed_out"), "2 timed out", "2 timed out", "⚠️"),
    (("failure", "failure"), "2 blocking failures", "2 ✗", "❌"),
    (("timed_out", "cancelled", "success"), "1 timed out · 1 passed · 1 cancelled", "1 timed out · 1 ✓ · 1 cancelled",
     "⚠️"),
])
def test_timeouts_are_counted_apart_from_failures_as_the_gate_counts_them(
        conclusions: tuple[str, ...], headline: str, cell: str, row_icon: str) -> None:
    """The merge gate treats a timeout as infrastructure (not blocking): the headline and the Jobs cell say
    "timed out", never fold it into the failures."""
    view = view_of([row(job=f"j{n}", conclusion=c) for n, c in enumerate(conclusions)])
    comment = render_pr_comment(view) or ""
    assert comment.splitlines()[1].split(": ", 1)[1] == headline
    [backend_row] = [line for line in comment.splitlines() if line.startswith("| ") and "acme/torch-acme" in line]
    cells = [c.strip() for c in backend_row.strip("|").split("|")]
    assert (cells[0], cells[3]) == (row_icon, cell)
    gate = gate_decision(view)
    assert len(gate.failed) == conclusions.count("failure")
    assert len(gate.infrastructure) == conclusions.count("timed_out") + conclusions.count("cancelled")


def test_superseded_results_are_never_counted() -> None:
    rows = [row(sha=OLD_SHA, conclusion="failure", received=T0 - timedelta(hours=1)), row(job="other")]
    view = view_of(rows)
    comment = render_pr_comment(view) or ""
    assert comment.splitlines()[1] == "## ✅ Out-of-Tree Backends: 1 passed"
    assert check_status(view) == ("completed", "success")
    superseded = comment.split("Superseded results for older commits (1)</summary>")[1]
    assert "`0f0e0d0` · acme/torch-acme (L4): 1 ✗" in superseded


def test_new_head_without_results_waits() -> None:
    view = view_of([row(sha=OLD_SHA, head=SHA)])
    comment = render_pr_comment(view) or ""
    assert comment.splitlines()[1] == "## ⏳ Out-of-Tree Backends: waiting for results for commit a1b2c3d"
    assert render_check_run(view).text == "No results for the current commit yet.\n"


def test_no_displayable_results_posts_nothing() -> None:
    assert render_pr_comment(view_of([])) is None
    assert render_pr_comment(view_of([row("onboard/x", "L1"), row("odd/level", "")])) is None


def test_short_fallback_comment() -> None:
    body = short_fallback_comment(view_of(full_scenario()))
    assert body.splitlines()[0] == COMMENT_MARKER
    assert f"[full results page]({PR_PAGE})" in body and len(body) < 1000
    assert_safe_structure(body)


# ---- escaping ------------------------------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "</details><img src=x onerror=alert(1)>",
    "a | b | c",
    "@octocat and @pytorch/team please look",
    "[x](javascript:alert(1))",
    "![img](https://evil.example/p.png)",
    "line1\nline2\r\n| x | y |",
    "\u202eevil\u202c \u2066iso\u2069",
    "x" * 10_000,
    "**bold** _it_ `code` ~~s~~ #123 GH-1 :tada: www.evil.example https://evil.example/a foo@bar.com",
    "\\| escaped pipe \\",
    "$x^2$ {{ jinja }} &lt;b&gt; &amp; &#64;octocat",
    "<!-- oot-hud:pr-comment -->",
    "\x00\x07\x1b[31mansi\x7f\x9b",
]


def hostile_rows() -> list[dict[str, Any]]:
    rows = []
    for i, text in enumerate(HOSTILE):
        rows.append(row("acme/torch-acme", "L4", text, f"{text}-{i}", conclusion="failure", trunk=True,
                        url="javascript:alert(1)" if i % 3 == 0 else "https://ok.example/run?q=<x>|(y) z]",
                        artifact="data:text/html,<b>x</b>" if i % 2 else "http://insecure.example/a"))
        rows.append(row(f"evil/{text}", "L3", text, text, conclusion="failure"))
        rows.append(row(f"evil2/{text}", "L2", text, text, conclusion="failure"))
    rows.append(row(f"old/{HOSTILE[1]}", "L4", HOSTILE[4], HOSTILE[5], sha=OLD_SHA, received=T0 - timedelta(1)))
    return rows


def test_hostile_strings_stay_inert_in_the_comment() -> None:
    view = view_of(hostile_rows())
    comment = render_pr_comment(view)
    assert comment is not None
    dom = assert_safe_structure(comment, main_rows=1 + len(HOSTILE))
    assert dom.tags.count("details") == 3  # failures, L2, superseded: nothing injected a <details>
    assert len(dom.tables) == 2 and len(dom.tables[1]) == 1 + len(HOSTILE)
    assert all(cells == 7 for table in dom.tables for cells in table)
    assert comment.count(COMMENT_MARKER) == 1  # a downstream cannot plant a second marker
    links = re.findall(r"\]\(([^)]*)\)", comment)
    assert links and all(link.startswith((PUBLIC, "https://github.com/", "https://ok.example/")) for link in links)
    assert "https://ok.example/run?q=%3Cx%3E%7C%28y%29%20z%5D" in links
    text = dom.all_text
    assert "x" * 100 + "…" in text and "x" * 101 not in text  # names capped
    assert "@\u200boctocat" in text and "#\u200b123" in text  # shown, but inert
    assert "<script>" in text and "</details>" in text  # shown as text, not markup
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", comment)
    # The failure bullets keep one line each: the list has exactly one item per failed L4/L3 job.
    failures = comment.split("</summary>")[1].split("</details>")[0]
    assert len([line for line in failures.splitlines() if line.startswith("- ")]) == 2 * len(HOSTILE)


def test_hostile_strings_stay_inert_in_the_check_run() -> None:
    check = render_check_run(view_of(hostile_rows()))
    assert_safe_structure(check.summary, main_rows=1 + len(HOSTILE))
    dom = assert_safe_structure(check.text)
    assert len(dom.tables[0]) == 1 + 3 * len(HOSTILE) and all(cells == 10 for cells in dom.tables[0])


@pytest.mark.parametrize(("raw", "expected"), [
    ("a|b", "a&#124;b"),
    ("<b>&", "&lt;b&gt;&amp;"),
    ("@bob", "&#64;&#8203;bob"),
    ("see #12", "see &#35;&#8203;12"),
    ("www.x.org", "www&#8203;.x.org"),
    ("xwww.x.org WWW.Y", "xwww&#8203;.x.org WWW&#8203;.Y"),
    ("https://x", "https&#58;&#8203;//x"),
    ("[a](b)", "&#91;a&#93;&#40;b&#41;"),
    ("![i](u)", "&#33;&#91;i&#93;&#40;u&#41;"),
    ("a\nb\r\nc", "a b c"),
    ("\u202egnp.exe", "gnp.exe"),
    ("", "–"),
    ("y" * 150, "y" * 100 + "…"),
])
def test_md_text(raw: str, expected: str) -> None:
    assert md_text(raw) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("https://github.com/a/b/actions/runs/1", "https://github.com/a/b/actions/runs/1"),
    ("https://x.example/a b(c)|<d>", "https://x.example/a%20b%28c%29%7C%3Cd%3E"),
    ("HTTPS://x.example/", "https://x.example/"),
    ("javascript:alert(1)", None),
    ("http://x.example/", None),
    ("https://user:pw@x.example/", None),
    ("https:///nohost", None),
    ("https://x.example/\u202e", None),
    ("https://x.example/\n", None),
    (" https://x.example/", None),
    ("data:text/html,hi", None),
    ("https://x.example/" + "a" * 3000, None),
    (None, None),
])
def test_safe_url(url: Any, expected: str | None) -> None:
    assert safe_url(url) == expected


# ---- budgets ----------------------------------------------------------------------------------------


def big_rows() -> list[dict[str, Any]]:
    """2,000 failed jobs with 10 kB names (multi-byte and escape-heavy), over L4, L3 and L2 backends."""
    rows = []
    for i in range(2000):
        backend, level = [("acme/torch-acme", "L4"), ("contoso/pytorch-npu", "L3"), ("riscv/ci", "L2")][i % 3]
        name = f"{i:04d}-" + ("名|<@" * 2500)
        rows.append(row(backend, level, f"wf-{i % 7}", name, conclusion="failure", trunk=True,
                        url=f"https://github.com/{backend}/actions/runs/{i}"))
    rows += [row(job=f"old{i}", sha=OLD_SHA, received=T0 - timedelta(hours=1)) for i in range(200)]
    return rows


def test_budgets_with_2000_jobs_and_10kb_names() -> None:
    view = view_of(big_rows())
    comment = render_pr_comment(view)
    assert comment is not None
    assert len(comment) <= COMMENT_BUDGET_CHARS
    check = render_check_run(view)
    assert len(check.summary.encode()) <= CHECK_SUMMARY_BUDGET_BYTES
    assert len(check.text.encode()) <= CHECK_SUMMARY_BUDGET_BYTES
    for body in (comment, check.summary, check.text):
        dom = assert_safe_structure(body)
        assert re.search(rf"- … [\d,]+ more, \[see the full page\]\({re.escape(PR_PAGE)}\)", body)
        assert all(cells == dom.tables[0][0] for cells in dom.tables[0])
    # Priority: every kept L3 failure comes after all L4 failures were kept.
    failures = comment.split("<summary>Failures (1,334)</summary>")[1].split("</details>")[0]
    bullets = [line for line in failures.splitlines() if line.startswith("- ") and "more, " not in line]
    l4 = sum(1 for b in bullets if "torch-acme" in b)
    assert l4 > 0
    if any("pytorch-npu" in b for b in bullets):
        assert l4 == 667
    omitted = int(re.search(r"- … ([\d,]+) more", failures).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert len(bullets) + omitted == 1334
    # Check text: failures of L4 before anything else.
    job_rows = [line for line in check.text.splitlines() if line.startswith("| ❌")]
    assert job_rows, "L4 failures are kept first in the check text"


def test_budget_is_exact_at_the_edge() -> None:
    """Growing a PR one job at a time never crosses the budget (the accounting is exact, not estimated)."""
    rows = [row(job=f"j{i}-" + "é" * 90, conclusion="failure") for i in range(250)]
    for count in range(150, 250, 7):
        view = view_of(rows[:count])
        comment = render_pr_comment(view) or ""
        assert len(comment) <= COMMENT_BUDGET_CHARS
        assert len(render_check_run(view).summary.encode()) <= CHECK_SUMMARY_BUDGET_BYTES
