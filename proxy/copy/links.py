"""The http(s) links of a text or HTML part, found once per message and filled in per copy."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Skipped in HTML: what is not a link a person follows (RFC 2854 HTML; comments hold
# Outlook's conditional markup, <style> and <script> hold no anchors).
_SKIP = re.compile(rb"<!--.*?-->|<(style|script)\b.*?</\1\s*>".decode(), re.I | re.S)
_ANCHOR = re.compile(r"<(?:a|area)\b[^>]*>", re.I)
_HREF = re.compile(r"""(\bhref\s*=\s*)("[^"]*"|'[^']*'|[^\s"'>]+)""", re.I)
# In plain text a URL ends at whitespace, a quote or an angle bracket (RFC 3986 App. C).
_TEXT_URL = re.compile(r"""https?://[^\s<>"']+""", re.I)
_TRAILING = ".,;:!?)]}'"
_BODY = re.compile(r"<body\b[^>]*>", re.I)


def link_id(url: str) -> str:
    """The short, content-derived id a destination is stored under (128 bits of SHA-256)."""
    return base64.urlsafe_b64encode(hashlib.sha256(url.encode("utf-8")).digest()[:16]) \
        .rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Link:
    """A destination in a template; ``quote`` is the HTML attribute quote it sat in."""

    url: str
    quote: str = ""


Template = list[str | Link]


@dataclass(frozen=True)
class Rules:
    """Which links stay as they are: heed's own, non-http(s), and the stream's exclusions."""

    own_prefix: str  # PUBLIC_URL: heed's unsubscribe, preference and click links
    exclude: Sequence[str] = ()  # globs on the whole URL (track_clicks_exclude)

    def tracks(self, url: str) -> bool:
        low = url.lower()
        if not low.startswith(("http://", "https://")):
            return False  # mailto:, tel:, #anchors, relative links
        if not (url.isascii() and url.isprintable()) or " " in url:
            # It becomes a Location header (RFC 9110 §10.2.2): no spaces, controls (a CR LF
            # would split the response) or raw non-ASCII; such a link is left as it is.
            return False
        if self.own_prefix and low.startswith(self.own_prefix.lower() + "/"):
            return False
        return not any(fnmatch.fnmatchcase(url, pattern) for pattern in self.exclude)


def html_template(text: str, rules: Rules) -> Template:
    """The HTML cut at each tracked href value (entity-decoded for the destination)."""
    out: Template = []
    at = 0
    skips = [m.span() for m in _SKIP.finditer(text)]
    for anchor in _ANCHOR.finditer(text):
        if any(a <= anchor.start() < b for a, b in skips):
            continue
        for href in _HREF.finditer(anchor.group()):
            raw = href.group(2)
            quote = raw[0] if raw[0] in "\"'" else ""
            url = html.unescape(raw.strip("\"'") if quote else raw).strip()
            if not rules.tracks(url):
                continue
            start = anchor.start() + href.start(2)
            out.append(text[at:start])
            out.append(Link(url, quote))
            at = start + len(raw)
    out.append(text[at:])
    return out


def text_template(text: str, rules: Rules) -> Template:
    """Plain text cut at each tracked URL (trailing punctuation is not part of it)."""
    if "://" not in text:
        # No URL to find: the case-blind pattern would be tried at every offset for
        # nothing (420 k instructions on smtp-source's 4 kB body, against 6 k for this).
        return [text]
    out: Template = []
    at = 0
    for m in _TEXT_URL.finditer(text):
        url = m.group()
        while url and url[-1] in _TRAILING and not (url[-1] == ")" and "(" in url):
            url = url[:-1]
        if not rules.tracks(url):
            continue
        out.append(text[at:m.start()])
        out.append(Link(url))
        at = m.start() + len(url)
    out.append(text[at:])
    return out


def fill(template: Template, new_url: Callable[[str], str]) -> str:
    """The text with each link's destination replaced by ``new_url(destination)``."""
    return "".join(p if isinstance(p, str) else p.quote + new_url(p.url) + p.quote
                   for p in template)


def links(template: Template) -> list[str]:
    return [p.url for p in template if isinstance(p, Link)]


def after_body_tag(text: str) -> int:
    """Where content starts in an HTML document: after <body …>, else at the start."""
    m = _BODY.search(text)
    return m.end() if m else 0
