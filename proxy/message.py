"""The message as heed reads it: line endings made safe first, header block parsed once."""

from __future__ import annotations

import io
import quopri
import re
from dataclasses import dataclass
from email import message_from_bytes
from email.generator import BytesGenerator
from email.policy import compat32

# Every bare CR or bare LF becomes CRLF before anything else reads the message.
# SMTP smuggling (CVE-2023-51764 and kin) hides a second message behind a
# non-standard end of data such as <LF>.<LF>; aiosmtpd ends DATA only at
# <CRLF>.<CRLF> but keeps bare CR/LF inside. Once normalised, a smuggled "."
# line is ordinary text that the upstream client dot-stuffs (RFC 5321 §4.5.2).
_LINE_END = re.compile(rb"\r\n|\r|\n")
_HEADER_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")  # RFC 5322 §2.2 ftext
_FIELD_END = re.compile(rb"\r\n(?![ \t])")  # a CRLF not followed by WSP ends a field
# RFC 5322 §2.1.1 / RFC 5321 §4.5.3.1.6: at most 998 octets a line, CRLF aside.
# Parsed and written back as they came (no refolding): only the re-encoded parts change.
_AS_IS = compat32.clone(linesep="\r\n", max_line_length=0)


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


def has_long_lines(body: bytes) -> bool:
    """Whether a line of ``body`` is longer than the 998 octets SMTP allows."""
    # bytes.splitlines() breaks at CR, LF and CRLF only: its pieces are the runs of
    # octets between line ends, in one pass (a regex for 999 such octets retried at
    # every offset of every line: a twentieth of heed's CPU per message).
    return len(body) > 998 and max(map(len, body.splitlines())) > 998


def fit_long_lines(data: bytes) -> bytes:
    """Each part with lines over 998 octets re-encoded quoted-printable (RFC 2045 §6.7).

    A relay may wrap such lines (Postfix inserts CRLF SPACE at ``smtp_line_length_limit``),
    which changes the body a DKIM signature covers; quoted-printable lines are at most 76
    octets and decode to the same content. Parts already in base64 or quoted-printable and
    parts that need no change are written back as they came."""
    message = message_from_bytes(data, policy=_AS_IS)
    changed = False
    for part in message.walk():
        raw = part.get_payload()
        if part.is_multipart() or not isinstance(raw, str):
            continue
        encoding = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
        if encoding not in ("7bit", "8bit", "binary") or not has_long_lines(
                raw.encode("utf-8", "surrogateescape")):
            continue
        content = part.get_payload(decode=True)
        assert isinstance(content, bytes)
        part.set_payload(quopri.encodestring(content.replace(b"\r\n", b"\n")).decode("ascii"))
        del part["Content-Transfer-Encoding"]
        part["Content-Transfer-Encoding"] = "quoted-printable"
        changed = True
    if not changed:
        return data
    if "MIME-Version" not in message:
        message["MIME-Version"] = "1.0"  # RFC 2045 §4: needed for the encoding to count
    out = io.BytesIO()
    BytesGenerator(out, mangle_from_=False, policy=_AS_IS).flatten(message)
    return normalise(out.getvalue())


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
