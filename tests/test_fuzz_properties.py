"""Hypothesis property tests of the untrusted-input paths, through their public entry points:

- extraction: any JSON value becomes a record (that the warehouse accepts) or the contract's 400 error;
- the merge rules: any sequence of callbacks for one job, in any order, never moves the record backwards
  (completed -> in_progress, an older write winning), in the pure rules and through the embedded store;
- the Markdown renderers (comment, check run, fallback): arbitrary Unicode in every downstream field gives
  tables with equal cells per row, only the links the renderer means to make, no image, no live mention,
  balanced ``<details>``, within GitHub's size limits;
- the pages: with arbitrary Unicode in every downstream field they parse as HTML made only of the templates'
  own tags and attributes, every downstream string inside a text node or an escaped attribute value.

``FUZZ_EXAMPLES`` scales every test (default small, for ``make test``; ``scripts/fuzz-long`` raises it).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import uuid
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.extract import ExtractionError, extract
from ingest.merge import merge
from ingest.routes import parse_json
from ingest.stores.base import Outcome
from ingest.stores.embedded import EmbeddedStore
from renderers.markdown import (
    CHECK_SUMMARY_BUDGET_BYTES,
    COMMENT_BUDGET_CHARS,
    render_check_run,
    render_pr_comment,
    short_fallback_comment,
)
from renderers.pr_view import build_pr_view
from sql.records import FIRST_ONLY_FIELDS, JOB_RESULTS_TABLE, item_to_row
from sql.warehouse import Warehouse
from tests.conftest import relay_payload
from tests.readpath_app import build_app
from tests.readpath_data import NOW, record, row
from tests.test_markdown import Dom, gfm

SCALE = int(os.environ.get("FUZZ_EXAMPLES", "0")) or None


def bounded(examples: int) -> Any:
    """Hypothesis settings for ``make test`` (``examples``), or ``FUZZ_EXAMPLES`` for a long run."""
    return settings(max_examples=SCALE or examples, deadline=None, derandomize=SCALE is None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


# ---- strategies ------------------------------------------------------------------------------------------

HOSTILE_PARTS = ["<script>alert(1)</script>", "</details>", "<details>", "<img src=x onerror=alert(1)>", "|",
                 "@octocat", "@pytorch/team", "#123", "[x](https://evil.example)", "![i](https://evil.example/i)",
                 "https://evil.example", "www.evil.example", "javascript:alert(1)", "`", "**", "\n", "\r\n",
                 "\u202e", "\u2066", "\x00", "\x1b[31m", "&amp;", "&#64;", "\"'><", "{{ x }}", "<!-- x -->",
                 ":tada:", "\\", "~~", "$x$", "\ufeff", "名", "🙂"]
# Arbitrary Unicode, dense with what Markdown, GitHub and HTML give a meaning.
untrusted_text = st.lists(st.one_of(st.text(max_size=20), st.sampled_from(HOSTILE_PARTS)), max_size=8).map("".join)
untrusted_url = st.one_of(untrusted_text, untrusted_text.map(lambda t: "https://ok.example/" + t),
                          st.sampled_from(["javascript:alert(1)", "data:text/html,<b>x</b>", "http://x.example/",
                                           "https://user:pw@x.example/", "https://evil.example/a b|c)"]))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*prefix, key))
    return out


VALID = relay_payload("02_pr_completed_success")
VALID_PATHS = _paths(VALID)[1:]


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """A valid relay body with a few fields (anywhere in it) replaced by, or added as, arbitrary JSON."""
    body = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(VALID_PATHS))
        target = body
        for part in path[:-1]:
            target = target.get(part) if isinstance(target, dict) else None
        if isinstance(target, dict):
            if draw(st.booleans()):
                target[path[-1]] = draw(json_values)
            else:
                target.pop(path[-1], None)
    return body


# ---- extraction --------------------------------------------------------------------------------------------


def _extract_or_refuse(body: Any) -> None:
    try:
        rec = extract(body, received_at=NOW)
    except ExtractionError as exc:
        assert str(exc), "a 400 must say what is wrong"
        return
    # Accepted: it must also be storable, or the relay would get a 200 for a row the warehouse refuses.
    item_to_row({**rec.present_fields(), "first_received_at": rec.present_fields()["received_at"]}, version=1)


@bounded(300)
@given(json_values)
def test_extraction_of_any_json_value_is_a_record_or_a_400(body: Any) -> None:
    _extract_or_refuse(body)


@bounded(400)
@given(mutated_bodies())
def test_extraction_of_a_mutated_contract_body_is_a_record_or_a_400(body: Any) -> None:
    _extract_or_refuse(body)
    # And the same bytes through the HTTP layer's JSON reading.
    _extract_or_refuse(parse_json(json.dumps(body).encode()))


@bounded(200)
@given(st.binary(max_size=200))
def test_any_body_bytes_are_json_or_a_400(raw: bytes) -> None:
    try:
        body = parse_json(raw)
    except ExtractionError:
        return
    _extract_or_refuse(body)


# ---- merge rules -------------------------------------------------------------------------------------------

_TIMES = [None, NOW - timedelta(hours=3), NOW - timedelta(hours=1)]


@st.composite
def callbacks(draw: st.DrawFn, key_suffix: str = "") -> list[Any]:
    """2..8 callbacks of one job (the same key), any status, any optional fields present or absent."""
    out = []
    for i in range(draw(st.integers(2, 8))):
        status = draw(st.sampled_from(["in_progress", "completed"]))
        out.append(record(job="fuzz" + key_suffix, status=status, conclusion=draw(st.sampled_from(
            ["success", "failure", None])), started=draw(st.sampled_from(_TIMES)) or None,
            received=NOW - timedelta(minutes=60 - i), queue_time_s=draw(st.sampled_from([None, 1.0, 2.0])),
            duration=draw(st.sampled_from([None, 10.0]))))
    return out


def _check_history(items: list[dict[str, Any]], outcomes: list[Outcome], sent: list[Any]) -> None:
    """What any order of callbacks must give: never backwards, versions one up per stored write."""
    completed_seen = False
    version = 0
    first_only: dict[str, Any] = {}
    for item, outcome, rec in zip(items, outcomes, sent, strict=True):
        if completed_seen:
            assert item["status"] == "completed", "a completed record moved back"
        if outcome is Outcome.STORED:
            version += 1
        assert item["version"] == version
        if outcome is Outcome.STALE:
            assert rec.status != "completed" and completed_seen
        for name in FIRST_ONLY_FIELDS:
            if name in first_only:
                assert item.get(name) == first_only[name], f"{name} was overwritten"
            elif item.get(name) is not None:
                first_only[name] = item[name]
        completed_seen = completed_seen or item["status"] == "completed"
    assert (items[-1]["status"] == "completed") == any(r.status == "completed" for r in sent)


@bounded(300)
@given(callbacks(), st.randoms(use_true_random=False))
def test_merge_never_moves_a_record_backwards(sent: list[Any], rng: Any) -> None:
    rng.shuffle(sent)
    stored: dict[str, Any] | None = None
    items, outcomes = [], []
    for rec in sent:
        merged = merge(stored, rec)
        stored = merged.item
        items.append(dict(stored))
        outcomes.append(merged.outcome)
    _check_history(items, outcomes, sent)


_case = itertools.count()


@bounded(15)
@given(callbacks(), st.randoms(use_true_random=False))
async def test_the_embedded_store_agrees_and_the_newest_version_wins(warehouse: Warehouse, sent: list[Any],
                                                                     rng: Any) -> None:
    """The same callbacks through the store (one key per example): the warehouse row read back with FINAL is
    the pure rules' last item, so the highest version is the newest state, never an older write."""
    suffix = f"-{next(_case)}-{uuid.uuid4().hex[:6]}"
    sent = [record(**{**_fields(r), "job": "fuzz" + suffix}) for r in sent]
    rng.shuffle(sent)
    store = EmbeddedStore(warehouse, commit_window_ms=0)
    await store.start()
    expected: dict[str, Any] | None = None
    for rec in sent:
        result = await store.upsert(rec)
        merged = merge(expected, rec)
        expected = merged.item
        assert (result.outcome, result.version, result.status) == (merged.outcome, merged.version, merged.status)
    await store.close()
    [stored] = warehouse.query(f"SELECT status, version, conclusion FROM {JOB_RESULTS_TABLE} FINAL "
                               "WHERE key = {k:String}", {"k": sent[0].key})
    assert expected is not None
    assert (stored["status"], stored["version"]) == (expected["status"], expected["version"])


