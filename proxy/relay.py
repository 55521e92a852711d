"""The upstream MTA: pooled aiosmtplib connections; failures mapped to UpstreamError."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import aiosmtplib

from proxy.errors import UpstreamError
from proxy.settings import UpstreamSettings
from proxy.smtp.address import PLAIN_ADDRESS

log = logging.getLogger("heed.relay")

# Servers may drop a client idle for 5 minutes (RFC 5321 §4.5.3.2.7); a pooled
# connection idle for longer than this is closed rather than reused.
MAX_IDLE = 240.0

Refused = dict[str, tuple[int, str]]


class _Stale(Exception):
    """A reused connection failed before MAIL was accepted: nothing was sent."""


class _Rejected(Exception):
    """The upstream answered no; the envelope was reset, so the connection is still good."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(str(error))
        self.error = error


class SmtpUpstream:
    """Relays copies over up to ``pool_size`` reused connections."""

    def __init__(self, settings: UpstreamSettings, *, local_hostname: str | None = None,
                 observe: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.observe = observe  # told each transaction's seconds (heed_upstream_seconds)
        self.local_hostname = local_hostname
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._slots = asyncio.Semaphore(max(1, settings.pool_size))
        self._closed = False

    # --- pool ---------------------------------------------------------------------
    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=s.timeout, local_hostname=self.local_hostname,
            start_tls=s.starttls, validate_certs=s.tls_verify,
            username=s.username, password=s.password,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                await _greet(client)
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            log.warning("upstream %s:%d refused the session: %s %s", s.host, s.port,
                        exc.code, exc.message)
            # A 554 greeting or failed AUTH is the operator's to fix; the mail waits.
            code = exc.code if 400 <= exc.code < 500 else 421
            raise UpstreamError(code, "4.4.1 upstream refused the session",
                                temporary=True) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            log.warning("upstream %s:%d not reachable: %s", s.host, s.port, exc)
            raise UpstreamError(421, "4.4.1 upstream not reachable", temporary=True) from None
        return client

    async def _acquire(self, *, fresh: bool = False) -> tuple[aiosmtplib.SMTP, bool]:
        """An idle connection that still looks alive, else a new one; (client, reused)."""
        now = time.monotonic()
        while self._idle and not fresh:
            client, since = self._idle.pop()
            if client.is_connected and now - since < MAX_IDLE:
                return client, True
            client.close()
        return await self._connect(), False

    def _release(self, client: aiosmtplib.SMTP) -> None:
        if self._closed or not client.is_connected:
            client.close()
        else:
            self._idle.append((client, time.monotonic()))

    # --- sending ------------------------------------------------------------------
    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Refused:
        """One transaction; returns the recipients the upstream refused (address -> reply)."""
        if not recipients:
            return {}
        started = time.monotonic()
        try:
            return await self._send(sender, recipients, data)
        finally:
            # Failed transactions too: a slow refusal is as telling as a slow success.
            if self.observe is not None:
                self.observe(time.monotonic() - started)

    async def _send(self, sender: str, recipients: Sequence[str], data: bytes) -> Refused:
        async with self._slots:
            for attempt in (1, 2):
                client, reused = await self._acquire(fresh=attempt == 2)
                try:
                    refused = await self._transaction(client, sender, recipients, data)
                except _Stale:
                    client.close()
                    if reused and attempt == 1:
                        # The server dropped a pooled connection while it idled;
                        # nothing was accepted, so one retry on a new one is safe.
                        continue
                    raise UpstreamError(421, "4.4.2 upstream connection lost",
                                        temporary=True) from None
                except _Rejected as rejected:
                    self._release(client)
                    raise rejected.error from None
                except (aiosmtplib.SMTPException, OSError) as exc:
                    client.close()
                    log.warning("upstream connection failed: %s", exc)
                    raise UpstreamError(421, "4.4.2 upstream connection lost",
                                        temporary=True) from None
                except BaseException:
                    client.close()
                    raise
                self._release(client)
                return refused
        raise AssertionError("unreachable")  # pragma: no cover

    async def _transaction(self, client: aiosmtplib.SMTP, sender: str,
                           recipients: Sequence[str], data: bytes) -> Refused:
        options, encoding = _mail_options(client, sender, recipients, data)
        try:
            await _mail(client, sender, options, encoding)
        except aiosmtplib.SMTPServerDisconnected:
            raise _Stale() from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421:  # "closing transmission channel" (RFC 5321 §3.8)
                raise _Stale() from None
            raise await _rejected(client, exc.code, exc.message) from None
        except aiosmtplib.SMTPTimeoutError:
            raise UpstreamError(421, "4.4.2 upstream timed out", temporary=True) from None
        except (ValueError, UnicodeError):
            raise await _rejected(client, 553, "5.1.7 sender address not acceptable") from None

        refused: Refused = {}
        for rcpt in recipients:
            try:
                await _rcpt(client, rcpt, encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if exc.code == 421:
                    raise UpstreamError(421, exc.message, temporary=True) from None
                refused[rcpt] = (exc.code, exc.message)
            except (ValueError, UnicodeError):
                refused[rcpt] = (553, "5.1.3 recipient address not acceptable")
        if len(refused) == len(recipients):
            codes = {code // 100 for code, _ in refused.values()}
            if len(codes) > 1:
                await _reset(client)  # some 4xx, some 5xx: each recipient keeps its own
                return refused
            code, message = next(iter(refused.values()))
            raise await _rejected(client, code, message)

        # RFC 5321 §4.1.1.4: the data ends with CRLF before the final ".".
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        try:
            # RFC 5321 §4.5.3.2.6: wait the 10 minutes for the reply to the final dot;
            # aiosmtplib times DATA, the data and that reply together.
            await client.data(data, timeout=self.settings.data_timeout)
        except aiosmtplib.SMTPResponseException as exc:
            raise await _rejected(client, exc.code, exc.message) from None
        except aiosmtplib.SMTPTimeoutError:
            # No reply to the final "." may still mean delivered (RFC 1047);
            # a retry can duplicate, which is better than losing the copy.
            raise UpstreamError(421, "4.4.2 upstream timed out", temporary=True) from None
        return refused

    # --- health and shutdown ------------------------------------------------------
    async def ping(self) -> bool:
        """True when the upstream answers NOOP (for /readyz)."""
        async with self._slots:
            for _ in (1, 2):
                try:
                    client, _reused = await self._acquire()
                except UpstreamError:
                    return False
                try:
                    await client.noop()
                except (aiosmtplib.SMTPException, OSError):
                    client.close()
                    continue
                self._release(client)
                return True
        return False

    async def close(self) -> None:
        """Say QUIT on every idle connection; sends after this use a connection once."""
        self._closed = True
        idle, self._idle = self._idle, []
        for client, _since in idle:
            try:
                await asyncio.wait_for(client.quit(), 2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


# MAIL and RCPT for a plain mailbox (dot-atom local part, plain domain: nearly every
# path heed relays, VERP return paths included) are written as the path itself.
# aiosmtplib's mail()/rcpt() would run it through email.utils.parseaddr and its
# injection check first, about a twentieth of heed's CPU per message, to get the
# same "<address>" (tests/test_relay.py checks that for any plain mailbox); any other
# path still goes through them. RFC 5321 §4.1.1.2, §4.1.1.3.
async def _mail(client: aiosmtplib.SMTP, sender: str, options: list[str],
                encoding: str) -> None:
    if sender and not PLAIN_ADDRESS.fullmatch(sender):
        await client.mail(sender, options=options, encoding=encoding)
        return
    response = await client.execute_command(
        b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", *(o.encode("ascii") for o in options))
    if response.code != 250:
        raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)


async def _rcpt(client: aiosmtplib.SMTP, recipient: str, encoding: str) -> None:
    if not PLAIN_ADDRESS.fullmatch(recipient):
        await client.rcpt(recipient, encoding=encoding)
        return
    response = await client.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
    if response.code not in (250, 251):  # 251: "will forward" (RFC 5321 §3.4)
        raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO for an old server (RFC 5321 §3.2)."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()


def _mail_options(client: aiosmtplib.SMTP, sender: str, recipients: Sequence[str],
                  data: bytes) -> tuple[list[str], str]:
    options: list[str] = []
    if client.supports_extension("size"):
        options.append(f"SIZE={len(data)}")  # RFC 1870
    if not data.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")  # RFC 6152
    if sender.isascii() and all(r.isascii() for r in recipients):
        return options, "ascii"
    if not client.supports_extension("smtputf8"):
        # RFC 6531 §3.2: such a copy cannot go to this server at all.
        raise UpstreamError(553, "5.6.7 upstream does not accept UTF-8 addresses",
                            temporary=False)
    options.append("SMTPUTF8")
    return options, "utf-8"


async def _reset(client: aiosmtplib.SMTP) -> None:
    """RSET after a refused transaction (RFC 5321 §4.1.1.5); a bad reply ends the connection."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


async def _rejected(client: aiosmtplib.SMTP, code: int, message: str) -> Exception:
    """The failure to raise for a refusal, after resetting the envelope."""
    error = UpstreamError(code, message, temporary=code < 500)
    await _reset(client)
    return _Rejected(error) if client.is_connected else error
