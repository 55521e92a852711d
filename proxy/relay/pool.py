"""Pooled upstream connections (set up by aiosmtplib: EHLO, STARTTLS, AUTH); failures mapped."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import aiosmtplib

from proxy.errors import UpstreamError
from proxy.relay.transaction import LOST, Refused, Rejected, Stale, transaction
from proxy.relay.wire import Lost, ReplyTimeout, Wire
from proxy.settings import UpstreamSettings

log = logging.getLogger("heed.relay")

# Servers may drop a client idle for 5 minutes (RFC 5321 §4.5.3.2.7); a pooled
# connection idle for longer than this is closed rather than reused.
MAX_IDLE = 240.0


class SmtpUpstream:
    """Relays copies over up to ``pool_size`` reused connections."""

    def __init__(self, settings: UpstreamSettings, *, local_hostname: str | None = None,
                 observe: Callable[[float], None] | None = None) -> None:
        self.settings = settings
        self.observe = observe  # told each transaction's seconds (heed_upstream_seconds)
        self.local_hostname = local_hostname
        self._idle: list[tuple[Wire, float]] = []
        self._slots = asyncio.Semaphore(max(1, settings.pool_size))
        self._closed = False

    # --- pool ---------------------------------------------------------------------
    async def _connect(self) -> Wire:
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
        # From here on heed reads the replies itself, in order (proxy/relay/wire.py).
        return Wire(client)

    async def _acquire(self, *, fresh: bool = False) -> tuple[Wire, bool]:
        """An idle connection that still looks alive, else a new one; (wire, reused)."""
        now = time.monotonic()
        while self._idle and not fresh:
            wire, since = self._idle.pop()
            if wire.is_connected and not wire.unsolicited and now - since < MAX_IDLE:
                return wire, True
            wire.close()
        return await self._connect(), False

    def _release(self, wire: Wire) -> None:
        if self._closed or not wire.is_connected:
            wire.close()
        else:
            self._idle.append((wire, time.monotonic()))

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
        s = self.settings
        async with self._slots:
            for attempt in (1, 2):
                wire, reused = await self._acquire(fresh=attempt == 2)
                try:
                    refused = await transaction(wire, sender, recipients, data,
                                                timeout=s.timeout, data_timeout=s.data_timeout)
                except Stale:
                    wire.close()
                    if reused and attempt == 1:
                        # The server dropped a pooled connection while it idled;
                        # nothing was accepted, so one retry on a new one is safe.
                        continue
                    raise LOST from None
                except Rejected as rejected:
                    self._release(wire)
                    raise rejected.error from None
                except UpstreamError as exc:
                    wire.close()
                    log.warning("upstream transaction failed: %s %s", exc.code, exc.message)
                    raise
                except BaseException:
                    wire.close()
                    raise
                self._release(wire)
                return refused
        raise AssertionError("unreachable")  # pragma: no cover

    # --- health and shutdown ------------------------------------------------------
    async def ping(self) -> bool:
        """True when the upstream answers NOOP (for /readyz)."""
        async with self._slots:
            for _ in (1, 2):
                try:
                    wire, _reused = await self._acquire()
                except UpstreamError:
                    return False
                try:
                    code, _text = await wire.command(b"NOOP", self.settings.timeout)
                except (Lost, ReplyTimeout):
                    code = 0
                if code != 250:
                    wire.close()
                    continue
                self._release(wire)
                return True
        return False

    async def close(self) -> None:
        """Say QUIT on every idle connection; sends after this use a connection once."""
        self._closed = True
        idle, self._idle = self._idle, []
        for wire, _since in idle:
            try:
                await wire.command(b"QUIT", 2)  # RFC 5321 §4.1.1.10
            except (Lost, ReplyTimeout):
                pass
            wire.close()


async def _greet(client: aiosmtplib.SMTP) -> None:
    """EHLO, or HELO for an old server (RFC 5321 §3.2)."""
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        await client.helo()
