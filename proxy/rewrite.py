"""Per-recipient List-Unsubscribe and List-Unsubscribe-Post header fields (RFC 2369, RFC 8058)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from proxy.message import split as split_message

__all__ = ["RewriteResult", "add_unsubscribe", "header_fields", "split_message",
           "unsubscribe_fields", "without"]

LIST_UNSUBSCRIBE = b"List-Unsubscribe"
LIST_UNSUBSCRIBE_POST = b"List-Unsubscribe-Post"
# RFC 8058 §3.1: exactly this value, and it is what the one-click POST body carries.
ONE_CLICK = b"List-Unsubscribe=One-Click"
# RFC 5322 §2.1.1: lines SHOULD stay within 78 characters (998 is the hard limit).
MAX_LINE = 78

# A field ends with a CRLF not followed by WSP (RFC 5322 §2.2.3: a continuation starts with
# WSP). Split at that CRLF rather than at a look-behind after it: a pattern that starts
# with a literal is searched for its prefix, not tried at every offset (4x fewer
# instructions on a copy's header block, three times a copy).
_FIELD_END = re.compile(rb"\r\n(?![ \t])")
_HTTP_URI = re.compile(rb"<\s*(https?://[^>\s]+)\s*>", re.IGNORECASE)
_OURS = (LIST_UNSUBSCRIBE.lower(), LIST_UNSUBSCRIBE_POST.lower())


@dataclass(frozen=True)
class RewriteResult:
    """The new header block and the tool's own http(s) unsubscribe URIs it replaced."""

    headers: bytes
    replaced: list[str] = field(default_factory=list)  # for an optional "sync back" call
    kept: bool = False  # True when existing="keep" left the tool's own field alone


def header_fields(header_block: bytes) -> list[bytes]:
    """The raw fields of a header block, each with its continuation lines and final CRLF."""
    pieces = _FIELD_END.split(header_block)
    last = pieces.pop()  # after the last field's CRLF: b"", or a last line without one
    fields = [f + b"\r\n" for f in pieces]
    if last:
        fields.append(last)
    return fields


def field_name(raw: bytes) -> bytes:
    """The lower-cased name of a raw field (b"" for a line without a colon)."""
    name, colon, _ = raw.partition(b":")
    return name.rstrip(b" \t").lower() if colon else b""


def add_unsubscribe(
    header_block: bytes, *, https_url: str, mailto: str, existing: str = "replace"
) -> RewriteResult:
    """Write both unsubscribe fields; ``existing`` is "replace" (the tool's own go) or "keep"."""
    if existing not in ("replace", "keep"):
        raise ValueError(f"existing must be 'replace' or 'keep', not {existing!r}")
    fields = header_fields(header_block)
    theirs = [f for f in fields if field_name(f) in _OURS]
    if existing == "keep" and any(field_name(f) == _OURS[0] for f in theirs):
        return RewriteResult(headers=header_block, kept=True)
    replaced = [
        uri.decode("ascii", errors="replace")
        for f in theirs
        if field_name(f) == _OURS[0]
        for uri in _HTTP_URI.findall(_unfold(f))
    ]
    kept = [f for f in fields if field_name(f) not in _OURS]
    # At the end of the block, not the top: the top holds the trace blocks
    # (Received, Return-Path: RFC 5322 §3.6.7) that MTAs keep contiguous, and
    # the List-* fields a tool writes sit with its other fields below them.
    # Position does not matter to DKIM: h= selects fields by name and only the
    # order among same-name fields counts (RFC 6376 §5.4.2); we leave one of each.
    return RewriteResult(headers=b"".join(kept) + unsubscribe_fields(https_url, mailto),
                         replaced=replaced)


def unsubscribe_fields(https_url: str, mailto: str) -> bytes:
    """heed's List-Unsubscribe and List-Unsubscribe-Post fields, as add_unsubscribe writes them."""
    if not mailto.lower().startswith("mailto:"):
        mailto = "mailto:" + mailto
    return _list_unsubscribe(https_url, mailto) + LIST_UNSUBSCRIBE_POST + b": " + ONE_CLICK \
        + b"\r\n"


def without(header_block: bytes, names: frozenset[bytes]) -> bytes:
    """The header block less every field with one of these lower-case names."""
    return b"".join(f for f in header_fields(header_block) if field_name(f) not in names)


def _list_unsubscribe(https_url: str, mailto: str) -> bytes:
    """``List-Unsubscribe: <https…>, <mailto…>``, https first (RFC 8058 §3.1 needs it)."""
    uris = []
    for uri in (https_url, mailto):
        raw = uri.encode("ascii")  # tokens are base64url: a non-ASCII URI is a caller bug
        if any(c in raw for c in b"<>\r\n\t ,"):
            raise ValueError(f"not a bare URI: {uri!r}")
        uris.append(b"<" + raw + b">")
    line = LIST_UNSUBSCRIBE + b": " + b", ".join(uris)
    if len(line) <= MAX_LINE:
        return line + b"\r\n"
    # Fold between the URIs (RFC 2369 §2 lets a list be folded there); a single
    # URI longer than 78 characters stays on one line, well under 998.
    return LIST_UNSUBSCRIBE + b": " + b",\r\n ".join(uris) + b"\r\n"


def _unfold(raw: bytes) -> bytes:
    return raw.partition(b":")[2].replace(b"\r\n", b"")
