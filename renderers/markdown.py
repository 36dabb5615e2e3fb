"""The PR comment and the check-run output (Markdown) from a ``PrView``, within GitHub's size budgets."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable

from policy.gate import LEVELS_FROM_ALLOWLIST, LEVELS_FROM_RELAY, GateDecision, GateJob, Pending
from renderers.md_escape import md_link, md_text, path_segment
from renderers.policy import Verdict, format_duration
from renderers.pr_view import BackendResult, JobResult, PrView, VerdictCounts, gate_decision, has_results
from sql.records import as_utc

COMMENT_MARKER = "<!-- oot-hud:pr-comment -->"  # first line of the sticky comment
COMMENT_BUDGET_CHARS = 65_536  # GitHub's limit on a comment body (characters)
CHECK_SUMMARY_BUDGET_BYTES = 65_535  # GitHub's limit on a check run's output.summary and output.text (bytes)
CHECK_RUN_NAME = "OOT Backends"
TITLE = "Out-of-Tree Backends"

ICON_BLOCKING_FAILURE = "❌"
ICON_OTHER_FAILURE = "⚠️"
ICON_RUNNING = "⏳"
ICON_PASSED = "✅"
_VERDICT_WORDS = {
    Verdict.FAILURE: "failed", Verdict.TIMED_OUT: "timed out", Verdict.CANCELLED: "cancelled",
    Verdict.NO_REPORT: "no report", Verdict.RUNNING: "running", Verdict.SUCCESS: "passed",
}
_TABLE_HEAD = "| | Backend | Level | Jobs | Tests | Duration | Links |\n|---|---|---|---|---|---|---|"
_JOB_TABLE_HEAD = ("| | Backend | Workflow | Job | Attempt | Legs | Tests | Duration | Queue | Links |\n"
                   "|---|---|---|---|---|---|---|---|---|---|")
_HEX_SHA = re.compile(r"^[0-9a-f]{7,64}$")


@dataclasses.dataclass(frozen=True, slots=True)
class CheckRunOutput:
    """What the bot sends for the PR's check run (create or update), on ``head_sha``."""

    name: str
    head_sha: str
    status: str  # "in_progress" or "completed"
    conclusion: str | None  # None while in progress; else "success", "failure" or "neutral"
    title: str
    summary: str  # <= CHECK_SUMMARY_BUDGET_BYTES UTF-8 bytes
    text: str  # <= CHECK_SUMMARY_BUDGET_BYTES UTF-8 bytes
    details_url: str  # the PR page
    external_id: str  # "{upstream_repo}#{pr_number}"


# ---------------------------------------------------------------------------------------------- public


def render_pr_comment(view: PrView) -> str | None:
    """The sticky comment body (starts with ``COMMENT_MARKER``), or None when the PR has no displayable
    OOT results (then the bot posts nothing). Deterministic: no timestamps, so an unchanged state renders
    an identical body and the bot can skip the write."""
    if not has_results(view):
        return None
    head = f"{COMMENT_MARKER}\n## {headline_icon(view)} {TITLE}: {headline_text(view)}\n{_as_of(view)}"
    return _assemble(view, head, _sections(view), budget=COMMENT_BUDGET_CHARS, measure=len)


def render_check_run(view: PrView) -> CheckRunOutput:
    """The check run for the view's current head SHA (the merge gate: ``policy.gate``, README "Blocking
    rules"); the summary opens with the gate's reasons, ages included."""
    gate = gate_decision(view)
    status, conclusion = gate.status, gate.conclusion
    summary = _assemble(view, _as_of(view), [_gate_section(view, gate), *_sections(view)],
                        budget=CHECK_SUMMARY_BUDGET_BYTES, measure=_utf8_len)
    text = (_assemble(view, "### Jobs of the current commit", [_job_section(view)],
                      budget=CHECK_SUMMARY_BUDGET_BYTES, measure=_utf8_len)
            if view.backends else "No results for the current commit yet.\n")
    return CheckRunOutput(
        name=CHECK_RUN_NAME, head_sha=view.head_sha, status=status, conclusion=conclusion,
        title=_check_title(view, gate), summary=summary, text=text,
        details_url=pr_page_url(view), external_id=f"{view.upstream_repo}#{view.pr_number}",
    )


def short_fallback_comment(view: PrView) -> str:
    """A tiny body (marker, headline, link to the PR page) for when GitHub refuses the full one (422)."""
    link = md_link("full results page", pr_page_url(view), allow_http=True) or "full results page"
    return (f"{COMMENT_MARKER}\n## {headline_icon(view)} {TITLE}: {headline_text(view)}\n{_as_of(view)}\n\n"
            f"The details did not fit in a comment: see the {link}.\n")


