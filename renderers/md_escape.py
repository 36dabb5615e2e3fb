"""Make untrusted text inert in GitHub Markdown: no markup, no mention, no link, no image, no broken table.

Two layers, because GitHub processes a comment twice: cmark-gfm parses the Markdown (tables, links,
autolinks, HTML), then HTML filters walk the rendered *text nodes* (mentions, ``#123`` references, emoji,
URL autolinking). Numeric character references defeat the first layer (CommonMark treats ``&#42;`` as a
literal ``*``, never as markup) but are decoded before the second layer sees the text. So the characters
those filters key on (``@``, ``#``, ``:`` and ``www.``) also get a ZERO WIDTH SPACE right after them:
``@&#8203;user`` is text ``@\u200buser`` in every layer, which no mention pattern matches (the same trick
Renovate and Dependabot use in release notes they quote).
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote, urlsplit

NAME_MAX_CHARS = 100
URL_MAX_CHARS = 2048
ELLIPSIS = "…"
ZWSP = "&#8203;"

# C0/C1 controls, DEL, bidi embeddings/overrides/isolates (U+202A–U+202E, U+2066–U+2069), the implicit
# direction marks and BOM: removed, they could reorder or hide what a reader sees.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_BREAKS = re.compile("[\t\n\r\u2028\u2029\x85]+")
_WWW = re.compile(r"(?i)(www)\.")

# Every character Markdown, GFM tables or HTML give a meaning inline -> a numeric reference (inert text).
_ENTITIES = {
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
    "\\": "&#92;", "`": "&#96;", "*": "&#42;", "_": "&#95;", "[": "&#91;", "]": "&#93;",
    "(": "&#40;", ")": "&#41;", "!": "&#33;", "~": "&#126;", "|": "&#124;", "$": "&#36;",
    "{": "&#123;", "}": "&#125;", "^": "&#94;",
    # Also break the HTML-filter patterns (mentions, issue references, emoji / URL schemes).
    "@": "&#64;" + ZWSP, "#": "&#35;" + ZWSP, ":": "&#58;" + ZWSP,
}
_ESCAPE_TABLE = str.maketrans(_ENTITIES)

_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::\d{1,5})?$")
# Kept literally in a URL we output; everything else (spaces, ( ) < > | [ ] " ' ` \ { } ^ and non-ASCII)
# is percent-encoded, so a URL can neither end a Markdown link early nor split a table cell.
_URL_SAFE = "/%:@&=+$,;!*-._~"


def clean(value: object, *, max_chars: int = NAME_MAX_CHARS) -> str:
    """Untrusted text -> one line of plain text: no controls or bidi overrides, at most ``max_chars`` + "…"."""
    text = _BREAKS.sub(" ", "" if value is None else str(value))
    text = _INVISIBLE.sub("", text).strip()
    if len(text) > max_chars:
        text = text[:max_chars].rstrip() + ELLIPSIS
    return text


def md_text(value: object, *, max_chars: int = NAME_MAX_CHARS, empty: str = "–") -> str:
    """Untrusted text -> inert inline Markdown, safe inside a table cell and inside ``<details>``."""
    if type(value) is str and len(value) <= _MEMO_MAX_CHARS:
        return _md_text(value, max_chars, empty)
    return _md_text.__wrapped__(value, max_chars, empty)


# A PR's comment escapes the same backend, workflow and job names and links the same URLs many times:
# memoise the pure functions for short strings (bounded: at most ~1,000 entries of <= 2,048 characters).
_MEMO_MAX_CHARS = URL_MAX_CHARS


@functools.lru_cache(maxsize=1024)
def _md_text(value: object, max_chars: int, empty: str) -> str:
    text = clean(value, max_chars=max_chars)
    if not text:
        return empty
    return _WWW.sub(r"\1" + ZWSP + ".", text.translate(_ESCAPE_TABLE))


def safe_url(value: object, *, allow_http: bool = False) -> str | None:
    """A URL worth linking, percent-encoded for Markdown; None unless it is absolute https (or http when
    ``allow_http``, for our own configured base URL) with a plain host and no credentials."""
    if not isinstance(value, str) or not value or len(value) > URL_MAX_CHARS:
        return None
    return _safe_url(value, allow_http)


@functools.lru_cache(maxsize=1024)
def _safe_url(value: str, allow_http: bool) -> str | None:
    if _INVISIBLE.search(value) or _BREAKS.search(value) or value != value.strip():
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme.lower() not in schemes or not _HOST.match(parts.netloc or ""):
        return None
    url = f"{parts.scheme.lower()}://{parts.netloc}{quote(parts.path, safe=_URL_SAFE)}"
    if parts.query:
        url += "?" + quote(parts.query, safe=_URL_SAFE + "?")
    if parts.fragment:
        url += "#" + quote(parts.fragment, safe=_URL_SAFE + "?")
    return url


def md_link(label: str, url: object, *, allow_http: bool = False) -> str:
    """``[label](url)`` when ``url`` is safe, else nothing. ``label`` must be our own Markdown."""
    checked = safe_url(url, allow_http=allow_http)
    return f"[{label}]({checked})" if checked else ""


def path_segment(value: str) -> str:
    """One URL path segment, percent-encoded (for URLs we build from repo names)."""
    return quote(value, safe="")
