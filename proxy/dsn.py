"""Delivery status notifications (RFC 3464) for held mail that will never be delivered.

A held copy that the upstream refuses for good, or that outlives ``queue.max_hold``
(a permanent failure, RFC 5321 §4.5.4.1), was already answered 250: its sender must
hear of it (RFC 5321 §6.1). The notification is put in the delay queue in the same
Redis step that ends the held copy, so a crash either leaves the copy (and it is
given up again later) or leaves exactly one notification, which the queue then
delivers with its usual retries. A copy whose sender is ``<>`` gets none: a bounce
is never bounced (RFC 5321 §6.1, RFC 3464 §2.1).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Protocol

from proxy.clock import Clock
from proxy.errors import UpstreamError
from proxy.message import split
from proxy.queue import DelayQueue, HeldMail
from proxy.scheduler import Release, ReleaseOutcome

log = logging.getLogger("heed.dsn")

# The stream name of a queued notification: not a policy stream, so no policy applies.
DSN_STREAM = "heed:dsn"

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")

Hook = Callable[[HeldMail, str], Awaitable[None]]


class Upstream(Protocol):
    """What a notification needs of the relay (``proxy.relay.SmtpUpstream`` fits)."""

    async def send(self, sender: str, recipients: Sequence[str],
                   data: bytes) -> dict[str, tuple[int, str]]: ...


def is_null_sender(sender: str) -> bool:
    return sender.strip().strip("<>").strip() == ""


def status_of(error: str, *, expired: bool) -> str:
    """The RFC 3463 status: the upstream's enhanced code if it gave one, else a generic one."""
    if expired:
        return "5.4.7"  # delivery time expired
    found = _ENHANCED.search(error)
    if found and found.group(1) == "5":
        return ".".join(found.groups())
    return "5.0.0"


def build(item: HeldMail, why: str, *, reporting_mta: str, now: float, expired: bool,
          dsn_id: str) -> bytes:
    """The notification message (multipart/report; report-type=delivery-status)."""
    boundary = f"heed-dsn-{dsn_id}"
    when = format_datetime(datetime.fromtimestamp(now, UTC))
    arrived = format_datetime(datetime.fromtimestamp(item.first_queued, UTC))
    diagnostic = _UNPRINTABLE.sub("", why)[:400] or "delivery failed"
    recipient = item.recipient.strip("<>")
    status = status_of(why, expired=expired)
    # RFC 6533: a UTF-8 address is typed utf-8, not rfc822.
    rtype = "rfc822" if recipient.isascii() else "utf-8"
    dtype = "smtp" if re.match(r"^[45]\d\d ", diagnostic) else "x-heed"
    if expired:
        human = ("Your message could not be delivered in time and was given up.\r\n"
                 f"It was held since {arrived} and its delivery time ran out.\r\n")
    else:
        human = "Your message could not be delivered: the receiving system refused it.\r\n"
    human += f"\r\nRecipient: {recipient}\r\nReason: {diagnostic}\r\n"
    headers, _body = split(item.data)
    report = (
        f"Reporting-MTA: dns; {reporting_mta}\r\n"
        f"Arrival-Date: {arrived}\r\n"
        "\r\n"
        f"Final-Recipient: {rtype}; {recipient}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: {dtype}; {diagnostic}\r\n"
        f"Last-Attempt-Date: {when}\r\n"
    )
    text = (
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"
        f"To: <{item.sender.strip('<>')}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {when}\r\n"
        f"Message-ID: <{dsn_id}@{reporting_mta}>\r\n"
        "Auto-Submitted: auto-replied\r\n"  # RFC 3834 §5
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        f'\tboundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Description: Notification\r\n"
        "\r\n"
        f"{human}"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n"
        "Content-Description: Delivery report\r\n"
        "\r\n"
        f"{report}"
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "Content-Description: Undelivered message headers\r\n"
        "\r\n"
    ).encode()
    return text + headers + f"\r\n--{boundary}--\r\n".encode()


class Bounces:
    """Turns a given-up held copy into one queued notification, and delivers those."""

    def __init__(self, queue: DelayQueue, upstream: Upstream, clock: Clock,
                 reporting_mta: str) -> None:
        self.queue = queue
        self.upstream = upstream
        self.clock = clock
        self.reporting_mta = reporting_mta

    async def give_up(self, item: HeldMail, why: str, *, expired: bool) -> bool:
        """Queue the notification for ``item`` and end ``item`` in one step; True if queued."""
        if item.stream == DSN_STREAM or is_null_sender(item.sender):
            return False  # never a bounce of a bounce (RFC 5321 §6.1)
        if expired and item.last_error and item.last_error not in why:
            why = f"{why}; last error: {item.last_error}"
        now = self.clock.now()
        dsn_id = f"dsn-{item.id}"
        notice = HeldMail(
            id=dsn_id, sender="", recipient=item.sender.strip("<>"), stream=DSN_STREAM,
            data=build(item, why, reporting_mta=self.reporting_mta, now=now, expired=expired,
                       dsn_id=uuid.uuid4().hex),
            due=now, first_queued=now, message_id=item.message_id,
        )
        queued = await self.queue.replace(item.id, notice)
        if queued:
            log.info("delivery status notification %s queued for held copy %s", dsn_id, item.id)
        return queued

    def hook(self, audit: Hook, *, expired: bool) -> Hook:
        """A scheduler hook: audit the end of the copy, then queue its notification."""
        async def hook(item: HeldMail, why: str) -> None:
            await audit(item, why)
            await self.give_up(item, why, expired=expired)
        return hook

    def release(self, inner: Callable[[HeldMail], Awaitable[Release]]
                ) -> Callable[[HeldMail], Awaitable[Release]]:
        """The scheduler's release: notifications go straight out, everything else to ``inner``."""
        async def release(item: HeldMail) -> Release:
            if item.stream != DSN_STREAM:
                return await inner(item)
            return await self.send(item)
        return release

    async def send(self, item: HeldMail) -> Release:
        """Deliver one notification with the null sender (RFC 5321 §4.5.5)."""
        try:
            refused = await self.upstream.send("", [item.recipient], item.data)
        except UpstreamError as exc:
            outcome = ReleaseOutcome.TEMPFAIL if exc.temporary else ReleaseOutcome.PERMFAIL
            return Release(outcome, error=f"{exc.code} {exc.message}")
        if item.recipient in refused:
            code, text = refused[item.recipient]
            outcome = ReleaseOutcome.TEMPFAIL if code < 500 else ReleaseOutcome.PERMFAIL
            return Release(outcome, error=f"{code} {text}")
        return Release(ReleaseOutcome.DELIVERED)
