"""The relay's canary: a downstream repository whose jobs are meant to fail, be cancelled or time out.

Upstream keeps one (its jobs' names say what they expect: ``xfail``, ``xcancel``, ``xtimeout``), so that "the
relay carried every outcome back" can be told apart from "a backend is broken". A canary job is **as expected**
when it completed with the outcome its name asks for:

=====================  =============================
the job's name holds   expected conclusion
=====================  =============================
``xfail``              ``failure``
``xcancel``            ``cancelled``
``xtimeout``           ``timed_out``
none of them           ``success``
=====================  =============================

Names match without regard to ASCII case; a name holding several markers accepts any of their outcomes.
Stricter than upstream on purpose: upstream also counts ``success`` as expected for a marked job, so a relay
that reported every job as passed would look healthy there; here a marked job that passes is unexpected.

The saved query ``oot_canary_health`` applies the same rule in SQL (``tests/test_canary.py`` checks both
against one table).
"""

from __future__ import annotations

MARKERS = (("xfail", "failure"), ("xcancel", "cancelled"), ("xtimeout", "timed_out"))
PLAIN_EXPECTED = "success"
RECENT_PRS = 5  # the canary's newest PRs the health line judges (upstream's card looks at 5 as well)


def expected_conclusions(job_name: str) -> frozenset[str]:
    """The conclusions that count as the expected outcome for a canary job of this name."""
    name = job_name.encode("ascii", "replace").decode().lower()  # ASCII case only, as the SQL's
    wanted = frozenset(conclusion for marker, conclusion in MARKERS if marker in name)
    return wanted or frozenset({PLAIN_EXPECTED})


def as_expected(job_name: str, status: str, conclusion: str) -> bool | None:
    """True / False for a completed job; None while it has not completed (not judged yet)."""
    if status != "completed":
        return None
    return conclusion in expected_conclusions(job_name)
