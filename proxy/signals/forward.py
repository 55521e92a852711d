"""Reports passed on: a bounce or complaint to a VERP address goes on to the tool's own return path.

With VERP on, the tool's return path is replaced by heed's ``bounce+TOKEN@``, so
the tool would no longer hear its bounces. heed keeps the original envelope
sender with the VERP mapping and, after reading a report that came to that
address, queues it unchanged for that sender with the null sender (RFC 3464 §2.1,
RFC 5321 §4.5.5: a report is never answered with another). The delay queue
makes it durable and retries it; a forwarded report that fails for good is only
audited, never bounced (the queue gives no notification for its own notices).
"""

from __future__ import annotations

import logging
import uuid

from proxy.clock import Clock
from proxy.dsn import DSN_STREAM, is_null_sender
from proxy.queue import DelayQueue, HeldMail

log = logging.getLogger("heed.forward")


class Forwarder:
    """Queues a report for the original sender of the copy it is about."""

    def __init__(self, queue: DelayQueue, clock: Clock, own_domains: set[str]) -> None:
        self.queue = queue
        self.clock = clock
        self.own = {d.lower() for d in own_domains}

    def loops(self, sender: str) -> bool:
        """Whether passing a report to ``sender`` could come back to heed (or go nowhere)."""
        if is_null_sender(sender):
            return True
        return sender.strip("<>").rpartition("@")[2].lower() in self.own

    async def forward(self, sender: str, data: bytes, why: str) -> bool:
        """Queue ``data`` for ``sender``; False when it would loop (StateUnavailable: 451)."""
        if self.loops(sender):
            log.info("report not passed on: %r would loop", sender)
            return False
        now = self.clock.now()
        item = HeldMail(id=f"fwd-{uuid.uuid4().hex}", sender="", recipient=sender.strip("<>"),
                        stream=DSN_STREAM, data=data, due=now, first_queued=now,
                        reasons=("report passed on", why[:200]))
        await self.queue.put([item])
        log.info("report queued for the tool's return path", extra={"id": item.id})
        return True
