"""The audit trail as the report reads it: big XRANGE pages, each entry's fields by position."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.keys import Keys

# Entries per XRANGE round trip: a million entries in 100 round trips, and a page of
# 10,000 (about 4 MB) is all the report holds of the trail at once.
CHUNK = 10_000
SKEW = 3600.0  # stream ids carry Redis' clock, entries heed's: start an hour early, filter by `at`


# The field names in the order AuditEntry.to_fields writes them (tests/test_report_scale.py
# checks they agree): an entry in this order is read by position, f[2 * i + 1] the value
# of ORDER[i] (proxy/report/fold.py reads them so).
ORDER = [b"at", b"kind", b"recipient", b"outcome", b"stream", b"message_id", b"sender",
         b"policy_version", b"correlation_id", b"detail", b"one_click", b"body_link",
         b"reasons"]


def since_id(since: float) -> str:
    """The XRANGE start id for entries recorded at ``since`` (ids are ms timestamps)."""
    return f"{max(0, int((since - SKEW) * 1000))}-0"


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value or "").encode("utf-8")


def ordered(fields: Any) -> list[Any]:
    """An entry's flat [name, value, …] list in ORDER, values bytes ("" where missing).

    ``fields`` is the reply's flat list (as written: returned as it is; in another order,
    or from an older writer: rebuilt), or a map (a Cluster client's, or one that decodes)."""
    if isinstance(fields, list):
        if fields[0::2] == ORDER:
            return fields
        it = iter(fields)
        fields = dict(zip(it, it, strict=True))
    fields = {_bytes(k): v for k, v in fields.items()}
    out: list[Any] = []
    for name in ORDER:
        out += (name, _bytes(fields.get(name)))
    return out


async def _page(redis: Any, key: str, start: str, chunk: int) -> Any:
    if not isinstance(redis, aioredis.Redis):  # a Cluster's client, or one wrapping a client
        return await redis.xrange(key, start, "+", count=chunk)
    # The command name as bytes matches none of redis-py's reply callbacks (keyed by str):
    # the reply stays hiredis's nested lists, without a dict built per entry in Python.
    return await redis.execute_command(b"XRANGE", key, start, "+", b"COUNT", chunk)


async def pages(redis: Any, keys: Keys, since: float,
                chunk: int = CHUNK) -> AsyncIterator[list[Any]]:
    """Yield the trail from the window's first stream id on, ``chunk`` entries per round
    trip, as the reply's [id, fields] pairs (entries are filtered by their own ``at`` later).

    The next page is asked for before this one is folded: Redis answers while heed
    folds, on the other core, instead of one waiting for the other."""
    async def fetch(start: str) -> Any:
        try:
            return await _page(redis, keys.audit, start, chunk)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    pending: asyncio.Task[Any] | None = asyncio.ensure_future(fetch(since_id(since)))
    try:
        while pending is not None:
            raw = await pending
            last = raw[-1][0] if raw else b""
            pending = (asyncio.ensure_future(fetch("(" + (last.decode() if isinstance(
                last, bytes) else str(last)))) if len(raw) == chunk else None)
            if raw:
                yield raw
    finally:
        if pending is not None:
            pending.cancel()
