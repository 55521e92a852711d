"""Mail to heed itself: mailto unsubscribe (RFC 8058), postmaster (RFC 5321 §4.5.1), and the
bounce and complaint addresses (proxy/signals/bounces.py) behind one LocalMail."""

from __future__ import annotations

import email.policy
import logging
from collections.abc import Awaitable, Callable, Iterable
from email.parser import BytesParser
from typing import Any

from proxy.errors import TokenError, UpstreamError
from proxy.keys import normalise_address
from proxy.smtp.handler import LocalMail
from proxy.state import State
from proxy.tokens import TokenSigner

log = logging.getLogger("heed.inbound")


class UnsubscribeMailbox:
    """Accepts ``unsubscribe+TOKEN@DOMAIN`` without AUTH and records the refusal it carries."""

    def __init__(self, tokens: TokenSigner, state: State, domain: str) -> None:
        self.tokens = tokens
        self.state = state
        self.domain = domain.lower()

    def _token(self, address: str) -> str | None:
        local, at, domain = normalise_address(address).rpartition("@")
        if not at or domain != self.domain or not local.startswith("unsubscribe+"):
            return None
        return address.strip("<>").rpartition("@")[0][len("unsubscribe+"):]

    def accepts(self, address: str) -> bool:
        """Only a valid token makes the address exist; a forged one is just an unknown user."""
        token = self._token(address)
        if token is None:
            return False
        try:
            self.tokens.verify(token)
        except TokenError:
            return False
        return True

    async def receive(self, address: str, sender: str, data: bytes) -> None:
        """Record the refusal before the 250 (StateUnavailable -> the edge answers 451)."""
        token = self._token(address)
        if token is None:
            return
        try:
            claims = self.tokens.verify(token)
        except TokenError:
            return
        await self.state.refuse(claims.address, "unsubscribe", list=claims.list, channel="mailto")
        log.info("unsubscribe by mail", extra={"list": claims.list})


class PostmasterMailbox:
    """``postmaster`` and ``postmaster@`` heed's own domains, accepted from anyone (RFC 5321
    §4.5.1) and relayed to ``smtp.postmaster``; with none set, logged and kept with the
    unread reports (``keep``), so the 250 it got still means kept (SPEC 5)."""

    def __init__(self, domains: Iterable[str], forward_to: str | None, upstream: Any,
                 keep: Callable[[str, bytes, str], Awaitable[None]] | None = None) -> None:
        self.domains = {d.lower() for d in domains if d}
        self.forward_to = forward_to
        self.upstream = upstream
        self.keep = keep

    def accepts(self, address: str) -> bool:
        local, at, domain = normalise_address(address).rpartition("@")
        if not at:  # "RCPT TO:<Postmaster>", no domain: also required (§4.1.1.3)
            local, domain = domain, ""
        return local == "postmaster" and (not domain or domain in self.domains)

    async def receive(self, address: str, sender: str, data: bytes) -> None:
        """Relay before the 250; an upstream that fails or refuses makes the edge answer 451."""
        if self.forward_to is None:
            head = BytesParser(policy=email.policy.compat32).parsebytes(data, headersonly=True)
            log.warning("mail to postmaster, and smtp.postmaster names no address to relay it to",
                        extra={"sender": sender, "subject": str(head.get("Subject", "")),
                               "message_id": str(head.get("Message-ID", "")),
                               "size": len(data)})
            if self.keep is not None:  # StateUnavailable: the edge answers 451
                await self.keep(address, data, "mail to postmaster; smtp.postmaster not set")
            return
        refused = await self.upstream.send(sender, [self.forward_to], data)
        if refused:
            code, text = refused[self.forward_to]
            raise UpstreamError(code, f"postmaster relay to {self.forward_to}: {text}",
                                temporary=True)
        log.info("postmaster mail relayed", extra={"to": self.forward_to, "sender": sender})


class LocalMailboxes:
    """Several of heed's own mailboxes as the one LocalMail the SMTP edge knows."""

    def __init__(self, *boxes: LocalMail) -> None:
        self.boxes = boxes

    def accepts(self, address: str) -> bool:
        return any(box.accepts(address) for box in self.boxes)

    async def receive(self, address: str, sender: str, data: bytes) -> None:
        for box in self.boxes:
            if box.accepts(address):
                await box.receive(address, sender, data)
                return
