"""SMTP phase hooks (MAIL, RCPT, DATA): turn the core's typed results into reply strings."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any, Protocol

from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session

from proxy.errors import StateUnavailable
from proxy.mailpath import MailPath, Verdict, reply_reason
from proxy.message import MessageRejected, normalise
from proxy.metrics import Metrics
from proxy.smtp.access import Access
from proxy.smtp.server import TEMPFAIL
from proxy.types import Decision, Envelope

log = logging.getLogger("heed.smtp")

OK_SENDER = "250 2.1.0 Sender OK"
OK_RCPT = "250 2.1.5 Recipient OK"
OK_DATA = "250 2.0.0 Message accepted"
RELAY_DENIED = "554 5.7.1 Relay access denied: authenticate or connect from an allowed network"
TOO_MANY_RCPTS = "452 4.5.3 Too many recipients"
NUL_REJECTED = "554 5.6.0 Message refused: it contains NUL characters"
_PRINTABLE = re.compile(r"[^\x20-\x7e]")


class LocalMail(Protocol):
    """heed's own addresses (the mailto unsubscribe): reachable without AUTH."""

    def accepts(self, address: str) -> bool: ...

    async def receive(self, address: str, sender: str, data: bytes) -> None: ...


class Handler:
    """aiosmtpd handler: MAIL/RCPT/DATA hooks around the mail path."""

    def __init__(self, mailpath: MailPath, access: Access, *, max_recipients: int,
                 local: LocalMail | None = None, metrics: Any = None) -> None:
        self.mailpath = mailpath
        self.access = access
        self.max_recipients = max_recipients
        self.local = local
        self.metrics: Metrics = metrics or Metrics()

    def _may_relay(self, session: Session) -> bool:
        if session.authenticated:
            return True
        peer = session.peer
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        return self.access.network_allowed(host)

    @staticmethod
    def _tx(envelope: SmtpEnvelope) -> dict[str, Any]:
        """heed's per-transaction notes, kept on aiosmtpd's envelope (reset by RSET/DATA)."""
        notes = getattr(envelope, "heed", None)
        if notes is None:
            notes = {"early": {}, "local": [], "cid": uuid.uuid4().hex}
            envelope.heed = notes  # type: ignore[attr-defined]
        return notes

    async def handle_MAIL(self, server: Any, session: Session, envelope: SmtpEnvelope,
                          address: str, mail_options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self._tx(envelope)
        return OK_SENDER

    async def handle_RCPT(self, server: Any, session: Session, envelope: SmtpEnvelope,
                          address: str, rcpt_options: list[str]) -> str:
        reply = await self._rcpt(session, envelope, address, rcpt_options)
        return self.metrics.reply("rcpt", reply)

    async def handle_DATA(self, server: Any, session: Session, envelope: SmtpEnvelope) -> str:
        return self.metrics.reply("data", await self._data(server, session, envelope))

    async def _rcpt(self, session: Session, envelope: SmtpEnvelope, address: str,
                    rcpt_options: list[str]) -> str:
        tx = self._tx(envelope)
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return TOO_MANY_RCPTS  # RFC 5321 §4.5.3.1.10: 452, the client sends the rest later
        if self.local is not None and self.local.accepts(address):
            tx["local"].append(address)
            envelope.rcpt_tos.append(address)
            return OK_RCPT
        if not self._may_relay(session):
            log.info("relay denied for %r to %r", session.peer, address)
            return RELAY_DENIED
        try:
            decision = await self.mailpath.at_rcpt(envelope.mail_from or "", address)
        except StateUnavailable:
            log.warning("redis unavailable at RCPT: answering 451")
            return TEMPFAIL
        if decision is not None and decision.rejects_at_rcpt:
            env = Envelope(envelope.mail_from or "", (address,), self._ip(session))
            await self.mailpath.record_rejection(env, address, decision, tx["cid"])
            # RFC 3463 5.7.1: delivery not authorised; the tool's bounce handling cleans its list.
            return f"550 5.7.1 Recipient refused by policy ({reply_reason(decision)})"
        if decision is not None:
            tx["early"][address] = decision
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return OK_RCPT

    async def _data(self, server: Any, session: Session, envelope: SmtpEnvelope) -> str:
        if hasattr(server, "stop_data_deadline"):
            server.stop_data_deadline()
        tx = self._tx(envelope)
        local: list[str] = tx["local"]
        relay = tuple(r for r in envelope.rcpt_tos if r not in local)
        raw = bytes(envelope.original_content or b"")
        try:
            data = normalise(raw)
        except MessageRejected:
            if relay:
                return NUL_REJECTED
            # A report to heed alone is never refused for its form: the NUL is dropped
            # here, where it is only read, and nothing of it is relayed.
            data = normalise(raw.replace(b"\x00", b""))
        try:
            for address in local:
                assert self.local is not None
                await self.local.receive(address, envelope.mail_from or "", data)
            if not relay:
                return OK_DATA
            early: dict[str, Decision] = tx["early"]
            env = Envelope(envelope.mail_from or "", relay, self._ip(session),
                           getattr(session, "auth_data", None))
            outcome = await self.mailpath.at_data(env, data, early, tx["cid"])
        except StateUnavailable:
            log.warning("redis unavailable at DATA: answering 451")
            return TEMPFAIL
        if outcome.verdict is Verdict.ACCEPTED:
            return OK_DATA
        if outcome.verdict is Verdict.TEMPFAIL:
            return "451 4.4.1 Upstream temporarily unavailable, please try again later"
        if outcome.code is None:
            return "550 5.7.1 Message refused by policy for every recipient"
        # Pass the upstream's own refusal on, so the tool's bounce handling sees it.
        code = outcome.code if 500 <= outcome.code < 600 else 554
        text = _PRINTABLE.sub("", outcome.detail)[:200] or "refused"
        return f"{code} 5.0.0 Upstream refused the message: {text}"

    @staticmethod
    def _ip(session: Session) -> str:
        peer = session.peer
        return str(peer[0]) if isinstance(peer, tuple) else str(peer or "")