def check_status(view: PrView) -> tuple[str, str | None]:
    """(status, conclusion) of the check run: the merge gate's (``policy.gate``; README "Blocking rules")."""
    gate = gate_decision(view)
    return gate.status, gate.conclusion


def headline_icon(view: PrView) -> str:
    """❌ blocking failure > ⚠️ other failure > ⏳ running (or no result yet for the current commit) >
    ⚠️ cancelled / no report > ✅ all passed."""
    if view.totals.total == 0:
        return ICON_RUNNING
    return _icon(view.totals, blocking_failures=view.blocking_failures)


def headline_text(view: PrView) -> str:
    """"1 blocking failure · 2 failed · 1 timed out · 3 passed · 1 running" for the current commit's L4 and L3
    jobs. Timeouts are counted apart from failures: the merge gate treats them as infrastructure."""
    totals = view.totals
    if totals.total == 0:
        return f"waiting for results for commit {view.short_sha}" if view.head_sha else "no results yet"
    blocking = view.blocking_failures
    parts = []
    if blocking:
        parts.append(f"{blocking:,} blocking failure{'s' if blocking != 1 else ''}")
    if totals.failure - blocking:
        parts.append(f"{totals.failure - blocking:,} failed")
    parts += [f"{n:,} {word}" for n, word in ((totals.timed_out, "timed out"), (totals.success, "passed"),
                                                (totals.running, "running"),
                                                (totals.cancelled, "cancelled"), (totals.no_report, "no report"))
              if n]
    return " · ".join(parts)


def pr_page_url(view: PrView) -> str:
    """``{public_url}/oot/pr/{owner}/{repo}/{number}``, segments percent-encoded."""
    owner, _, repo = view.upstream_repo.partition("/")
    return f"{view.public_url}/oot/pr/{path_segment(owner)}/{path_segment(repo)}/{view.pr_number}"


def matrix_url(view: PrView, downstream_repo: str) -> str | None:
    """``{public_url}/oot/{org}/{repo}``, the backend's matrix page; None for a malformed repo name."""
    org, _, repo = downstream_repo.partition("/")
    if not org or not repo or "/" in repo:
        return None
    return f"{view.public_url}/oot/{path_segment(org)}/{path_segment(repo)}"


# ----------------------------------------------------------------------------------------- sections


@dataclasses.dataclass(slots=True)
class _Section:
    """A block of the body: fixed ``head``/``tail`` around ``items`` that truncation may drop.

    ``priority`` orders sections for the budget (lower keeps first); ``omitted`` is set by ``_assemble``.
    """

    head: str
    items: list[str]
    tail: str = ""
    priority: int = 0
    item_priorities: list[int] | None = None
    omitted: int = 0
    kept: list[bool] = dataclasses.field(default_factory=list)


def _sections(view: PrView) -> list[_Section]:
    main = view.main_backends
    failed_main = [(b, j) for b in main for j in b.failed_jobs]
    flaky = [(b, j) for b in view.backends for j in b.jobs if j.flaky]
    sections: list[_Section] = []
    if main:
        sections.append(_Section(
            head=_TABLE_HEAD, items=[_backend_row(view, b) for b in main], priority=2,
            item_priorities=[0 if b.blocking else 1 for b in main],
            tail="\n\n" + _page_line(view)))
    else:
        sections.append(_Section(head=_page_line(view), items=[], priority=2))
    if failed_main:
        sections.append(_Section(
            head=f"<details open><summary>Failures ({len(failed_main):,})</summary>\n",
            items=[_failure_item(view, b, j) for b, j in failed_main], tail="\n\n</details>", priority=1,
            item_priorities=[0 if b.blocking else 1 for b, _ in failed_main]))
    if flaky:
        sections.append(_Section(
            head=f"<details><summary>Flaky jobs ({len(flaky):,}): failed, then passed on a re-run</summary>\n",
            items=[_failure_item(view, b, j) for b, j in flaky], tail="\n\n</details>", priority=3))
    hints = _label_hints(view)
    if hints:
        sections.append(_Section(
            head="**Not run for this commit** (L3 backends run when the PR carries their label):",
            items=hints, priority=3))
    observation = view.observation_backends
    if observation:
        failed_obs = [(b, j) for b in observation for j in b.failed_jobs]
        sections.append(_Section(
            head=(f"<details><summary>Observation-only backends (L2): {len(observation):,}</summary>\n\n"
                  + _TABLE_HEAD),
            items=[_backend_row(view, b) for b in observation]
            + ([""] if failed_obs else []) + [_failure_item(view, b, j) for b, j in failed_obs],
            tail="\n\n</details>", priority=4))
    if view.superseded:
        lines = [_superseded_item(view, commit.head_sha, b) for commit in view.superseded for b in commit.backends]
        sections.append(_Section(
            head=(f"<details><summary>Superseded results for older commits ({len(view.superseded):,})"
                  "</summary>\n"),
            items=lines, tail="\n\n</details>", priority=5))
    return sections


