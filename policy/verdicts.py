"""A job's verdict from its status and conclusion, and the levels shown and gating (one definition each)."""

from __future__ import annotations

import enum

LEVELS_SHOWN_ON_PR = ("L4", "L3", "L2")  # L1 (onboarding) is stored but never displayed
BLOCKING_LEVEL = "L4"


class Verdict(enum.StrEnum):
    """A job's displayed state; each has one fixed colour everywhere."""

    SUCCESS = "success"
    FAILURE = "failure"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    RUNNING = "running"
    NO_REPORT = "no_report"  # still in_progress past the silence threshold, or an unknown conclusion


FAILED_VERDICTS = frozenset({Verdict.FAILURE, Verdict.TIMED_OUT})


def verdict(status: str, conclusion: str | None, *, silent: bool) -> Verdict:
    """A record's verdict from its status and conclusion; ``silent`` = in progress past the threshold."""
    if status != "completed":
        return Verdict.NO_REPORT if silent else Verdict.RUNNING
    try:
        return Verdict(conclusion or "")
    except ValueError:
        # Conclusions such as "skipped", "neutral" or "action_required" say nothing about the backend's health.
        return Verdict.NO_REPORT
