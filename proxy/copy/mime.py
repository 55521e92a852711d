"""A MIME body cut into verbatim bytes and decoded text parts, and put back byte-faithfully."""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message as EmailMessage

from proxy.copy.head import Head, read_head
from proxy.message import split

# RFC 5322 §2.1.1: a line is at most 998 characters (1000 with CRLF).
MAX_LINE = 998
# Nesting deeper than this is not mail a person reads: passed through untouched.
MAX_DEPTH = 20


@dataclass
class TextPart:
    """One text/plain or text/html part, decoded; rendered again in its own encoding."""

    subtype: str  # "plain" | "html"
    charset: str
    encoding: str  # 7bit | 8bit | binary | quoted-printable | base64
    text: str
    trailer: bytes  # the CRLF (or nothing) after the encoded content, kept as it was
    original: bytes = b""  # the part's body as it came: what an unchanged part renders to
    language: str = ""  # Content-Language of the part or, failing that, of the message
    # Quoted-printable lines of the original text, encoded once: in each copy most
    # lines are unchanged (only the lines with links differ), so they cost a lookup.
    _qp_lines: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    def encodable(self, text: str) -> bool:
        """Whether ``text`` can be written in this part's charset and transfer encoding."""
        try:
            raw = text.encode(self.charset)
        except UnicodeError:
            return False
        # A "7bit" part that already holds 8-bit text (sloppy, and common) may take more.
        return self.encoding != "7bit" or raw.isascii() or not self.text.isascii()

    def render(self, text: str) -> bytes:
        """``text`` encoded as this part was: same charset, same transfer encoding."""
        if text == self.text and self.original:
            return self.original  # nothing changed here: the very bytes that came
        raw = text.encode(self.charset)
        if self.encoding == "base64":
            out = base64.encodebytes(raw).replace(b"\n", b"\r\n")
            return out[:-2] + self.trailer if out.endswith(b"\r\n") else out + self.trailer
        if self.encoding == "quoted-printable":
            if not self._qp_lines:
                for line in self.text.encode(self.charset).split(b"\r\n"):
                    self._qp_lines[line] = _qp_line(line)
            known = self._qp_lines
            return b"\r\n".join(known.get(line) or _qp_line(line)
                                 for line in raw.split(b"\r\n")) + self.trailer
        return _fold(raw) + self.trailer


@dataclass
class Body:
    """The body as pieces: bytes kept verbatim, and the text parts that may change."""

    pieces: list[bytes | TextPart] = field(default_factory=list)
    unparsed: int = 0  # parts heed could not read: passed through untouched

    @property
    def parts(self) -> list[TextPart]:
        return [p for p in self.pieces if isinstance(p, TextPart)]

    def render(self, text_of: Callable[[TextPart], str]) -> bytes:
        """The body with each text part written from ``text_of(part)``."""
        return b"".join(p if isinstance(p, bytes) else p.render(text_of(p)) for p in self.pieces)


def parse_body(header_block: bytes, body: bytes, head: Head | None = None) -> Body:
    """Cut ``body`` (of a message with ``header_block``) into verbatim and text pieces;
    ``head``: that header block, read already."""
    out = Body()
    _walk((head or read_head(header_block)).fields, body, out, 0, "")
    return out


def _walk(headers: EmailMessage, body: bytes, out: Body, depth: int, language: str) -> None:
    language = _language(headers) or language
    ctype = headers.get_content_type()
    if depth > MAX_DEPTH:
        out.pieces.append(body)
        out.unparsed += 1
    elif ctype.startswith("multipart/"):
        _multipart(headers, body, out, depth, language)
    elif ctype in ("text/plain", "text/html") and headers.get_content_disposition() != "attachment":
        part = _text(headers, body, ctype[5:], language)
        if part is None:
            out.unparsed += 1
        out.pieces.append(part if part is not None else body)
    else:
        out.pieces.append(body)


