"""The message as heed reads it: line endings made safe first, header block parsed once."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Every bare CR or bare LF becomes CRLF before anything else reads the message.
# SMTP smuggling (CVE-2023-51764 and kin) hides a second message behind a
# non-standard end of data such as <LF>.<LF>; aiosmtpd ends DATA only at
# <CRLF>.<CRLF> but keeps bare CR/LF inside. Once normalised, a smuggled "."
# line is ordinary text that the upstream client dot-stuffs (RFC 5321 §4.5.2).
_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEADER_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")  # RFC 5322 §2.2 ftext
_FIELD_END = re.compile(rb"\r\n(?![ \t])")  # a CRLF not followed by WSP ends a field


class MessageRejected(ValueError):
    """The message cannot be accepted as it is (the SMTP edge maps this to 5xx)."""


def normalise(data: bytes) -> bytes:
    """Bare CR and bare LF -> CRLF; NUL is refused (RFC 5322 §2.3 forbids it)."""
    if b"\x00" in data:
        raise MessageRejected("message contains NUL characters")
    # Every CR is in a CRLF and every LF too exactly when the three counts agree
    # (counting copies nothing; two replace() calls copied the message twice).
    pairs = data.count(b"\r\n")
    if data.count(b"\r") != pairs or data.count(b"\n") != pairs:
        data = _LINE_END.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def split(data: bytes) -> tuple[bytes, bytes]:
    """(header block including its last CRLF, body); a message without a body has b"" body."""
    if data.startswith(b"\r\n"):
        return b"", data[2:]
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return data, b""
    return head + b"\r\n", body


def parse_fields(head: bytes, only: frozenset[bytes] | None = None) -> tuple[tuple[str, str], ...]:
    """(name as written, unfolded value) of each well-formed field of a header block;
    ``only`` keeps just the fields with these lower-case names (the rest are not decoded)."""
    fields: list[tuple[str, str]] = []
    for raw in _FIELD_END.split(head.rstrip(b"\r\n")) if head else []:
        name, colon, value = raw.partition(b":")
        name = name.rstrip(b" \t")
        if only is not None and (not colon or name.lower() not in only):
            continue  # (a name in ``only`` is well-formed: no need to match it)
        if not colon or not _HEADER_NAME.match(name):
            continue  # broken header line: kept in the data, ignored for matching
        text = value.replace(b"\r\n", b"").strip().decode("utf-8", errors="replace")
        fields.append((name.decode("ascii"), text))
    return tuple(fields)


@dataclass(frozen=True)
class Message:
    """A normalised message with its header fields parsed once (unfolded, decoded leniently)."""

    data: bytes
    header_block: bytes
    body: bytes
    fields: tuple[tuple[str, str], ...]  # (name as written, unfolded value)

    @classmethod
    def parse(cls, data: bytes) -> Message:
        head, body = split(data)
        return cls(data=data, header_block=head, body=body, fields=parse_fields(head))

    def get_all(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for fname, value in self.fields if fname.lower() == lname]

    def get(self, name: str, default: str = "") -> str:
        values = self.get_all(name)
        return values[0] if values else default

    @property
    def message_id(self) -> str:
        return self.get("Message-ID").strip()
