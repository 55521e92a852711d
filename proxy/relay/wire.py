"""One upstream connection after the greeting: commands written, replies read back in order."""

from __future__ import annotations

import asyncio
import collections

import aiosmtplib

# aiosmtplib bounds a reply the same way (a server streaming text without end).
MAX_LINE = 8192
MAX_REPLY = MAX_LINE * 4


class Lost(Exception):
    """The connection closed, or sent something that is not an SMTP reply."""


class ReplyTimeout(Exception):
    """No reply within the timeout."""


class Wire(asyncio.Protocol):
    """Replies queued as they arrive, so commands sent in one write (RFC 2920 §3.1)
    are answered one by one; aiosmtplib keeps one reply and drops what follows it."""

    def __init__(self, client: aiosmtplib.SMTP) -> None:
        """Take over ``client``'s connection after EHLO, STARTTLS and AUTH."""
        self.extensions = dict(client.esmtp_extensions)
        self.pipelining = "pipelining" in self.extensions
        transport = client.transport
        assert transport is not None and client.protocol is not None
        self._transport: asyncio.Transport = transport  # type: ignore[assignment]
        self._buffer = bytearray()
        self._replies: collections.deque[tuple[int, str]] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._lost: str | None = None
        self._transport.set_protocol(self)

    # --- asyncio.Protocol ------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            while (reply := self._parse()) is not None:
                self._replies.append(reply)
        except Lost as exc:
            self._lose(str(exc))
            self._transport.close()
        if len(self._buffer) > MAX_REPLY:
            self._lose("reply too long")
            self._transport.close()
        self._wake()

    def eof_received(self) -> bool:
        self._lose("connection closed by the upstream")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lose(f"connection lost: {exc}" if exc else "connection closed")

    # --- use -----------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._lost is None and not self._transport.is_closing()

    @property
    def unsolicited(self) -> bool:
        """A reply nobody asked for (a 421 sent while idle): the server means to close."""
        return bool(self._replies or self._buffer)

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    def write(self, data: bytes) -> None:
        if not self.is_connected:
            raise Lost(self._lost or "connection closed")
        self._transport.write(data)

    async def reply(self, timeout: float) -> tuple[int, str]:
        """The next reply; Lost when the connection ends first, ReplyTimeout after ``timeout``."""
        if not self._replies and self._lost is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            # A timer on the future itself: asyncio.wait_for costs a task switch per reply.
            timer = loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
        if self._replies:
            return self._replies.popleft()
        raise Lost(self._lost or "connection closed")

    async def command(self, line: bytes, timeout: float) -> tuple[int, str]:
        self.write(line + b"\r\n")
        return await self.reply(timeout)

    def close(self) -> None:
        self._lose("closed")
        self._transport.close()

    # --- internals -------------------------------------------------------------------
    def _lose(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _parse(self) -> tuple[int, str] | None:
        """One complete reply off the buffer (RFC 5321 §4.2: "250-" lines continue it)."""
        lines: list[str] = []
        offset = 0
        while (end := self._buffer.find(b"\n", offset)) != -1:
            line = bytes(self._buffer[offset:end + 1])
            if len(line) > MAX_LINE or not line[:3].isdigit():
                raise Lost(f"not an SMTP reply: {line[:80]!r}")
            offset = end + 1
            lines.append(line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape"))
            if line[3:4] != b"-":
                del self._buffer[:offset]
                return int(line[:3]), "\n".join(lines)
        return None


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ReplyTimeout())
