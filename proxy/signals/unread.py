"""Reports heed accepted but could not turn into an event, kept for an operator to read.

``heed bounces unread`` lists them; each keeps the report itself (its first
UNREAD_BYTES) so a new MTA's wording can be looked at and taught to the reader.
The list is bounded (UNREAD_KEEP reports) and expiring (UNREAD_AGE): a Redis
stream trimmed on every write.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, ResponseError

from proxy.clock import Clock
from proxy.errors import StateUnavailable
from proxy.keys import Keys

UNREAD_KEEP = 1000  # reports
UNREAD_AGE = 30 * 86400.0  # seconds
UNREAD_BYTES = 256 * 1024  # of each report


@dataclass(frozen=True)
class UnreadReport:
    """One kept report: when, to which of heed's addresses, why unread, and the report."""

    id: str
    at: float
    to: str
    why: str
    size: int
    data: bytes

    @property
    def subject(self) -> str:
        message = email.message_from_bytes(self.data[:16384], policy=email.policy.compat32)
        return " ".join(str(message.get("Subject", "") or "").split())[:120]


class Unread:
    """The kept reports, in Redis (Keys.unread)."""

    def __init__(self, redis: Any, keys: Keys, clock: Clock) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock

    async def keep(self, to: str, data: bytes, why: str) -> None:
        now = self.clock.now()
        fields = {"at": repr(now), "to": to, "why": why[:300], "size": str(len(data)),
                  "data": data[:UNREAD_BYTES]}
        try:
            try:
                # The id's time is heed's clock, so trimming by age uses the same clock.
                await self.redis.xadd(self.keys.unread, fields, id=f"{int(now * 1000)}-*",
                                      maxlen=UNREAD_KEEP, approximate=False)
            except ResponseError:  # the clock went back behind the last id
                await self.redis.xadd(self.keys.unread, fields, maxlen=UNREAD_KEEP,
                                      approximate=False)
            await self.redis.xtrim(self.keys.unread, minid=int((now - UNREAD_AGE) * 1000),
                                   approximate=False)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def since(self, since: float) -> list[UnreadReport]:
        """The kept reports from ``since`` on, oldest first."""
        floor = max(since, self.clock.now() - UNREAD_AGE)
        rows = await self.redis.xrange(self.keys.unread, min=str(max(0, int(floor * 1000))))
        return [_report(entry_id, fields) for entry_id, fields in rows]

    async def get(self, report_id: str) -> UnreadReport | None:
        """The kept report of that id; None for none, a mistyped id included."""
        try:
            rows = await self.redis.xrange(self.keys.unread, min=report_id, max=report_id)
        except ResponseError:  # "Invalid stream ID": no report has it
            return None
        return _report(*rows[0]) if rows else None


def _report(entry_id: Any, fields: dict[Any, Any]) -> UnreadReport:
    raw = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in fields.items()}

    def text(name: str) -> str:
        value = raw.get(name, b"")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    data = raw.get("data", b"")
    return UnreadReport(
        id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
        at=float(text("at") or 0), to=text("to"), why=text("why"),
        size=int(text("size") or 0), data=data if isinstance(data, bytes) else str(data).encode())
