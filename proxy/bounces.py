"""Bounces (RFC 3464 DSN) and complaints (RFC 5965 ARF) mailed to heed, read into Events.

Who bounced or complained is taken, most trusted first, from: the VERP token of
the address the report came to (``bounce+TOKEN@DOMAIN``: a compact MAC whose
address and list heed stored when the copy was sent, Keys.verp); a signed token
in the returned original message (its Return-Path, or its List-Unsubscribe
header); and only then the report's own fields (Original-Recipient /
Final-Recipient, Original-Rcpt-To), which anyone can write.

A report that cannot be read is logged and accepted (250): its sender is an MTA
or a feedback loop that cannot do anything with a rejection, and a DSN has the
null sender, so a 5xx would only become a double bounce (RFC 3464 §2.1 and
RFC 5321 §6.1 ask that a notification never cause another one).
"""

from __future__ import annotations

import email
import email.message
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable, TokenError
from proxy.events import Event, EventRules, apply
from proxy.keys import normalise_address
from proxy.state import State, is_address
from proxy.tokens import BOUNCE, UNSUBSCRIBE, TokenClaims, TokenSigner

log = logging.getLogger("heed.bounces")

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_TOKEN = "([A-Za-z0-9_-]{20,})"
# Where a heed token sits in a returned message: VERP return path, one-click URL, mailto.
_FOUND = ((re.compile(r"bounce\+" + _TOKEN + "@"), BOUNCE),
          (re.compile(r"/u/" + _TOKEN), UNSUBSCRIBE),
          (re.compile(r"unsubscribe\+" + _TOKEN + "@"), UNSUBSCRIBE))
_COMPACT = re.compile(r"bounce\+([A-Za-z2-7]{20})@")
# RFC 5965 §7.3 feedback types that are a person's complaint; "not-spam" and
# "auth-failure" (RFC 6591, a DKIM/SPF report) are not.
COMPLAINT_TYPES = frozenset(("abuse", "fraud", "virus", "other"))


@dataclass(frozen=True)
class Finding:
    """One failed recipient of a DSN or one complaint of an ARF report."""

    kind: str  # "bounce" | "complaint"
    address: str | None  # from the report's own fields (untrusted)
    bounce: str | None = None  # "hard" | "soft"
    detail: str = ""
    remote: str = ""  # the DSN's Remote-MTA (RFC 3464 §2.3.5): which provider said it


def severity(action: str, status: str) -> str | None:
    """hard, soft or None (not a failure) for a DSN recipient (RFC 3464 §2.3.3, RFC 3463).

    5.x.x with ``failed`` is hard, except where RFC 3463 says the address is fine:
    5.7.x (security or policy: the content or the sender's reputation was refused,
    §3.8), 5.2.2 (mailbox full, §3.3) and 5.3.4 (message too big, §3.4). Those are
    counted as soft: refusing a working address for ever would be wrong.
    """
    action = action.strip().lower()
    if action == "delayed":
        return "soft"
    if action != "failed":
        return None  # delivered, relayed, expanded: not a bounce
    found = _STATUS.search(status)
    if found is None or found.group(1) != "5":
        return "soft"
    _, subject, detail = found.groups()
    if subject == "7" or (subject, detail) in (("2", "2"), ("3", "4")):
        return "soft"
    return "hard"


def _fields(part: email.message.Message) -> list[email.message.Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, email.message.Message)]
    text = part.get_payload(decode=True) or b""
    blocks = re.split(rb"\r?\n\s*\r?\n", bytes(text))
    return [email.message_from_bytes(b.strip() + b"\n") for b in blocks if b.strip()]


def _address(value: str | None) -> str | None:
    """``rfc822; <ana@example.org>`` -> ana@example.org (RFC 3464 §2.3.2), or None."""
    if not value:
        return None
    _, _, addr = str(value).rpartition(";")
    addr = normalise_address(addr)
    return addr if is_address(addr) else None


