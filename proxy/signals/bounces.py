"""Bounces (RFC 3464 DSN) and complaints (RFC 5965 ARF) mailed to heed, read into Events.

Who bounced or complained is taken, most trusted first, from: the VERP token of
the address the report came to (``bounce+TOKEN@DOMAIN``: a compact MAC whose
address and list heed stored when the copy was sent, Keys.verp); a signed token
in the returned original message (its Return-Path, or its List-Unsubscribe
header); and only then the report's own fields (Original-Recipient /
Final-Recipient, Original-Rcpt-To), which anyone can write.

What a bounce says is read by bounce_read/bounce_reasons/verdict, a complaint by
complaints; a report to a VERP address is then passed on to the tool (forward).

A report that cannot be read is logged, kept for ``heed bounces unread`` (unread)
and accepted (250): its sender is an MTA or a feedback loop that cannot do
anything with a rejection, and a DSN has the null sender, so a 5xx would only
become a double bounce (RFC 3464 §2.1 and RFC 5321 §6.1 ask that a notification
never cause another one).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from proxy.audit import AuditEntry
from proxy.errors import StateUnavailable, TokenError
from proxy.logs import FULL, LoggedAddress
from proxy.signals.bounce_read import read
from proxy.signals.complaints import feedback
from proxy.signals.events import Event, EventRules, apply
from proxy.signals.forward import Forwarder
from proxy.signals.unread import Unread
from proxy.signals.verdict import bounced
from proxy.signals.webhooks.ses import ses_events
from proxy.state import State
from proxy.tokens import BOUNCE, UNSUBSCRIBE, TokenClaims, TokenSigner

log = logging.getLogger("heed.bounces")

_TOKEN = "([A-Za-z0-9_-]{20,})"
# Where a heed token sits in a returned message: VERP return path, one-click URL, mailto.
_FOUND = ((re.compile(r"bounce\+" + _TOKEN + "@"), BOUNCE),
          (re.compile(r"/u/" + _TOKEN), UNSUBSCRIBE),
          (re.compile(r"unsubscribe\+" + _TOKEN + "@"), UNSUBSCRIBE))
_COMPACT = re.compile(r"bounce\+([A-Za-z2-7]{20})@")


@dataclass(frozen=True)
class Finding:
    """One failed recipient of a bounce, or one complaint, as the report tells it."""

    kind: str  # "bounce" | "complaint" | "feedback" (recorded only)
    address: str | None  # from the report's own fields (untrusted)
    bounce: str | None = None  # "hard" | "soft"
    detail: str = ""
    reason: str = ""  # heed's reason (bounce_reasons.REASONS) for a bounce
    remote: str = ""  # the DSN's Remote-MTA (RFC 3464 §2.3.5): which provider said it


def read_report(data: bytes, *, to_complaints: bool = False) -> tuple[str, list[Finding], str]:
    """(report type, findings, text of the returned original) of a bounce or complaint.

    The type is "arf" for a complaint, "dsn" for a bounce with RFC 3464 fields,
    "prose" for one without them, "" when nothing could be read.
    """
    reading = read(data)
    ses = _ses_by_mail(reading.notice)
    if ses:
        return ("arf" if ses[0].kind == "complaint" else "dsn"), ses, reading.original
    complaints = feedback(reading, to_complaints=to_complaints)
    if complaints or reading.kind == "arf":
        return "arf", [Finding("complaint" if c.refuses else "feedback", c.address, None,
                               c.detail) for c in complaints], reading.original
    found = bounced(reading)
    kind = reading.kind or ("prose" if any(b.address for b in found) else "")
    return kind, [Finding("bounce", b.address, "hard" if b.hard else "soft", b.detail,
                          b.reason.name, b.remote) for b in found], reading.original


def _ses_by_mail(notice: str) -> list[Finding]:
    """Amazon SES notifications sent by email (an SNS email subscription): JSON, not prose."""
    text = notice.lstrip()
    if not text.startswith("{") or "notificationType" not in text[:4000]:
        return []
    # Long JSON lines come folded by mail (a line break and a space mid-string; SNS marks
    # a line it had to break at 998 octets with a "!" before the break).
    first = text.split("\n\n")[0]
    for candidate in (text, re.sub(r"\r?\n ?", "", first), re.sub(r"!?\r?\n ?", "", first)):
        try:
            notification, _ = json.JSONDecoder().raw_decode(candidate)
            break
        except ValueError:
            continue
    else:
        return []
    if isinstance(notification, dict) and isinstance(notification.get("Message"), str):
        try:  # the SNS envelope (raw message delivery off): the notification is inside
            notification = json.loads(notification["Message"])
        except ValueError:
            return []
    if not isinstance(notification, dict):
        return []
    return [Finding(e.kind, e.address, e.bounce, f"ses by mail; {e.detail}")
            for e in ses_events(notification, "", 0.0) if e.kind in ("bounce", "complaint")]


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

    ``verp``: the report came to bounce+TOKEN@, so it is about that one recipient:
    their own failure if the report names them, else the worst it tells.
    ``trust_unsigned``: without a token, act on the addresses the report itself names.
    """
    channel = "arf" if kind == "arf" else "dsn"
    acting = [f for f in findings if f.kind != "feedback"]
    if claims is not None:
        mine = [f for f in acting if f.address == claims.address] or acting
        if not mine:
            return []
        worst = next((f for f in mine if f.bounce == "hard"), mine[0])
        return [Event(kind=worst.kind, address=claims.address, channel=channel,
                      list=claims.list, bounce=worst.bounce, detail=worst.detail)]
    if not trust_unsigned:
        return []
    return [Event(kind=f.kind, address=f.address, channel=channel, bounce=f.bounce,
                  detail=f.detail + "; unsigned") for f in acting if f.address]


