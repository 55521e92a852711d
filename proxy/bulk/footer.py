"""A small unsubscribe footer added to the text and HTML parts, MIME kept as it was."""

from __future__ import annotations

import base64
import functools
import html
import quopri
import re

from proxy.bulk.bodylink import Readable, readable
from proxy.copy.head import Content, Head, read_head
from proxy.http.i18n import RTL
from proxy.message import split

# The footer's own words (the pages' texts, proxy/http/i18n.py, name a list; this names none).
LABELS = {"en": "Unsubscribe", "vi": "Hủy đăng ký", "ar": "إلغاء الاشتراك",
          "th": "ยกเลิกการรับอีเมล"}
LEADS = {
    "en": "Don't want these emails any more?",
    "vi": "Không muốn nhận những email này nữa?",
    "ar": "لا تريد هذه الرسائل بعد الآن؟",
    "th": "ไม่ต้องการรับอีเมลเหล่านี้อีกต่อไป?",
}
_HTML_LANG = re.compile(r"<html[^>]*?\blang\s*=\s*[\"']?([a-zA-Z]{2,3})", re.IGNORECASE)
_BODY_END = re.compile(rb"</body\s*>", re.IGNORECASE)


def language(data: bytes | Readable) -> str:
    """The message's language, when heed speaks it: Content-Language (RFC 3282), <html lang>."""
    read = data if isinstance(data, Readable) else readable(data)
    tags = [read.content_language]
    for subtype, text in read.parts:
        found = _HTML_LANG.search(text[:65536]) if subtype == "html" else None
        if found:
            tags.append(found.group(1))
    for tag in tags:
        primary = tag.strip().split(",")[0].split("-")[0].strip().lower()
        if primary in LEADS:
            return primary
    return "en"


def footer_text(url: str, lang: str) -> str:
    return f"\n\n{LEADS[lang]}\n{LABELS[lang]}: {url}\n"


def footer_html(url: str, lang: str) -> str:
    rtl = ' dir="rtl"' if lang in RTL else ""
    return (f'<p lang="{lang}"{rtl} style="font-size:12px;color:#555555;text-align:center">'
            f'{html.escape(LEADS[lang])} <a href="{html.escape(url)}">'
            f"{html.escape(LABELS[lang])}</a></p>")


def insert_footer(data: bytes, url: str, lang: str) -> bytes:
    """The message with the footer in its first text/plain and first text/html part; the
    header block and every other byte stay as they were (DKIM signs the result after)."""
    head, body = split(data)
    new_body = with_footer(read_head(head), body, url, lang)
    return data if new_body is body else head + b"\r\n" + new_body


def with_footer(head: Head, body: bytes, url: str, lang: str) -> bytes:
    """``body`` (of a message whose header block is ``head``) as insert_footer writes it;
    ``body`` itself when no part took the footer."""
    new_body = _part(head.content, body, url, lang, set())
    return body if new_body is None else new_body


# Each recipient's copy gets the footer with its own link: the same part headers are
# read once per message, not once per copy (the email parser is the slow part here).
@functools.lru_cache(maxsize=512)
def _head(head: bytes) -> Content:
    return read_head(head).content


def _part(facts: Content, body: bytes, url: str, lang: str, done: set[str]) -> bytes | None:
    """The part's new body, or None when nothing in it changed."""
    ctype = facts.ctype
    if facts.attachment:
        return None
    if ctype.startswith("multipart/"):
        return _multipart(body, facts.boundary, url, lang, done) if facts.boundary else None
    if ctype not in ("text/plain", "text/html") or ctype in done:
        return None
    new = _leaf(ctype, body, facts.cte, facts.charset, url, lang)
    if new is not None:
        done.add(ctype)
    return new


def _multipart(body: bytes, boundary: str, url: str, lang: str, done: set[str]) -> bytes | None:
    # RFC 2046 §5.1.1: a delimiter is CRLF "--" boundary at the start of a line; the
    # CRLF before it belongs to the delimiter, not to the part.
    delim = re.compile(rb"(?m)^--" + re.escape(boundary.encode("ascii", "replace"))
                       + rb"(--)?[ \t]*(?:\r\n|\Z)")
    marks = list(delim.finditer(body))
    out, pos, changed = [], 0, False
    for here, after in zip(marks, marks[1:], strict=False):
        if here.group(1):  # the close delimiter: the epilogue follows
            break
        start = here.end()
        end = after.start() - 2
        if start > end:
            continue
        phead, pbody = split(body[start:end])
        new = _part(_head(phead), pbody, url, lang, done)
        if new is not None:
            out += [body[pos:start], phead, b"\r\n", new]
            pos, changed = end, True
    return b"".join([*out, body[pos:]]) if changed else None


def _leaf(ctype: str, body: bytes, cte: str, charset: str, url: str, lang: str) -> bytes | None:
    if cte == "base64":
        try:
            raw = base64.b64decode(body, validate=False)
        except ValueError:
            return None
    elif cte == "quoted-printable":
        raw = quopri.decodestring(body)
    elif cte in ("7bit", "8bit", "binary", ""):
        raw = body
    else:
        return None
    try:
        text = raw.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return None
    for tongue in dict.fromkeys((lang, "en")):
        added = _with_footer(ctype, text, url, tongue)
        try:
            encoded = added.encode(charset)
        except UnicodeEncodeError:
            continue
        if cte in ("7bit", "") and not encoded.isascii():
            continue
        return _encode(encoded, cte)
    return None


def _with_footer(ctype: str, text: str, url: str, lang: str) -> str:
    if ctype == "text/plain":
        return text.rstrip("\r\n") + footer_text(url, lang).replace("\n", "\r\n")
    footer = footer_html(url, lang)
    ends = list(_BODY_END.finditer(text.encode("utf-8", "surrogatepass")))
    if ends:
        # Before the last </body> (found on the encoded text, then mapped back).
        cut = len(text.encode("utf-8", "surrogatepass")[:ends[-1].start()].decode(
            "utf-8", "surrogatepass"))
        return text[:cut] + footer + "\r\n" + text[cut:]
    return text.rstrip("\r\n") + "\r\n" + footer + "\r\n"


def _encode(raw: bytes, cte: str) -> bytes:
    if cte == "base64":
        return base64.encodebytes(raw).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        # quopri breaks lines at 76 (RFC 2045 §6.7) and reads LF as a hard line break.
        return quopri.encodestring(raw.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    return raw if raw.endswith(b"\r\n") else raw + b"\r\n"