def _dsn(part: email.message.Message) -> list[Finding] | None:
    """Failed recipients; None when the part has no per-recipient block to read."""
    out = []
    blocks = _fields(part)[1:]
    if not blocks:
        return None
    for block in blocks:  # the first block is per message (RFC 3464 §2.2)
        how = severity(str(block.get("Action", "")), str(block.get("Status", "")))
        if how is None:
            continue
        address = _address(block.get("Original-Recipient")) or _address(
            block.get("Final-Recipient"))
        detail = f"status {block.get('Status', '-')}; {block.get('Diagnostic-Code', '')}"
        out.append(Finding("bounce", address, how, " ".join(detail.split())[:300],
                           str(block.get("Remote-MTA", "")).strip()))
    return out


def _arf(part: email.message.Message) -> list[Finding]:
    blocks = _fields(part)
    if not blocks:
        return []
    report = blocks[0]
    kind = str(report.get("Feedback-Type", "")).strip().lower()
    if kind not in COMPLAINT_TYPES:
        log.info("feedback report of type %r is not a complaint; ignored", kind or "-")
        return []
    detail = f"feedback {kind}; {report.get('User-Agent', '-')}"
    recipients = [_address(r) for r in report.get_all("Original-Rcpt-To") or []]
    return [Finding("complaint", a, None, detail) for a in recipients or [None]]


def read_report(data: bytes) -> tuple[str, list[Finding], str]:
    """(report type, findings, text of the returned original) of a DSN or ARF message.

    The type is "" when no report part could be read. Bad MIME yields no findings.
    """
    message = email.message_from_bytes(data)
    kind, findings, original = "", list[Finding](), list[str]()
    for part in message.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            found = _dsn(part)
            if found is not None:
                kind, findings = "dsn", findings + found
        elif ctype == "message/feedback-report":
            kind, findings = "arf", findings + _arf(part)
        elif ctype in ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers",
                       "text/plain"):
            # The returned original carries heed's tokens; an "unhelpful" bounce's prose
            # may still carry an enhanced status code (RFC 3463).
            original.append(_text(part))
    return kind, findings, "\n".join(original)