def _check_title(view: PrView, gate: GateDecision) -> str:
    if gate.pending and not gate.failed:
        count = len(gate.pending)
        return f"{ICON_RUNNING} waiting for {count:,} gating backend{'s' if count != 1 else ''} · {headline_text(view)}"
    return f"{headline_icon(view)} {headline_text(view)}"


_LEVELS_FROM = {
    LEVELS_FROM_ALLOWLIST: "L4 backends of the upstream allowlist",
    LEVELS_FROM_RELAY: "backends the relay reported at L4",
}


def _gate_section(view: PrView, gate: GateDecision) -> _Section:
    """The merge gate's reasons, one line each, blocking ones first (kept first when over the budget)."""
    source = _LEVELS_FROM.get(gate.levels_from, "backends the relay reported at L4 (the allowlist could not be read)")
    if not gate.gating_repos:
        return _Section(head=f"**Merge gate**: nothing gates this PR (gating: {source}).", items=[], priority=0)
    items = [f"- {ICON_BLOCKING_FAILURE} {_gate_job(job)}: failed, blocks merging" for job in gate.failed]
    items += [f"- {ICON_RUNNING} {_pending(item)}, blocks merging until it reports" for item in gate.pending]
    limit = format_duration(gate.max_pending.total_seconds()) if gate.max_pending is not None else ""
    items += [f"- {ICON_OTHER_FAILURE} **no longer blocking**: {_pending(item)}, longer than the gate waits "
              f"({limit}, `OOT_HUD_GATE_MAX_PENDING_HOURS`)" for item in gate.expired]
    items += [f"- {_gate_job(job)}: {_VERDICT_WORDS[job.verdict]}, infrastructure, not blocking"
              for job in gate.infrastructure]
    items += [f"- {_gate_job(job)}: {_VERDICT_WORDS[job.verdict]}, not blocking" for job in gate.other]
    passed = f"{gate.passed:,} gating job{'s' if gate.passed != 1 else ''} passed"
    return _Section(head=f"**Merge gate** ({source}: {len(gate.gating_repos):,}): {passed}.", items=items,
                    priority=0, item_priorities=[0] * (len(gate.failed) + len(gate.pending)) + [1] * (
                        len(items) - len(gate.failed) - len(gate.pending)))


def _gate_job(job: GateJob) -> str:
    return f"**{md_text(job.repo)}** · {md_text(job.workflow)} / {md_text(job.job)}"


def _pending(item: Pending) -> str:
    clock, coarse = _since(item)
    if item.job is None:
        since = f" (the commit's first result came at {clock}" + (f", over {coarse} ago)" if coarse else ")")
        return f"**{md_text(item.repo)}**: no result for this commit yet" + (since if clock else "")
    state = "running" if item.job.verdict is Verdict.RUNNING else "silent"
    return f"{_gate_job(item.job)}: {state}" + (f" since {clock}" if clock else "") + (f" (over {coarse})"
                                                                                      if coarse else "")


