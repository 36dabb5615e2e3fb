"""Display policies shared by every renderer (one implementation each; see ARCHITECTURE.md "Policies").

The merge gate (the check run's blocking rules) is one table in ``policy/gate.py``'s docstring, the same as
README "Blocking rules", with a test per row in ``tests/test_gate.py``; it sits in the bottom layer because
the bot and the pages both apply it.
"""

from __future__ import annotations

from policy.verdicts import BLOCKING_LEVEL, FAILED_VERDICTS, LEVELS_SHOWN_ON_PR, Verdict, verdict

# The verdict and level rules live in the bottom layer (policy/), so SQL can read them too; re-exported here
# for the renderers.
__all__ = ["BLOCKING_LEVEL", "FAILED_VERDICTS", "LEVELS_SHOWN_ON_PR", "VERDICT_COLOUR", "Verdict",
           "format_duration", "format_pass_rate", "pass_rate", "pass_rate_band", "verdict"]

VERDICT_COLOUR = {
    Verdict.SUCCESS: "green", Verdict.FAILURE: "red", Verdict.TIMED_OUT: "amber",
    Verdict.CANCELLED: "amber", Verdict.RUNNING: "blue", Verdict.NO_REPORT: "grey",
}


def pass_rate(success: int, failure: int, timed_out: int) -> float | None:
    """success / (success + failure + timed_out) over final attempts; None when nothing completed."""
    judged = success + failure + timed_out
    return None if judged == 0 else success / judged


def pass_rate_band(rate: float | None) -> str:
    """Chip colour for a pass rate: >= 95 % green, >= 80 % amber, else red; grey when there is none."""
    if rate is None:
        return "grey"
    if rate >= 0.95:
        return "green"
    if rate >= 0.80:
        return "amber"
    return "red"


def format_pass_rate(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f} %"


def format_duration(seconds: float | None) -> str:
    """Human-readable: 45s, 41m, 2h 05m, 3d 4h; '' when unknown."""
    if seconds is None or seconds < 0:
        return ""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, _ = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"
