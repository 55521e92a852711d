"""The upstream MTA: pooled aiosmtplib connections; failures mapped to UpstreamError."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiosmtplib

from proxy.errors import UpstreamError
from proxy.settings import UpstreamSettings

log = logging.getLogger("heed.relay")


class SmtpUpstream:
    """Relays copies over up to ``pool_size`` reused connections."""

    def __init__(self, settings: UpstreamSettings, *, local_hostname: str | None = None) -> None:
        self.settings = settings
        self.local_hostname = local_hostname
        self._idle: list[aiosmtplib.SMTP] = []
        self._slots = asyncio.Semaphore(settings.pool_size)

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host, port=s.port, timeout=s.timeout, local_hostname=self.local_hostname,
            start_tls=s.starttls, validate_certs=s.tls_verify,
            username=s.username, password=s.password,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPException as exc:
            code = getattr(exc, "code", 421) or 421
            # Connect refused, timed out, or a 4xx/5xx greeting: all worth retrying.
            raise UpstreamError(code if 400 <= code < 500 else 421,
                                "upstream not reachable", temporary=True) from exc
        except OSError as exc:
            raise UpstreamError(421, "upstream not reachable", temporary=True) from exc
        return client

    async def send(self, sender: str, recipients: Sequence[str],
                   data: bytes) -> dict[str, tuple[int, str]]:
        """One transaction; returns the recipients the upstream refused (address -> reply)."""
        async with self._slots:
            reused = bool(self._idle)
            client = self._idle.pop() if reused else await self._connect()
            try:
                refused = await self._transaction(client, sender, recipients, data)
            except _Stale as stale:
                client.close()
                if not reused:
                    raise UpstreamError(421, "upstream connection lost",
                                        temporary=True) from stale
                # A pooled connection the server closed while idle (RFC 5321
                # §4.5.3.2.7 lets it): nothing was accepted, try once on a new one.
                client = await self._connect()
                try:
                    refused = await self._transaction(client, sender, recipients, data)
                except _Stale as exc:
                    raise UpstreamError(421, "upstream connection lost",
                                        temporary=True) from exc
            except BaseException:
                client.close()
                raise
            self._idle.append(client)
            return refused

    async def _transaction(self, client: aiosmtplib.SMTP, sender: str,
                           recipients: Sequence[str], data: bytes) -> dict[str, tuple[int, str]]:
        options = []
        # RFC 6531: UTF-8 addresses need SMTPUTF8; RFC 6152: 8-bit bodies say so.
        if not sender.isascii() or not all(r.isascii() for r in recipients):
            options.append("SMTPUTF8")
        if not data.isascii():
            options.append("BODY=8BITMIME")
        try:
            errors, _ = await client.sendmail(sender, list(recipients), data,
                                              mail_options=options)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = {e.recipient: (e.code, e.message) for e in exc.recipients}
            if all(code >= 500 for code, _ in refused.values()):
                await self._reset(client)
                return refused
            client.close()
            raise UpstreamError(450, "recipients deferred", temporary=True) from exc
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise _Stale() from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise UpstreamError(421, "upstream timed out", temporary=True) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise UpstreamError(exc.code, exc.message, temporary=exc.code < 500) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise UpstreamError(421, "upstream connection failed", temporary=True) from exc
        # Codes < 500 here are recipients deferred while others were accepted;
        # the mail path holds those and retries them.
        return {r: (v.code, v.message) for r, v in errors.items()}

    @staticmethod
    async def _reset(client: aiosmtplib.SMTP) -> None:
        try:
            await client.rset()
        except aiosmtplib.SMTPException:
            client.close()

    async def ping(self) -> bool:
        """True when the upstream answers (for /readyz)."""
        try:
            client = await self._connect()
        except UpstreamError:
            return False
        try:
            await client.quit()
        except aiosmtplib.SMTPException:
            client.close()
        return True

    async def close(self) -> None:
        while self._idle:
            client = self._idle.pop()
            try:
                await asyncio.wait_for(client.quit(), 2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


class _Stale(Exception):
    """The connection was gone before the upstream accepted anything."""
