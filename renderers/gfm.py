"""GitHub-flavoured Markdown -> HTML as GitHub shows a comment or a check run's output (pure).

cmark-gfm (GitHub's own parser, through ``cmarkgfm``) with its extensions, raw HTML kept as GitHub keeps it
(our comment uses ``<details>``, ``<summary>``, ``<sub>``), then the result sanitised with an allowlist in the
spirit of GitHub's (``nh3``, Ammonia): no script, style, iframe, form or event attribute, links only to
http(s)/mailto, marked ``nofollow``. The page's own CSP still blocks any external image.
"""

from __future__ import annotations

import cmarkgfm
import nh3
from cmarkgfm.cmark import Options
from markupsafe import Markup

# GitHub's sanitiser allows roughly these (html-pipeline's SanitizationFilter): text, lists, tables, code, the
# <details> disclosure; never scripts, styles, forms, frames or media.
ALLOWED_TAGS = {
    "h1", "h2", "h3", "h4", "h5", "h6", "br", "b", "i", "strong", "em", "a", "pre", "code", "img", "tt", "div",
    "ins", "del", "sup", "sub", "p", "ol", "ul", "table", "thead", "tbody", "tfoot", "blockquote", "dl", "dt",
    "dd", "kbd", "q", "samp", "var", "hr", "ruby", "rt", "rp", "li", "tr", "td", "th", "s", "strike", "summary",
    "details", "caption", "figure", "figcaption", "abbr", "bdo", "cite", "dfn", "mark", "small", "span", "time",
    "wbr",
}
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"}, "img": {"src", "alt", "title", "width", "height"}, "details": {"open"},
    "td": {"align"}, "th": {"align"}, "ol": {"start"}, "blockquote": {"cite"}, "q": {"cite"},
    "time": {"datetime"}, "abbr": {"title"},
}
URL_SCHEMES = {"http", "https", "mailto"}


def render_gfm(markdown: str) -> Markup:
    """The HTML GitHub would show for ``markdown`` (sanitised: safe to put in a page as it is)."""
    html = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    clean = nh3.clean(html, tags=ALLOWED_TAGS, attributes=ALLOWED_ATTRIBUTES, url_schemes=URL_SCHEMES,
                      link_rel="nofollow noopener noreferrer", strip_comments=True)
    return Markup(clean)  # noqa: S704 - sanitised above
