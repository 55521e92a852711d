"""Mail addressed to heed itself: the mailto unsubscribe (RFC 8058 §3.1, RFC 2369), and the
bounce and complaint addresses (proxy/signals/bounces.py) behind one LocalMail."""

from __future__ import annotations

import logging

from proxy.errors import TokenError
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