def _fields(rec: Any) -> dict[str, Any]:
    """``record()`` keywords that rebuild ``rec`` (for a new key)."""
    return {"status": rec.status, "conclusion": rec.conclusion, "started": rec.started_at,
            "received": rec.received_at, "queue_time_s": rec.queue_time_s,
            "duration": rec.execution_time_s if rec.status == "completed" else 10.0}


# ---- Markdown renderers --------------------------------------------------------------------------------

PUBLIC = "https://hud.example"
OUR_LINK_LABELS = {"runs", "run", "artifacts", "matrix", "full results page", "see the full page"}


@st.composite
def pr_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1..6 ``oot_pr_results``-shaped rows with arbitrary text in every downstream field."""
    rows = []
    # Head SHAs are hex by the time they are stored (extraction refuses anything else; webhooks are GitHub's).
    heads = [draw(st.sampled_from(["a" * 40, "0" * 7, "f" * 64])) for _ in range(2)]
    for i in range(draw(st.integers(1, 6))):
        completed = draw(st.booleans())
        received = NOW - timedelta(minutes=draw(st.integers(0, 600)))
        rows.append({
            "key": f"k{i}", "downstream_repo": draw(untrusted_text),
            "downstream_level": draw(st.one_of(st.sampled_from(["L2", "L3", "L4"]), untrusted_text)),
            "event_type": "pull_request", "delivery_id": draw(untrusted_text), "upstream_repo": "pytorch/pytorch",
            "pr_number": 4242, "head_sha": draw(st.sampled_from(heads)), "workflow_name": draw(untrusted_text),
            "job_name": draw(untrusted_text), "check_run_id": draw(untrusted_text), "run_id": draw(untrusted_text),
            "run_attempt": draw(st.integers(1, 2**32 - 1)), "workflow_url": draw(untrusted_url),
            "artifact_url": draw(untrusted_url), "status": "completed" if completed else "in_progress",
            "conclusion": draw(st.one_of(st.sampled_from(["success", "failure", "timed_out", "cancelled"]),
                                         untrusted_text)) if completed else "",
            "started_at": received - timedelta(seconds=30), "completed_at": received if completed else None,
            "queue_time_s": draw(st.one_of(st.none(), st.floats(0, 1e9))),
            "execution_time_s": draw(st.one_of(st.none(), st.floats(0, 1e9))) if completed else None,
            "tests_passed": draw(st.one_of(st.none(), st.integers(0, 2**63 - 1))),
            "tests_failed": draw(st.one_of(st.none(), st.integers(0, 2**63 - 1))),
            "tests_skipped": draw(st.one_of(st.none(), st.integers(0, 2**63 - 1))), "tests_total": None,
            "first_received_at": received, "received_at": received, "current_head_sha": heads[0],
            "head_source": "webhook", "also_failing_on_trunk": draw(st.sampled_from([0, 1])),
        })
    return rows


class _Links(HTMLParser):
    """The label of every link and every image in rendered HTML."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.images = 0
        self._open: list[str] | None = None
        self._href = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._href = [], dict(attrs).get("href") or ""
        elif tag == "img":
            self.images += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append(("".join(self._open), self._href))
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open.append(data)