class ReportMailbox:
    """heed's bounce and complaint addresses: ``bounce@``, ``bounce+TOKEN@`` and ``fbl@``."""

    def __init__(self, tokens: TokenSigner, state: State, domain: str, *,
                 rules: EventRules, bounce: str = "bounce", complaints: str = "fbl",
                 trust_unsigned: bool = True, metrics: Any = None,
                 forwarder: Forwarder | None = None,
                 on_bounce: Callable[[Finding, bytes], Awaitable[Any]] | None = None,
                 shown: LoggedAddress = FULL) -> None:
        self.metrics = metrics
        self.on_bounce = on_bounce  # the provider guard hears throttling in bounces
        self.forwarder = forwarder
        self.shown = shown  # a VERP or unsubscribe address leads to a person: log_addresses
        self.unread = Unread(state.redis, state.keys, state.clock)
        self.trust_unsigned = trust_unsigned
        self.tokens = tokens
        self.state = state
        self.domain = domain.lower()
        self.rules = rules
        self.plain = {bounce.lower(), complaints.lower()}
        self.complaints = complaints.lower()
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

    async def _lookup(self, token: str) -> tuple[TokenClaims | None, str]:
        """The recipient a compact VERP token was sent to: one GET, then the MAC checked
        against what was stored. None (expired, unknown or not matching): the report
        is read like one to plain bounce@. With it, the copy's original envelope sender
        (mappings written before heed kept it have none)."""
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
            return None, ""
        text = stored.decode() if isinstance(stored, bytes) else str(stored)
        address, _, rest = text.partition("\n")
        list_name, _, sender = rest.partition("\n")
        if not self.tokens.verp_matches(token, address, list_name):
            log.warning("VERP mapping does not match its token; ignored")
            return None, ""
        return TokenClaims(address=address, list=list_name, issued_at=0.0, key_id="",
                           purpose=BOUNCE), sender

    async def _returned_verp(self, text: str) -> TokenClaims | None:
        """A compact VERP token in the returned original's Return-Path (e.g. an ARF report,
        which comes to fbl@ and quotes the copy's headers): at most one lookup."""
        for candidate in _COMPACT.findall(text):
            if self.tokens.verp_plausible(candidate):
                return (await self._lookup(candidate.lower()))[0]
        return None

    def accepts(self, address: str) -> bool:
        return self._claims(address) is not False

    async def receive(self, address: str, sender: str, data: bytes) -> None:
        """Record what the report says (StateUnavailable -> the edge answers 451)."""
        found = self._claims(address)
        try:
            to_complaints = address.strip("<>").partition("@")[0].lower() == self.complaints
            kind, findings, text = read_report(data, to_complaints=to_complaints)
        except Exception:  # noqa: BLE001 - a malformed report is logged, never a crash
            log.warning("unreadable report to %s (%d bytes); kept unread", self.shown(address),
                        len(data), exc_info=True)
            await self.unread.keep(address, data, "could not be parsed")
            return
        sender_of_copy = ""
        if isinstance(found, str):
            claims, sender_of_copy = await self._lookup(found)
        else:
            claims = found if isinstance(found, TokenClaims) else None
        verp = claims is not None
        if claims is None:
            claims = find_token(self.tokens, text) or await self._returned_verp(text)
        if self.on_bounce is not None and kind != "arf":
            # Every bounce, with its reading (the words of prose bounces included).
            for finding in [f for f in findings if f.kind == "bounce"] or [Finding("bounce", None)]:
                await self.on_bounce(finding, data)
        events = events_of(kind, findings, text, claims, verp=verp,
                           trust_unsigned=self.trust_unsigned)
        for event in events:
            await apply(self.state, event, self.rules, self.metrics)
        recorded = await self._record_only(findings, claims)
        self._count(findings, bool(events or recorded))
        if not events and not recorded:
            log.info("report to %s (%s) names nobody heed can act on", self.shown(address),
                     kind or "none")
            why = "names nobody" if findings else f"nothing read ({kind or 'no report part'})"
            await self.unread.keep(address, data, why)
        if verp and sender_of_copy and self.forwarder is not None:
            # The tool's own bounce handling hears it as if VERP were off.
            if await self.forwarder.forward(sender_of_copy, data, kind or "report") and (
                    self.metrics is not None):
                self.metrics.forwarded.inc()

    def _count(self, findings: list[Finding], acted: bool) -> None:
        """heed_reports_total: why mail failed, even where nobody could be named."""
        if self.metrics is None:
            return
        if not acted:
            self.metrics.reports.labels("unread", "").inc()
            return
        for f in findings:
            reason = f.reason or f.kind  # complaint, feedback, or an SES bounce by mail
            self.metrics.reports.labels(reason, f.bounce or "").inc()

    async def _record_only(self, findings: list[Finding], claims: TokenClaims | None) -> int:
        """Feedback that refuses nobody (virus, auth-failure) still leaves an audit entry."""
        entries = []
        for f in findings:
            who = claims.address if claims is not None else (
                f.address if self.trust_unsigned else None)
            if f.kind == "feedback" and who:
                entries.append(AuditEntry(at=self.state.clock.now(), kind="event",
                                          recipient=who, outcome="feedback",
                                          stream=claims.list if claims else "",
                                          reasons=("recorded", f.detail), detail=f.detail))
        if entries:
            await self.state.audit.record(entries)
        return len(entries)
