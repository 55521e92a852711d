"""aiosmtpd's protocol core, hardened: safe error replies, strict arguments, limits, deadlines."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword

from proxy.settings import SmtpSettings
from proxy.smtp.access import Access
from proxy.smtp.address import plain_path
from proxy.smtp.data import BulkData

log = logging.getLogger("heed.smtp")

# Replies the edge makes itself (RFC 3463 enhanced status codes).
TEMPFAIL = "451 4.3.0 Temporary local problem, please try again later"
TOO_MANY_SESSIONS = "421 4.3.2 Too many connections, try again later"
BAD_ARGUMENT = "501 5.5.4 Syntax error: CR, LF and NUL are not allowed in arguments"
BAD_LINE = "501 5.5.4 Syntax error: CR, LF and NUL are not allowed in a command line"
UNCLOSED_PATH = "501 5.5.4 Syntax error: a path opened with < must end with >"
DATA_TIMEOUT = "421 4.4.2 DATA took too long, closing connection"
# What CommandLines hands aiosmtpd for a line with CR, LF or NUL inside: a command name
# no client can send (a NUL inside a line never reaches the dispatcher as itself).
_BAD_LINE_COMMAND = "\x00BAD-LINE"


class CommandLines(BulkData):
    """The session's reader: a command line ends at CRLF only (RFC 5321 §2.3.8).

    aiosmtpd reads commands with ``readuntil()``, which splits on a bare LF, so
    ``RCPT TO:<a@x>\\nRCPT TO:<b@x>\\r\\n`` became two commands. Here that call reads up
    to CRLF, and a line with CR, LF or NUL inside is replaced whole by a marker
    that HeedSMTP answers with 501. DATA is read in bulk (proxy/smtp/data.py).
    """

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        if separator != b"\n":
            return await super().readuntil(separator)
        line = await super().readuntil(b"\r\n")
        body = line[:-2]
        if b"\r" in body or b"\n" in body or b"\x00" in body:
            return _BAD_LINE_COMMAND.encode() + b"\r\n"
        return line


class HeedSMTP(SMTP):
    """One SMTP session. Parsing and reply codes stay in aiosmtpd; heed tightens the edges."""

    # RFC 5321 §4.5.3.1.6 allows 1000 octets a line, but marketing HTML often
    # has longer lines and the upstream MTA copes with them; refusing would
    # lose mail the plain relay would have carried.
    line_length_limit = 64 * 1024

    def __init__(self, handler: Any, *, settings: SmtpSettings, sessions: SessionCounter,
                 tls_context: ssl.SSLContext | None, access: Access,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            handler,
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,  # RFC 6531: pass UTF-8 addresses through untouched
            decode_data=False,
            hostname=settings.hostname,
            ident="ESMTP heed",  # "220 host ESMTP …": RFC 5321 §4.3.1, scanners look for it
            tls_context=tls_context,
            timeout=settings.command_timeout,
            auth_required=False,  # client networks may relay without AUTH
            auth_require_tls=True,  # AUTH only after STARTTLS: never a password in clear
            authenticator=self._authenticate_login,
            loop=loop,
        )
        self.settings = settings
        self.sessions = sessions
        self.access = access
        self._counted: str | None = None  # the client address while this session is counted
        self._data_deadline: asyncio.TimerHandle | None = None
        self._smtp_methods[_BAD_LINE_COMMAND] = self._bad_line

    def _cb_client_connected(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        reader.__class__ = CommandLines  # same state, stricter line ends (see CommandLines)
        super()._cb_client_connected(reader, writer)

    async def _bad_line(self, arg: str | None) -> None:
        await self.push(BAD_LINE)

    # --- sessions ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a new connection, not the TLS upgrade
            peer = transport.get_extra_info("peername")
            client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            if not self.sessions.acquire(client):
                # Refuse quickly so other clients keep being served (RFC 5321 §3.8).
                transport.write(f"{TOO_MANY_SESSIONS}\r\n".encode())  # type: ignore[attr-defined]
                transport.close()
                return
            self._counted = client
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted is not None:
            self.sessions.release(self._counted)
            self._counted = None
        self._cancel_data_deadline()
        if self.session is None:  # refused before the session began
            return
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        # The client sent EOF: it will send nothing more. aiosmtpd stops the session
        # but leaves the transport half-open until the command timeout, so a client
        # that connects and closes at once would hold a session slot for minutes
        # (seen under uvloop): close now, which releases the slot.
        if self.session is None:
            return False
        super().eof_received()
        if self.transport is not None:
            self.transport.close()
        return False

    # --- errors: never a 500 with the exception text -----------------------
    async def handle_exception(self, error: Exception) -> str:
        peer = self.session.peer if self.session else None
        log.error("internal error in session %r", peer, exc_info=error)
        return TEMPFAIL

    # --- strict arguments ----------------------------------------------------
    @staticmethod
    def _bad_argument(arg: str | None) -> bool:
        return arg is not None and any(c in arg for c in "\r\n\x00")

    @staticmethod
    def _unclosed_path(arg: str | None) -> bool:
        """``FROM:<a@b.example`` with no ``>``: RFC 5321 §4.1.2 Path = "<" Mailbox ">"."""
        path = (arg or "").partition(":")[2].lstrip()
        return path.startswith("<") and ">" not in path

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # The plain <local@domain> without the email package's parser (its cost
        # was a tenth of a message's CPU time); the rest as aiosmtpd parses it.
        parsed = plain_path(arg, self.local_part_limit) if arg else None
        return parsed if parsed is not None else super()._getaddr(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._bad_argument(arg):
            await self.push(BAD_ARGUMENT)
            return
        if self._unclosed_path(arg):
            await self.push(UNCLOSED_PATH)
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if self._bad_argument(arg):
            await self.push(BAD_ARGUMENT)
            return
        if self._unclosed_path(arg):
            await self.push(UNCLOSED_PATH)
            return
        await super().smtp_RCPT(arg)

    # --- DATA deadline (RFC 5321 §4.5.3.2.6) ----------------------------------
    async def smtp_DATA(self, arg: str) -> None:
        self._data_deadline = self.loop.call_later(
            self.settings.data_timeout, self._data_timed_out
        )
        try:
            await self._data(arg)
        finally:
            self._cancel_data_deadline()

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA (its checks, replies and hook, decode_data off), the content read
        in bulk instead of a line at a time (proxy/smtp/data.py)."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        reader: Any = self._reader
        assert isinstance(reader, BulkData)
        try:
            content, refusal = await reader.read_data(self.line_length_limit,
                                                      self.data_size_limit)
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            self._writer.close()
            raise
        if refusal is not None:
            await self.push(refusal)  # only after the final "." (RFC 5321 §4.2.5)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    def stop_data_deadline(self) -> None:
        """The whole message has arrived: processing time is not the client's to pay for."""
        self._cancel_data_deadline()

    def _cancel_data_deadline(self) -> None:
        if self._data_deadline is not None:
            self._data_deadline.cancel()
            self._data_deadline = None

    def _data_timed_out(self) -> None:
        log.info("DATA deadline passed for %r", self.session.peer if self.session else None)
        if self.transport is not None:
            self.transport.write(f"{DATA_TIMEOUT}\r\n".encode())  # type: ignore[attr-defined]
            self.transport.close()

    # --- AUTH ------------------------------------------------------------------
    def _authenticate_login(self, server: Any, session: Any, envelope: Any,
                            mechanism: str, auth_data: Any) -> AuthResult:
        if mechanism not in ("PLAIN", "LOGIN") or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        try:
            user = auth_data.login.decode("utf-8")
            password = auth_data.password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        ok = self.access.login(user, password)
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


