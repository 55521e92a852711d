"""Reading a bounce as MTAs write it: RFC 3464 blocks, or the prose of one that has none.

An RFC 3464 report names each recipient in a block (Final-Recipient, Action,
Status, Diagnostic-Code). Many MTAs (Exim, qmail, Exchange 2003, Domino, IMail,
Gmail, Yahoo, mail.ru…) send prose instead: a notice naming the failed addresses,
each followed by the remote server's words, then the returned message. This
module finds, either way, who failed and what was said about them; the reason is
bounce_reasons' business.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import re
from dataclasses import dataclass, field

from proxy.keys import normalise_address
from proxy.state import is_address

# The lookbehind starts a match only where a run of local-part characters starts: without
# it, a long run with no "@" (anyone can mail a bounce) is rescanned from each of its
# characters, quadratic time on the event loop. The matches are the same.
_ADDRESS = re.compile(r"(?<![A-Za-z0-9.!#$%&'*+/=?^_`{|}~-])"
                      r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# Where the returned original starts in a prose bounce (the notice is above it).
_ORIGINAL = re.compile(
    r"^(?:[ \t]*-{2,}.*(?:original|copy of|below this line|returned|headers? of|"
    r"message follows|undelivered message).*"
    r"|.*(?:original message|message headers?|headers of the original|"
    r"copy of the message|unsent message|returned message).*(?:follow|below|:)\s*-*\s*"
    r"|[ \t]*Content-Type:\s*message/rfc822.*)$",
    re.IGNORECASE | re.MULTILINE)
_HEADER = re.compile(r"^(?:Return-Path|Received|Message-I[dD]|From|To|Date|Subject|"
                     r"X-[\w-]+|MIME-Version|Content-Type|Delivered-To):", re.IGNORECASE)
# Addresses in a notice that are not the failed recipient: the sender and the mailer.
_NOT_RECIPIENT = re.compile(r"(?:(?:mail from|from|sender|return-path|envelope-from|reply-to|"
                            r"message-id|in-reply-to|references)\s*[:=]?\s*<?\s*"
                            r"|contact\s*<?|[/=&%])$", re.IGNORECASE)
# "  To: …" in a notice quotes the original's header, not a failed recipient.
_QUOTED_HEADER = re.compile(r"\s*(?:to|cc)\s*:\s*(?:[^<\n]*<)?", re.IGNORECASE)
_MAILER = re.compile(r"^(?:mailer-daemon|postmaster|double-bounce|bounce|no-?reply|"
                     r"abuse|root)[@+]", re.IGNORECASE)
_BLOCK_LINES = 12
MAX_NOTICE = 1024 * 1024  # characters of a notice read as prose
MAX_NAMED = 1000  # addresses looked at in one notice
MAX_LINE = 4096  # characters of a line looked back over for what precedes an address
_IN_URL = re.compile(r"[/=&%?]")  # a link's query (SNS's "&Endpoint=…"), not a recipient
_TAG = re.compile(r"<[^>]*>|&nbsp;")
_UNFOLD = re.compile(r"\r?\n[ \t]+")


@dataclass
class Failure:
    """One recipient the report says failed (or was delayed), with what was said."""

    address: str | None
    action: str = "failed"
    status: str = ""
    diagnostic: str = ""
    remote: str = ""  # Remote-MTA (RFC 3464 §2.3.5): which provider said it


@dataclass
class Reading:
    """What a report says: its kind, the failures or feedback, the notice, the original."""

    kind: str = ""  # "dsn" (delivery-status) | "arf" | "" (prose or nothing)
    failures: list[Failure] = field(default_factory=list)
    feedback: list[email.message.Message] = field(default_factory=list)
    notice: str = ""  # the human-readable part, above the returned original
    original: str = ""  # the returned original (headers at least), where heed's tokens are
    failed_header: list[str] = field(default_factory=list)  # X-Failed-Recipients
    attached: bool = False  # the original came as a message/rfc822 part
    headers: email.message.Message | None = None


def address_of(value: object) -> str | None:
    """``rfc822; <ana@example.org>`` -> ana@example.org (RFC 3464 §2.3.2), or None."""
    if not value:
        return None
    _, _, text = str(value).rpartition(";")
    found = _ADDRESS.search(text)
    if not found:
        return None
    addr = normalise_address(found.group(0).strip(".'\""))
    return addr if is_address(addr) else None


def fields(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, email.message.Message)]
    raw = part.get_payload(decode=True) or b""
    blocks = re.split(rb"\r?\n\s*\r?\n", bytes(raw))
    return [email.message_from_bytes(b.strip() + b"\n") for b in blocks if b.strip()]


def _text(part: email.message.Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n".join(str(p) for p in payload if isinstance(p, email.message.Message))
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return str(payload)
    charset = part.get_content_charset() or "utf-8"
    if b"\x1b$" in raw:
        charset = "iso-2022-jp"  # Japanese mail without a charset label (RFC 1468)
    try:
        return raw.decode(charset, "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _dsn(part: email.message.Message, out: Reading) -> None:
    blocks = fields(part)
    # The first block is per message (RFC 3464 §2.2); some MTAs write one block only,
    # or put the recipient's fields in the first.
    blocks = [b for i, b in enumerate(blocks)
              if i > 0 or len(blocks) == 1 or b.get("Final-Recipient") or b.get("Action")]
    for block in blocks:
        address = address_of(block.get("Original-Recipient")) or address_of(
            block.get("Final-Recipient")) or address_of(block.get("X-Actual-Recipient"))
        diagnostic = _UNFOLD.sub(" ", str(block.get("Diagnostic-Code", "") or ""))
        if "\x1b$" in diagnostic:  # raw ISO-2022-JP in a header (RFC 1468)
            diagnostic = diagnostic.encode("latin-1", "replace").decode("iso-2022-jp",
                                                                       "replace")
        if ";" in diagnostic[:12]:
            diagnostic = diagnostic.split(";", 1)[1]  # "smtp; 550 …" (§2.3.6)
        action = str(block.get("Action", "") or "").strip().lower() or "failed"
        if address or block.get("Status") or diagnostic:
            out.failures.append(Failure(address, action, str(block.get("Status", "") or ""),
                                        diagnostic.strip(),
                                        str(block.get("Remote-MTA", "") or "").strip()))
    if blocks:
        out.kind = "dsn"


def read(data: bytes) -> Reading:
    """The parts of a report; never raises for bad MIME (what cannot be read is left out)."""
    message = email.message_from_bytes(data)
    out = Reading(headers=message)
    out.failed_header = [a for v in message.get_all("X-Failed-Recipients") or []
                         for a in (address_of(x) for x in str(v).split(",")) if a]
    notice, html, original = list[str](), list[str](), list[str]()
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            _dsn(part, out)
        elif ctype == "message/feedback-report":
            out.kind = "arf"
            out.feedback.extend(fields(part))
        elif ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                       "message/partial"):
            original.append(_text(part))
            out.attached = out.attached or ctype == "message/rfc822"
        elif part.get_content_maintype() == "text" and not _inside_original(message, part):
            (html if part.get_content_subtype() == "html" else notice).append(_text(part))
        elif ctype.startswith("multipart/") and isinstance(part.get_payload(), str):
            # Broken MIME (a multipart whose boundary is missing or never used): its raw
            # body is the notice, and any RFC 3464 fields in it are still read.
            body = str(part.get_payload())
            notice.append(body)
            if out.kind != "dsn":
                _fields_in_text(body, out)
    # An HTML notice (with its tags dropped) only when there is no plain one.
    text = "\n".join(notice or [_TAG.sub(" ", h) for h in html])
    cut = _cut(text)
    # Anyone can mail a "bounce": what is read as prose is bounded (no MTA writes more).
    out.notice, rest = text[:min(cut, MAX_NOTICE)], text[cut:]
    out.original = "\n".join([rest, *original])
    return out


_DSN_START = re.compile(r"^(?:Reporting-MTA|Final-Recipient|Original-Recipient):",
                        re.IGNORECASE | re.MULTILINE)


def _fields_in_text(body: str, out: Reading) -> None:
    """RFC 3464 fields written into a body whose MIME structure is lost."""
    found = _DSN_START.search(body)
    if found is None:
        return
    part = email.message.Message()
    part.set_payload(body[found.start():].split("\n\n\n")[0])
    rest = email.message_from_string("Content-Type: message/delivery-status\n\n" + "\n\n"
                                     + str(part.get_payload()))
    _dsn(rest, out)


def _inside_original(root: email.message.Message, part: email.message.Message) -> bool:
    """Whether a text part belongs to a returned message/rfc822 (its body, not the notice)."""
    for container in root.walk():
        if container.get_content_type() == "message/rfc822" and container is not part:
            inner = container.get_payload()
            inner_parts = [p for m in inner if isinstance(m, email.message.Message)
                           for p in m.walk()] if isinstance(inner, list) else []
            if any(part is p for p in inner_parts):
                return True
    return False


def _cut(text: str) -> int:
    """Where the returned original starts in a notice: a separator line or a header block."""
    found = _ORIGINAL.search(text)
    best = found.start() if found else len(text)
    lines = text.splitlines(keepends=True)
    at = 0
    for i, line in enumerate(lines):
        if at >= best:
            break
        if _HEADER.match(line) and all(
                _HEADER.match(n) or n[:1] in (" ", "\t") for n in lines[i + 1:i + 3]) and (
                len(lines) > i + 2):
            return at
        at += len(line)
    return best


def prose_failures(notice: str, original_from: set[str]) -> list[Failure]:
    """Failed recipients named in a notice, each with the words up to the next one."""
    found: list[tuple[int, str]] = []
    for n, match in enumerate(_ADDRESS.finditer(notice)):
        if n == MAX_NAMED:
            break  # bounded work per report: each name below costs a look back
        addr = normalise_address(match.group(0).strip(".'\""))
        before = notice[max(0, match.start() - 40):match.start()]
        lo = max(0, match.start() - MAX_LINE)  # a longer line is read from here
        line = notice[max(lo, notice.rfind("\n", lo, match.start()) + 1):match.start()]
        if (_MAILER.match(addr) or addr in original_from or _NOT_RECIPIENT.search(before)
                or _QUOTED_HEADER.fullmatch(line) or _IN_URL.search(addr.partition("@")[0])
                or not is_address(addr)):
            continue
        if not any(addr == a for _, a in found):
            found.append((match.start(), addr))
    if len(found) == 1:  # one recipient: the whole notice is about them (Notes: above it)
        return [Failure(found[0][1], "failed", "", notice)]
    out = []
    for i, (start, addr) in enumerate(found):
        line_start = notice.rfind("\n", 0, start) + 1
        # Up to the line that names the next recipient (or the end of the notice).
        end = notice.rfind("\n", 0, found[i + 1][0]) + 1 if i + 1 < len(found) else len(notice)
        # What is said about a recipient follows it closely; further down is other text.
        block = notice[line_start:min(max(end, start), line_start + MAX_LINE * _BLOCK_LINES)
                       ].split("\n")[:_BLOCK_LINES]
        out.append(Failure(addr, "failed", "", "\n".join(block)))
    return out
