"""Is there a visible unsubscribe link in the body? Gmail, Yahoo and Outlook.com require one."""

from __future__ import annotations

import copy
import email
import email.policy
import html
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message

from proxy.copy.head import Head
from proxy.message import split

# The words an unsubscribe link is written with, in the languages heed's pages speak
# and the ones mailing lists commonly use. Matched in the link's text, title or URL.
_WORDS = re.compile(
    r"unsubscribe|unsub\b|opt[\s_-]?out|abmelden|austragen|abbestellen|d[ée]sabonne|"
    r"d[ée]sinscri|darse\s+de\s+baja|dar(?:te|se)?\s+de\s+baja|cancelar\s+(?:la\s+)?suscripci|"
    r"anular\s+(?:la\s+)?suscripci|descadastr|uitschrijven|afmelden|disiscriv|"
    r"cancella(?:re|ti)?\s+(?:l'|la\s+)?iscrizion|wypisz|odhl[áa]s|h[ủu]y\s+đăng\s+ký|"
    r"huỷ\s+đăng\s+ký|hủy\s+nhận|إلغاء\s+الاشتراك|ยกเลิกการ(?:สมัคร|รับ|ติดตาม)|"
    r"配信停止|退订|取消订阅|отписаться|avmeld|avregistrer|afmeld",
    re.IGNORECASE)
_URL = re.compile(r"(?:https?://|mailto:)[^\s<>\"')\]]+", re.IGNORECASE)
_HIDDEN = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?![.\d])",
                     re.IGNORECASE)
_HIDDEN_ATTR = re.compile(r"(?:^|\s)hidden(?:[\s=/]|$)", re.IGNORECASE)
_OPEN = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*)(\s[^>]*)>")
_STYLE = re.compile(r"""\bstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_ANCHOR = re.compile(r"<a\s([^>]*)>(.*?)</a\s*>", re.IGNORECASE | re.DOTALL)
_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_LABELS = re.compile(r"""\b(?:alt|title|aria-label)\s*=\s*(?:"([^"]*)"|'([^']*)')""",
                     re.IGNORECASE)
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())


def unsubscribe_urls(values: Sequence[str]) -> list[str]:
    """The http(s) and mailto URIs of List-Unsubscribe field values (RFC 2369 §2: <uri>, …)."""
    return [u for v in values for u in re.findall(r"<\s*([^>\s]+)\s*>", v)
            if u.lower().startswith(("http://", "https://", "mailto:"))]


def body_parts(message: Message) -> Iterator[tuple[str, str]]:
    """(subtype, text) of each inline text/plain and text/html part (attachments skipped)."""
    for part in message.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if part.get_content_subtype() not in ("plain", "html"):
            continue
        if part.get_content_disposition() == "attachment":
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes):
            continue
        try:
            text = raw.decode(part.get_content_charset() or "us-ascii")
        except (LookupError, UnicodeDecodeError):
            text = raw.decode("utf-8", "replace")
        yield part.get_content_subtype(), text


@dataclass(frozen=True)
class Readable:
    """What a person reads of a message: its text parts decoded, and its Content-Language."""

    parts: tuple[tuple[str, str], ...]  # (subtype, text), as body_parts yields them
    content_language: str


def readable(data: bytes, head: Head | None = None) -> Readable:
    """The message read once by the email package (the link check and the footer's
    language both read this, not the bytes again); ``head``: its header block, read already."""
    if head is not None and head.whole and \
            head.fields.get_content_maintype() not in ("multipart", "message"):
        # A single part: the email package would make the rest of the message its
        # payload as it is, so only the header block needed its parser (shared).
        message = copy.copy(head.fields)
        message.set_payload(split(data)[1].decode("ascii", "surrogateescape"))
    else:
        # compat32: the modern policy parses every header field, a third of the time here.
        message = email.message_from_bytes(data, policy=email.policy.compat32)
    return Readable(tuple(body_parts(message)), str(message.get("Content-Language", "")))


def has_unsubscribe_link(data: bytes | Readable, known: Sequence[str] = ()) -> bool:
    """Whether a person reading the message sees a link to leave: a visible HTML anchor or
    a URL in the text whose words (or URL) say unsubscribe, or that is one of ``known``
    (the tool's own List-Unsubscribe URLs, heed's /u/ base)."""
    read = data if isinstance(data, Readable) else readable(data)
    for subtype, text in read.parts:
        if subtype == "html" and _html_has_link(text, known):
            return True
        if subtype == "plain" and _text_has_link(text, known):
            return True
    return False


def _counts(url: str, words: str, known: Sequence[str]) -> bool:
    url = url.strip()
    if not url.lower().startswith(("http://", "https://", "mailto:")):
        return False
    return bool(_WORDS.search(words) or _WORDS.search(url)
                or any(k and url.startswith(k) for k in known))


def _text_has_link(text: str, known: Sequence[str]) -> bool:
    # Every URL _URL matches has a colon in it ("://", "mailto:") and stays on its line
    # (it stops at \s, which every line end splitlines() knows is): text and lines
    # without a colon are skipped, not scanned at each offset by the case-blind regex.
    if ":" not in text:
        return False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if ":" not in line:
            continue
        for url in _URL.findall(line):
            # The words may stand on the line before: "To unsubscribe, visit:\n<url>".
            before = next((p for p in reversed(lines[max(0, i - 2):i]) if p.strip()), "")
            if _counts(url, line + " " + before, known):
                return True
    return False


def _html_has_link(html: str, known: Sequence[str]) -> bool:
    """A visible anchor that counts. Regular expressions, not a full HTML parse: mail HTML
    is tag soup anyway, and this reads a newsletter several times faster."""
    candidates = [m.start() for m in _ANCHOR.finditer(html)
                  if _counts(_href(m.group(1)), _words(m.group(1), m.group(2)), known)]
    if not candidates:
        return False
    hidden = _hidden_spans(html)
    return any(not any(start <= at < end for start, end in hidden) for at in candidates)


def _hidden_spans(html: str) -> list[tuple[int, int]]:
    """(start, end) of each element a reader cannot see: display:none, visibility:hidden,
    font-size:0 in its style, or a hidden attribute (nested same-name tags are counted)."""
    spans: list[tuple[int, int]] = []
    for m in _OPEN.finditer(html):
        tag, attrs = m.group(1).lower(), m.group(2)
        style = _STYLE.search(attrs)
        if not ((style and _HIDDEN.search(style.group(1) or style.group(2) or ""))
                or _HIDDEN_ATTR.search(attrs)):
            continue
        if tag in _VOID or attrs.rstrip().endswith("/"):
            spans.append((m.start(), m.end()))
            continue
        depth, end = 1, len(html)
        for t in re.finditer(rf"<(/?){re.escape(tag)}\b[^>]*>", html[m.end():], re.IGNORECASE):
            depth += -1 if t.group(1) else 1
            if depth == 0:
                end = m.end() + t.end()
                break
        spans.append((m.start(), end))
    return spans


def _href(attrs: str) -> str:
    m = _HREF.search(attrs)
    return html.unescape(next(g for g in m.groups() if g is not None)) if m else ""


def _words(attrs: str, inner: str) -> str:
    """An anchor's words as a reader meets them: its text, its title and its images' alt."""
    labels = [a or b for a, b in _LABELS.findall(attrs + " " + " ".join(_TAG.findall(inner)))]
    return html.unescape(" ".join([_TAG.sub(" ", inner), *labels]))