def assert_inert_markdown(markdown: str) -> None:
    html = gfm(markdown)
    dom = Dom(html)
    assert dom.details_depth == 0 and dom.details_closed == dom.tags.count("details"), "unbalanced <details>"
    for table in dom.tables:
        assert all(cells == table[0] for cells in table), f"a table row with a different cell count: {table}"
    links = _Links(html)
    assert links.images == 0, "an image"
    for label, href in links.links:
        assert label in OUR_LINK_LABELS, f"a link the renderer did not mean to make: {label!r} -> {href!r}"
        assert href.startswith(("https://", PUBLIC)), href
    text = dom.all_text
    assert not re.search(r"(?<![\w`])@[A-Za-z0-9]", text), "a live mention"
    assert not re.search(r"(?<![A-Za-z0-9])#[0-9]", text), "a live issue reference"
    assert set(dom.tags) <= {"h2", "h3", "p", "table", "thead", "tbody", "tr", "th", "td", "a", "details",
                             "summary", "ul", "li", "strong", "code", "em", "br"}, set(dom.tags)


@bounded(60)
@given(pr_rows())
def test_markdown_renderers_keep_arbitrary_downstream_text_inert(rows: list[dict[str, Any]]) -> None:
    view = build_pr_view(rows, now=NOW, silence_hours=6, public_url=PUBLIC + "/", upstream_repo="pytorch/pytorch",
                         pr_number=4242)
    comment = render_pr_comment(view)
    check = render_check_run(view)
    bodies = [check.summary, check.text, short_fallback_comment(view), check.title]
    if comment is not None:
        assert len(comment) <= COMMENT_BUDGET_CHARS
        bodies.append(comment)
    assert len(check.summary.encode()) <= CHECK_SUMMARY_BUDGET_BYTES
    assert len(check.text.encode()) <= CHECK_SUMMARY_BUDGET_BYTES
    for body in bodies:
        assert_inert_markdown(body)