class SessionCounter:
    """Counts concurrent SMTP sessions against the maximum, in all and per client address."""

    def __init__(self, limit: int, per_client: int | None = None) -> None:
        self.limit = limit
        self.per_client = per_client or limit
        self.active = 0
        self.by_client: dict[str, int] = {}

    def acquire(self, client: str = "") -> bool:
        if self.active >= self.limit or self.by_client.get(client, 0) >= self.per_client:
            return False
        self.active += 1
        self.by_client[client] = self.by_client.get(client, 0) + 1
        return True

    def release(self, client: str = "") -> None:
        self.active = max(0, self.active - 1)
        left = self.by_client.get(client, 0) - 1
        if left > 0:
            self.by_client[client] = left
        else:
            self.by_client.pop(client, None)


def tls_context(settings: SmtpSettings) -> ssl.SSLContext | None:
    """A server context for STARTTLS (RFC 3207) when a certificate is configured."""
    if not (settings.tls_cert and settings.tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context


async def start_smtp(handler: Any, settings: SmtpSettings, access: Access, *,
                     reuse_port: bool = False, sock: socket.socket | None = None
                     ) -> asyncio.Server:
    """Listen for SMTP on the configured address (or on ``sock``, opened for this worker by
    ``heed serve --workers``), in the running loop."""
    loop = asyncio.get_running_loop()
    sessions = SessionCounter(settings.max_sessions, settings.max_sessions_per_client)
    context = tls_context(settings)
    host, port = settings.listen

    def session() -> HeedSMTP:
        return HeedSMTP(handler, settings=settings, sessions=sessions, tls_context=context,
                        access=access, loop=loop)

    if sock is not None:
        return await loop.create_server(session, sock=sock)
    return await loop.create_server(
        session,
        host=host,
        port=port,
        reuse_address=True,
        reuse_port=reuse_port,  # --workers: the kernel spreads connections over processes
    )
