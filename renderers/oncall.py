"""On-call notices: which allowlisted L4/L3 backends fail at a PR's current commit, and the one short
comment that tells their on-calls (docs/bot.md "On-call notification"). Pure.

Mentions come only from the allowlist (upstream's file, validated logins): downstream text (workflow and
job names) is escaped like everywhere else, so it can never mention anyone.
"""

from __future__ import annotations

import dataclasses

from policy.allowlist import DEVICE_LEVEL, GATING_LEVEL
from renderers.markdown import pr_page_url
from renderers.md_escape import md_link, md_text
from renderers.pr_view import PrView

ONCALL_MARKER = "<!-- oot-hud:oncall -->"  # not the sticky comment's marker: the writer never edits these
NOTIFIED_LEVELS = (GATING_LEVEL, DEVICE_LEVEL)
MAX_JOBS_NAMED = 3


@dataclasses.dataclass(frozen=True, slots=True)
class OncallNotice:
    """One backend failing at one head: notified at most once (``key``, a set-once record per PR)."""

    repo: str
    level: str  # the allowlist's
    head_sha: str
    oncalls: tuple[str, ...]
    failed_jobs: tuple[str, ...]  # "workflow / job", untrusted

    @property
    def key(self) -> str:
        return f"oncall:{self.head_sha}:{self.repo.lower()}"


def oncall_notices(view: PrView) -> tuple[OncallNotice, ...]:
    """Backends of the current commit that the allowlist lists at L4 or L3 with on-calls, whose final
    attempt failed or timed out somewhere. Nothing without an allowlist."""
    allowlist = view.policy.allowlist
    if allowlist is None or not view.head_sha:
        return ()
    notices = []
    for backend in view.backends:
        entry = allowlist.entry(backend.downstream_repo)
        if entry is None or entry.level not in NOTIFIED_LEVELS or not entry.oncalls or not backend.failed_jobs:
            continue
        if entry.repo.lower() in view.policy.gate.canaries:
            continue  # a canary fails by design: nobody is paged for it
        notices.append(OncallNotice(entry.repo, entry.level, view.head_sha, entry.oncalls,
                                    tuple(f"{job.workflow} / {job.job}" for job in backend.failed_jobs)))
    return tuple(notices)


def render_oncall_comment(view: PrView, notices: tuple[OncallNotice, ...]) -> str:
    """One comment for every backend notified in this round (usually one)."""
    mentions = sorted({f"@{login}" for notice in notices for login in notice.oncalls}, key=str.lower)
    lines = [ONCALL_MARKER, " ".join(mentions) + ": a backend you are on call for fails on this PR."]
    sha = view.head_sha[:7]
    for notice in notices:
        jobs = ", ".join(md_text(name) for name in notice.failed_jobs[:MAX_JOBS_NAMED])
        more = len(notice.failed_jobs) - MAX_JOBS_NAMED
        jobs += f" and {more:,} more" if more > 0 else ""
        people = " ".join(f"@{login}" for login in notice.oncalls)
        lines.append(f"- **{md_text(notice.repo)}** ({notice.level}) at `{md_text(sha)}`: {jobs} ({people})")
    link = md_link("full results page", pr_page_url(view), allow_http=True) or "full results page"
    lines.append(f"\nDetails in the Out-of-Tree Backends comment above and on the {link}. You are told once per "
                 "backend and commit.")
    return "\n".join(lines) + "\n"