def _text(part: email.message.Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n".join(p.as_string() for p in payload if isinstance(p, email.message.Message))
    raw = part.get_payload(decode=True)
    text = bytes(raw).decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    return re.sub(r"\r?\n[ \t]+", " ", text)  # unfold (RFC 5322 §2.2.3)


def find_token(tokens: TokenSigner, text: str) -> TokenClaims | None:
    """The first valid heed token in a returned message (Return-Path, List-Unsubscribe)."""
    for pattern, purpose in _FOUND:
        for candidate in pattern.findall(text):
            try:
                return tokens.verify(candidate, purpose)
            except TokenError:
                continue
    return None


def events_of(kind: str, findings: list[Finding], text: str, claims: TokenClaims | None,
              *, verp: bool = False, trust_unsigned: bool = True) -> list[Event]:
    """Events for a report; ``claims`` (from a token) names the person when there is one.

    ``verp``: the report came to bounce+TOKEN@, so it is a bounce whatever its body says.
    ``trust_unsigned``: without a token, act on the addresses the report itself names.
    """
    channel = "arf" if kind == "arf" else "dsn"
    if claims is not None:
        if not kind and verp:
            # No delivery-status (or nothing readable): the status code in the text decides,
            # and without one the bounce only counts (soft): refusing needs evidence.
            found = _STATUS.search(text)
            how = severity("failed", found.group(0)) if found else "soft"
            findings = [Finding("bounce", None, how, "no delivery-status part")]
        if not findings:
            return []
        worst = next((f for f in findings if f.bounce == "hard"), findings[0])
        return [Event(kind=worst.kind, address=claims.address, channel=channel,
                      list=claims.list, bounce=worst.bounce, detail=worst.detail)]
    if not trust_unsigned:
        return []
    return [Event(kind=f.kind, address=f.address, channel=channel, bounce=f.bounce,
                  detail=f.detail + "; unsigned") for f in findings if f.address]


class ReportMailbox:
    """heed's bounce and complaint addresses: ``bounce@``, ``bounce+TOKEN@`` and ``fbl@``."""

    def __init__(self, tokens: TokenSigner, state: State, domain: str, *,
                 rules: EventRules, bounce: str = "bounce", complaints: str = "fbl",
                 trust_unsigned: bool = True, metrics: Any = None,
                 on_bounce: Callable[[Finding, bytes], Awaitable[Any]] | None = None) -> None:
        self.metrics = metrics
        self.on_bounce = on_bounce  # the provider guard hears throttling in DSNs
        self.trust_unsigned = trust_unsigned
        self.tokens = tokens
        self.state = state
        self.domain = domain.lower()
        self.rules = rules
        self.plain = {bounce.lower(), complaints.lower()}
        self.prefix = bounce.lower() + "+"

    def _claims(self, address: str) -> TokenClaims | str | bool:
        """Token claims for an old (long, signed) bounce+TOKEN@, the token of a compact one,
        True for a plain address of ours, False otherwise."""
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if not at or domain.lower() != self.domain:
            return False
        if local.lower() in self.plain:
            return True
        if not local.lower().startswith(self.prefix):
            return False
        token = local[len(self.prefix):]
        if self.tokens.verp_plausible(token):
            return token.lower()  # known key, right shape: the MAC is checked on lookup
        try:
            # Long self-contained tokens of mail sent before compact VERP tokens.
            return self.tokens.verify(token, BOUNCE)
        except TokenError:
            return False  # a forged VERP address does not exist

    async def _lookup(self, token: str) -> TokenClaims | None:
        """The recipient a compact VERP token was sent to: one GET, then the MAC checked
        against what was stored. None (expired, unknown or not matching): the report
        is read like one to plain bounce@."""
        try:
            # A pipeline, not a lone GET: through the group-commit client it goes out
            # after the delivery records written behind, so a bounce that comes at once
            # still finds its mapping.
            pipe = self.state.redis.pipeline(transaction=False)
            pipe.get(self.state.keys.verp(token))
            (stored,) = await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        if stored is None:
            log.info("VERP token unknown or expired; reading the report's own fields")
            return None
        text = stored.decode() if isinstance(stored, bytes) else str(stored)
        address, _, list_name = text.partition("\n")
        if not self.tokens.verp_matches(token, address, list_name):
            log.warning("VERP mapping does not match its token; ignored")
            return None
        return TokenClaims(address=address, list=list_name, issued_at=0.0, key_id="",
                           purpose=BOUNCE)

    async def _returned_verp(self, text: str) -> TokenClaims | None:
        """A compact VERP token in the returned original's Return-Path (e.g. an ARF report,
        which comes to fbl@ and quotes the copy's headers): at most one lookup."""
        for candidate in _COMPACT.findall(text):
            if self.tokens.verp_plausible(candidate):
                return await self._lookup(candidate.lower())
        return None

    def accepts(self, address: str) -> bool:
        return self._claims(address) is not False

    async def receive(self, address: str, sender: str, data: bytes) -> None:
        """Record what the report says (StateUnavailable -> the edge answers 451)."""
        found = self._claims(address)
        try:
            kind, findings, text = read_report(data)
        except Exception:  # noqa: BLE001 - a malformed report is logged, never a crash
            log.warning("unreadable report to %s (%d bytes); ignored", address, len(data),
                        exc_info=True)
            return
        claims = await self._lookup(found) if isinstance(found, str) else (
            found if isinstance(found, TokenClaims) else None)
        verp = claims is not None
        if claims is None:
            claims = find_token(self.tokens, text) or await self._returned_verp(text)
        if self.on_bounce is not None and kind != "arf":
            # A bounce without RFC 3464 fields (qmail and kin) is heard from its prose.
            for finding in [f for f in findings if f.kind == "bounce"] or [Finding("bounce", None)]:
                await self.on_bounce(finding, data)
        events = events_of(kind, findings, text, claims, verp=verp,
                           trust_unsigned=self.trust_unsigned)
        if not events:
            log.info("report to %s (%s) names nobody heed can act on", address, kind or "none")
        for event in events:
            await apply(self.state, event, self.rules, self.metrics)
