"""The last changes to each copy: unsubscribe headers per recipient, then DKIM, always last."""

from __future__ import annotations

from typing import Protocol

from proxy.message import Message
from proxy.policy import Stream


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


class _Unchanged:
    def __init__(self, message: Message) -> None:
        self.message = message

    def per_recipient(self, stream: Stream) -> bool:
        return False

    def build(self, stream: Stream, recipient: str | None) -> bytes:
        return self.message.data


class PassThrough:
    """Relays the message as received (no unsubscribe headers, no signature)."""

    def prepare(self, message: Message) -> PreparedMessage:
        return _Unchanged(message)