def _multipart(headers: EmailMessage, body: bytes, out: Body, depth: int, language: str) -> None:
    boundary = headers.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        out.pieces.append(body)
        out.unparsed += 1
        return
    # RFC 2046 §5.1.1: a delimiter is CRLF "--" boundary at a line start (the CRLF
    # before it belongs to it), optional whitespace, then CRLF; "--" after it closes.
    delim = re.compile(rb"(?:^|\r\n)--" + re.escape(boundary.encode("ascii", "replace"))
                       + rb"(--)?[ \t]*(?:\r\n|$)")
    marks = list(delim.finditer(body))
    closing = next((i for i, m in enumerate(marks) if m.group(1)), None)
    if not marks or closing is None or closing == 0:
        out.pieces.append(body)
        out.unparsed += 1
        return
    out.pieces.append(body[:marks[0].end()])
    for this, after in zip(marks[:closing], marks[1:closing + 1], strict=True):
        _part(body[this.end():after.start()], out, depth, language)
        out.pieces.append(body[after.start():after.end()])
    out.pieces.append(body[marks[closing].end():])


def _part(raw: bytes, out: Body, depth: int, language: str) -> None:
    if not raw.startswith(b"\r\n") and b"\r\n\r\n" not in raw:
        # No empty line after the part's header block: not a part we can read.
        out.pieces.append(raw)
        out.unparsed += 1 if raw else 0
        return
    head, content = split(raw)
    out.pieces.append(head + b"\r\n" if head else b"\r\n")
    _walk(read_head(head).fields, content, out, depth + 1, language)


def _language(headers: EmailMessage) -> str:
    # RFC 3282: Content-Language lists tags; the first one's primary subtag is enough here.
    value = str(headers.get("Content-Language", "") or "")
    return value.split(",")[0].strip().split("-")[0].lower()


def _text(headers: EmailMessage, body: bytes, subtype: str, language: str) -> TextPart | None:
    encoding = str(headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    charset = headers.get_content_charset("us-ascii") or "us-ascii"
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        return None
    content, trailer = (body[:-2], b"\r\n") if body.endswith(b"\r\n") else (body, b"")
    try:
        if encoding == "base64":
            raw = base64.b64decode(b"".join(content.split()), validate=True)
        elif encoding == "quoted-printable":
            raw = binascii.a2b_qp(content)
        elif encoding in ("7bit", "8bit", "binary"):
            raw = content
        else:
            return None
        text = raw.decode(charset)
    except (binascii.Error, ValueError, UnicodeError):
        return None
    if text.encode(charset) != raw:
        return None  # a charset that does not round-trip (stateful escapes): leave it alone
    return TextPart(subtype, charset, encoding, text, trailer, body, language)


def _qp_line(line: bytes) -> bytes:
    """One line in quoted-printable, soft breaks at 76 (RFC 2045 §6.7); the caller joins
    lines with CRLF hard breaks."""
    # b2a_qp writes soft breaks as "=\n": RFC 2045 wants CRLF on the wire.
    out = binascii.b2a_qp(line, quotetabs=False, istext=False, header=False).split(b"=\n")
    return b"=\r\n".join(_no_dash_start(out))


def _no_dash_start(lines: list[bytes]) -> list[bytes]:
    """No encoded line starts with "-": re-encoding joins what soft breaks split, and a
    line "--boundary" would end the part early (RFC 2046 §5.1.1); "=2D" is the same
    octet (RFC 2045 §6.7 rule 1). A line pushed past 76 is broken again, never inside
    an "=XX" escape."""
    done: list[bytes] = []
    for i, physical in enumerate(lines):
        last = i == len(lines) - 1  # the others get "=" back from the join
        while physical.startswith(b"-"):
            physical = b"=2D" + physical[1:]
            if len(physical) + (0 if last else 1) <= 76:
                break
            cut = 75
            while b"=" in physical[cut - 2:cut]:
                cut -= 1
            done.append(physical[:cut])
            physical = physical[cut:]
        done.append(physical)
    return done


def _fold(raw: bytes) -> bytes:
    """Lines over 998 octets broken at their last space before the limit (RFC 5322 §2.1.1)."""
    if all(len(line) <= MAX_LINE for line in raw.split(b"\r\n")):
        return raw
    out = []
    for line in raw.split(b"\r\n"):
        while len(line) > MAX_LINE:
            cut = line.rfind(b" ", 1, MAX_LINE)
            cut = cut if cut > 0 else MAX_LINE
            out.append(line[:cut])
            line = line[cut:]
        out.append(line)
    return b"\r\n".join(out)
