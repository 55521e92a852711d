"""A header block as the email package reads it, read once per message and cheaply."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from email.message import Message as EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import NamedTuple

# The link check, the footer and the tracked links all ask the same questions of the
# header block (Content-Type and its parameters, Content-Transfer-Encoding, -Disposition,
# -Language): they share one email.message.Message (compat32) built from it here.
_PARSER = BytesHeaderParser(policy=compat32)
# email.feedparser's headerRE without its "From " branch: a field line (a name of
# RFC 5322 §2.2 ftext, possibly empty, then ":") or a continuation line (WSP first).
_FIELD = re.compile(r"[\041-\071\073-\176]*:")


class Content(NamedTuple):
    """What a header block says of the content after it (RFC 2045 §5, §6; RFC 2183)."""

    ctype: str  # type/subtype, text/plain when absent or broken (RFC 2045 §5.2)
    attachment: bool
    boundary: str | None
    cte: str  # Content-Transfer-Encoding, lower case, 7bit when absent
    charset: str  # us-ascii when absent


@dataclass(frozen=True)
class Head:
    """The header block's fields; ``whole``: every line of the block is a field or a
    continuation, so the email package's body starts where proxy.message.split cuts."""

    fields: EmailMessage
    whole: bool

    @functools.cached_property
    def content(self) -> Content:
        """Read once per message: each copy's footer asks again."""
        msg = self.fields
        boundary = msg.get_param("boundary")
        return Content(msg.get_content_type(), msg.get_content_disposition() == "attachment",
                       str(boundary) if boundary else None,
                       str(msg.get("Content-Transfer-Encoding", "7bit")).strip().lower(),
                       msg.get_content_charset() or "us-ascii")


def read_head(block: bytes) -> Head:
    """``block`` (a header block with its last CRLF, as split gives it) as
    BytesHeaderParser (compat32) reads it: the same fields with the same values."""
    fields = _fields(block)
    if fields is not None:
        return Head(fields, True)
    # The uncommon shapes (a unix From line, a first line that continues nothing, a
    # line that is no field, bare CR or LF) go the email package's own way, and so does
    # the rest of such a message (whole=False).
    return Head(_PARSER.parsebytes(block), False)


def _fields(block: bytes) -> EmailMessage | None:
    """email.feedparser's _parse_headers and compat32's header_source_parse for a block
    of well-formed lines (None for any other block)."""
    text = block.decode("ascii", "surrogateescape")
    lines = text.split("\r\n")
    if lines.pop() != "" or not text.count("\r") == text.count("\n") == len(lines):
        return None  # bare CR or LF: the feed parser ends lines there too
    message = EmailMessage(compat32)
    name, value = "", ""
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not name:
                return None
            value += line + "\r\n"
            continue
        if not line or line.startswith("From ") or not _FIELD.match(line) or line[0] == ":":
            return None
        if name:
            message.set_raw(name, value.rstrip("\r\n"))
        name, _, first = line.partition(":")
        value = first.lstrip(" \t") + "\r\n"
    if name:
        message.set_raw(name, value.rstrip("\r\n"))
    message.set_payload("")
    return message