# ---- pages -------------------------------------------------------------------------------------------------

# Every tag and attribute the renderers' own source writes (templates and Python), read from that source so a
# new template is covered; anything else in a page came from downstream text.
_RENDERERS = Path(__file__).resolve().parent.parent / "renderers"
_SOURCE = "\n".join(path.read_text() for path in [*_RENDERERS.glob("*.py"), *_RENDERERS.glob("templates/*.html")])
PAGE_TAGS = set(re.findall(r"<([a-z][a-z0-9-]*)", _SOURCE))
PAGE_ATTRIBUTES = {name.lower() for name in re.findall(r"[\s'\"]([A-Za-z][A-Za-z0-9-]*)=[\"'{]", _SOURCE)} | {"open"}


class _Page(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.urls: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            self.attributes.add(name)
            if name in ("href", "src"):
                self.urls.append(value or "")


@st.composite
def downstream_records(draw: st.DrawFn) -> list[Any]:
    """A few stored results of one valid backend name (so its matrix page exists) and of arbitrary ones, with
    arbitrary text in every other downstream field."""
    out = []
    for i in range(draw(st.integers(1, 4))):
        backend = "fuzz/backend" if i == 0 else draw(untrusted_text) or "x/y"
        out.append(record(
            backend=backend, level=draw(st.sampled_from(["L2", "L3", "L4"])), pr=170001 if i % 2 == 0 else 0,
            workflow=draw(untrusted_text) or "w", job=draw(untrusted_text) or "j",
            conclusion=draw(st.one_of(st.sampled_from(["success", "failure"]), untrusted_text)) or "x",
            status=draw(st.sampled_from(["completed", "in_progress"])),
            received=NOW - timedelta(minutes=draw(st.integers(1, 3000))),
            workflow_url=draw(untrusted_url), artifact_url=draw(untrusted_url)))
    return out


@bounded(10)
@given(downstream_records())
async def test_pages_keep_arbitrary_downstream_text_in_text_nodes(warehouse: Warehouse, tmp_path: Path,
                                                                  records: list[Any]) -> None:
    warehouse.command(f"TRUNCATE TABLE {JOB_RESULTS_TABLE}")
    warehouse.insert_job_rows([row(rec) for rec in records])
    app = build_app(warehouse, tmp_path, now=NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hud.test") as http:
        for path in ("/oot?days=7", "/oot/fuzz/backend?days=7", "/oot/pr/pytorch/pytorch/170001"):
            response = await http.get(path)
            assert response.status_code == 200, (path, response.text[:300])
            page = _Page(response.text)
            assert page.tags <= PAGE_TAGS, f"{path}: tags from downstream text: {page.tags - PAGE_TAGS}"
            assert page.attributes <= PAGE_ATTRIBUTES, f"{path}: {page.attributes - PAGE_ATTRIBUTES}"
            assert not any(a.startswith("on") for a in page.attributes)
            for url in page.urls:
                assert not re.match(r"(?i)\s*(javascript|data|vbscript):", url), url
                # (the PR page's dry run renders the comment as GitHub would: its links go to the pages, at
                # the settings' public_url)
                assert url.startswith(("https://", "/", "#", "?", "../", "./", "http://127.0.0.1:8000/oot/")) \
                    or "://" not in url, url