def _since(item: Pending) -> tuple[str, str]:
    """(when the item started, a coarse age): "14:02 UTC" and "" in its first hour, "3h" in whole hours
    after that, and from a day on "2026-12-04 14:02 UTC" and "2d". The check run is re-sent only when its text
    changes, and it is re-rendered for any change of the PR: a precise age ("running for 19s") would rewrite
    it on every render; this text changes at most once an hour, and only if something else re-renders it."""
    if item.since is None:
        return "", ""
    since = as_utc(item.since)
    hours = int(item.age.total_seconds() // 3600) if item.age is not None else 0
    if hours >= 24:
        return f"{since:%Y-%m-%d %H:%M} UTC", f"{hours // 24}d"
    return f"{since:%H:%M} UTC", f"{hours}h" if hours else ""


def _label_hints(view: PrView) -> list[str]:
    """One line per device of the allowlist's L3 backends without a result at the current commit: the label
    that runs them, or, when the PR carries it already (webhooks), that they have not reported yet. Nothing
    without an allowlist. Devices and repos are the allowlist's (upstream's) text; the PR's labels are only
    compared, never shown. Exact match, as the relay compares them."""
    allowlist = view.policy.allowlist
    if allowlist is None or not view.head_sha:
        return []
    reported = {repo.lower() for repo in view.reported_repos}
    lines = []
    for device, entries in sorted(allowlist.devices().items()):
        idle = [entry.repo for entry in entries if entry.repo.lower() not in reported]
        if idle:
            label = f"{view.policy.label_prefix}{device}"
            names = ", ".join(f"**{md_text(repo)}**" for repo in idle)
            lines.append(f"- `{label}` is on this PR: waiting for {names} to report" if label in view.labels
                         else f"- add the label `{label}` to opt this PR into {names}")
    return lines


def _job_section(view: PrView) -> _Section:
    pairs = [(b, j) for b in view.backends for j in b.jobs]
    return _Section(head=_JOB_TABLE_HEAD, items=[_job_row(view, b, j) for b, j in pairs],
                    item_priorities=[_job_priority(b, j) for b, j in pairs])


def _job_priority(backend: BackendResult, job: JobResult) -> int:
    """Failures of L4 first, then of L3, then the rest by level."""
    level_rank = {"L4": 0, "L3": 1, "L2": 2}.get(backend.level, 3)
    return level_rank if job.failed else 3 + level_rank


def _backend_row(view: PrView, backend: BackendResult) -> str:
    blocking = sum(1 for job in backend.jobs if job.verdict is Verdict.FAILURE) if backend.blocking else 0
    links = " · ".join(link for link in (md_link("runs", backend.run_url),
                                          md_link("matrix", matrix_url(view, backend.downstream_repo),
                                                  allow_http=True)) if link)
    cells = [_icon(backend.counts, blocking_failures=blocking), md_text(backend.downstream_repo),
             md_text(backend.level), _jobs_cell(backend.counts),
             _tests_cell(backend.tests_passed, backend.tests_failed, backend.tests_skipped),
             format_duration(backend.duration_s), links]
    return "| " + " | ".join(cells) + " |"


def _job_row(view: PrView, backend: BackendResult, job: JobResult) -> str:
    links = " · ".join(link for link in (md_link("run", job.run_url), md_link("artifacts", job.artifact_url))
                       if link)
    legs = f"{job.failed_legs} of {len(job.legs)} failed" if job.failed_legs and len(job.legs) > 1 \
        else str(len(job.legs))
    verdict_text = _VERDICT_WORDS[job.verdict] + (" (flaky)" if job.flaky else "")
    cells = [_job_icon(backend, job) + " " + verdict_text, md_text(backend.downstream_repo), md_text(job.workflow),
             md_text(job.job), str(job.attempt), legs,
             _tests_cell(job.tests_passed, job.tests_failed, job.tests_skipped),
             format_duration(job.duration_s), format_duration(job.queue_time_s), links]
    return "| " + " | ".join(cells) + " |"


def _failure_item(view: PrView, backend: BackendResult, job: JobResult) -> str:
    facts = [f"{_VERDICT_WORDS[job.verdict]} at attempt {job.attempt}"]
    if len(job.legs) > 1:
        facts.append(f"{job.failed_legs} of {len(job.legs)} legs failed" if job.failed_legs
                     else f"{len(job.legs)} legs")
    if job.flaky:
        facts.append("flaky")
    if job.also_failing_on_trunk:
        facts.append("also failing on trunk")
    tests = _tests_cell(job.tests_passed, job.tests_failed, job.tests_skipped)
    if tests:
        facts.append(f"tests {tests}")
    facts += [link for link in (md_link("run", job.run_url), md_link("artifacts", job.artifact_url)) if link]
    return (f"- {_job_icon(backend, job)} **{md_text(backend.downstream_repo)}** ({md_text(backend.level)}) · "
            f"{md_text(job.workflow)} / {md_text(job.job)}: " + " · ".join(facts))


def _superseded_item(view: PrView, sha: str, backend: BackendResult) -> str:
    return (f"- {_sha_text(sha)} · {md_text(backend.downstream_repo)} ({md_text(backend.level)}): "
            f"{_jobs_cell(backend.counts)}")


def _page_line(view: PrView) -> str:
    link = md_link("full results page", pr_page_url(view), allow_http=True)
    return f"Details, legs and tooltips: {link}." if link else ""


def _as_of(view: PrView) -> str:
    older = " (results for older commits are hidden below)" if view.superseded else ""
    return f"As of commit {_sha_text(view.head_sha)}{older}"


def _sha_text(sha: str) -> str:
    # A hex SHA in a code span: readable, and GitHub neither links nor mentions inside code.
    return f"`{sha[:7]}`" if _HEX_SHA.match(sha) else md_text(sha, max_chars=12)


def _icon(counts: VerdictCounts, *, blocking_failures: int) -> str:
    if blocking_failures:
        return ICON_BLOCKING_FAILURE
    if counts.failed:
        return ICON_OTHER_FAILURE
    if counts.running:
        return ICON_RUNNING
    if counts.cancelled or counts.no_report:
        return ICON_OTHER_FAILURE
    return ICON_PASSED


def _job_icon(backend: BackendResult, job: JobResult) -> str:
    """``_icon`` of a single job's counts (one verdict), without building the counts (hot: every job row)."""
    if job.failed:  # only a failure blocks; a timeout is infrastructure
        return ICON_BLOCKING_FAILURE if backend.blocking and job.verdict is Verdict.FAILURE else ICON_OTHER_FAILURE
    return _SINGLE_JOB_ICON[job.verdict]


_SINGLE_JOB_ICON = {Verdict.RUNNING: ICON_RUNNING, Verdict.CANCELLED: ICON_OTHER_FAILURE,
                    Verdict.NO_REPORT: ICON_OTHER_FAILURE, Verdict.SUCCESS: ICON_PASSED}


def _jobs_cell(counts: VerdictCounts) -> str:
    """"1 ✗ · 1 timed out · 3 ✓": timeouts apart from failures, as the merge gate counts them."""
    parts = [f"{n:,} {word}" for n, word in ((counts.failure, "✗"), (counts.timed_out, "timed out"),
                                              (counts.success, "✓"),
                                              (counts.running, "running"), (counts.cancelled, "cancelled"),
                                              (counts.no_report, "no report"), (counts.flaky, "flaky")) if n]
    return " · ".join(parts)


def _tests_cell(passed: int | None, failed: int | None, skipped: int | None) -> str:
    parts = [f"{n:,} {word}" for n, word in ((passed, "✓"), (failed, "✗"), (skipped, "skipped")) if n]
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------------- budget


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def _omission_line(view: PrView, count: int) -> str:
    link = md_link("see the full page", pr_page_url(view), allow_http=True) or "see the full page"
    return f"- … {count:,} more, {link}"


def _assemble(view: PrView, head: str, sections: list[_Section], *, budget: int,
              measure: Callable[[str], int]) -> str:
    """Join ``head`` and the sections; when over ``budget``, drop items by priority (sections' priority,
    then each item's) and put an "N more, see the full page" line where items went missing."""
    full = _join(view, head, sections)
    if measure(full) <= budget:
        return full
    # Fixed cost: everything but the items, each section with an omission line for the worst case.
    for section in sections:
        section.kept = [False] * len(section.items)
        section.omitted = len(section.items)
    remaining = budget - measure(_join(view, head, sections))
    order = sorted(
        ((section.priority, (section.item_priorities or [0] * len(section.items))[i], index, i)
         for index, section in enumerate(sections) for i in range(len(section.items))))
    for _, _, index, i in order:
        section = sections[index]
        cost = measure(section.items[i]) + 1  # + newline
        if cost > remaining:
            continue  # a smaller, lower-priority item may still fit
        section.kept[i] = True
        section.omitted -= 1
        remaining -= cost
        if section.omitted == 0:
            remaining += measure(_omission_line(view, len(section.items))) + 1  # its line is gone
    result = _join(view, head, sections)
    if measure(result) > budget:  # cannot happen with capped names; never let GitHub refuse the body
        total = sum(len(section.items) for section in sections)
        return f"{head}\n\n{_omission_line(view, total)}\n"
    return result


def _join(view: PrView, head: str, sections: Iterable[_Section]) -> str:
    blocks = [head]
    for section in sections:
        kept = section.kept or [True] * len(section.items)
        lines = [section.head, *(item for item, keep in zip(section.items, kept, strict=True) if keep)]
        if section.omitted:
            lines.append("\n" + _omission_line(view, section.omitted))  # blank line: never a table row
        block = "\n".join(line for line in lines if line is not None)
        blocks.append(block + section.tail)
    return "\n\n".join(blocks) + "\n"
