"""A backend's README badge: a small shields-style SVG with its PR pass rate over 7 days (pure).

The value's colour is the pass-rate chip's (>= 95 % green, >= 80 % amber, else red; grey without data). The
SVG carries no text from downstream (only our label and a number), no script and no external reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import escape

from renderers.policy import format_pass_rate, pass_rate, pass_rate_band

BADGE_DAYS = 7
LABEL = f"OOT PR pass rate {BADGE_DAYS}d"
# The chips' colours (style.css), dark enough for white text.
BAND_COLOUR = {"green": "#1a7f37", "amber": "#9a6700", "red": "#cf222e", "grey": "#59636e"}
_CHAR_WIDTH = 6.6  # Verdana 11px, on average: the width need not be exact, only enough
_PAD = 6


def badge_rate(daily: Iterable[Mapping[str, Any]]) -> float | None:
    """The PR pass rate from ``oot_daily_pass_rate`` rows (kind 'pr') of one backend."""
    passed = failed = timed_out = 0
    for row in daily:
        if str(row["kind"]) == "pr":
            passed, failed, timed_out = (passed + int(row["passed"]), failed + int(row["failed"]),
                                         timed_out + int(row["timed_out"]))
    return pass_rate(passed, failed, timed_out)


def render_badge(rate: float | None) -> str:
    """The SVG text: a grey label, the rate on the chip colour of its band ("no data" without any)."""
    value = "no data" if rate is None else format_pass_rate(rate).replace(" ", "")
    colour = BAND_COLOUR[pass_rate_band(rate)]
    left = round(len(LABEL) * _CHAR_WIDTH) + 2 * _PAD
    right = round(len(value) * _CHAR_WIDTH) + 2 * _PAD
    width = left + right
    text = f"{LABEL}: {value}"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{escape(text)}"><title>{escape(text)}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2:.1f}" y="14">{escape(LABEL)}</text>'
        f'<text x="{left + right / 2:.1f}" y="14" data-band="{pass_rate_band(rate)}">{escape(value)}</text></g>'
        "</svg>\n"
    )
