"""The last changes to each copy: unsubscribe headers per recipient, then DKIM, always last."""

from __future__ import annotations

from typing import Protocol

from proxy.dkim import DkimSigner, from_domain
from proxy.message import Message
from proxy.policy import Stream
from proxy.rewrite import add_unsubscribe
from proxy.tokens import TokenSigner


class PreparedMessage(Protocol):
    def per_recipient(self, stream: Stream) -> bool:
        """True when each recipient needs its own copy (its own token)."""
        ...

    def build(self, stream: Stream, recipient: str | None) -> bytes:
        """The bytes to relay for one recipient (or for all, when recipient is None)."""
        ...


class Finisher(Protocol):
    def prepare(self, message: Message) -> PreparedMessage:
        """Per-message work done once (header parse, DKIM body hash)."""
        ...


class _Marketing:
    """One message: its DKIM body hash taken once, then a copy per recipient."""

    def __init__(self, owner: UnsubscribeAndSign, message: Message) -> None:
        self.owner = owner
        self.message = message
        domain = from_domain(message.header_block)
        signer = owner.signer
        self.dkim = signer.prepare(domain, message.body) if signer and domain else None

    def per_recipient(self, stream: Stream) -> bool:
        return stream.marketing and stream.unsubscribe != "off"

    def build(self, stream: Stream, recipient: str | None) -> bytes:
        headers = self.message.header_block
        if recipient is not None and self.per_recipient(stream):
            token = self.owner.tokens.make(recipient, stream.list)
            headers = add_unsubscribe(
                headers,
                https_url=f"{self.owner.public_url}/u/{token}",
                mailto=f"unsubscribe+{token}@{self.owner.mailto_domain}",
                existing=stream.unsubscribe,
            ).headers
        # DKIM last, after every other change, so h= covers the unsubscribe fields.
        signature = self.dkim.sign(headers) if self.dkim is not None else b""
        if not signature and headers is self.message.header_block:
            # Nothing to change: relay byte for byte (a message with no empty line
            # after its header block must not gain one).
            return self.message.data
        return signature + headers + b"\r\n" + self.message.body


class UnsubscribeAndSign:
    """Marketing copies get their own signed one-click token (RFC 8058); every copy DKIM."""

    def __init__(self, tokens: TokenSigner, signer: DkimSigner | None, *, public_url: str,
                 mailto_domain: str) -> None:
        self.tokens = tokens
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self.mailto_domain = mailto_domain

    def prepare(self, message: Message) -> PreparedMessage:
        return _Marketing(self, message)
