"""The audit trail as the report reads it: big XRANGE pages, each entry's fields by position."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
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


async def _pages(redis: Any, key: str, start: str, chunk: int) -> AsyncGenerator[Any, None]:
    """XRANGE pages on a connection of its own, the next one asked for before a page is
    given out: Redis builds it while heed folds this one (on the other core), instead of
    one waiting for the other. The command name as bytes and the connection's own read
    leave the reply as hiredis parsed it, nested lists, no dict built per entry."""
    try:
        conn = await redis.connection_pool.get_connection()
    except TypeError:  # redis-py before 5.3 wants the command's name
        conn = await redis.connection_pool.get_connection("XRANGE")
    done = False
    try:
        await conn.send_command(b"XRANGE", key, start, "+", b"COUNT", chunk)
        while True:
            raw = await conn.read_response()
            if len(raw) == chunk:  # sent before the caller folds this page
                await conn.send_command(b"XRANGE", key, "(" + _str(raw[-1][0]), "+",
                                        b"COUNT", chunk)
            else:
                done = True
            if raw:
                yield raw
            if done:
                return
    finally:
        if not done:  # stopped early, or failed: a reply may still be coming on it
            await conn.disconnect()
        await redis.connection_pool.release(conn)


async def _paged(redis: Any, key: str, start: str, chunk: int) -> AsyncGenerator[Any, None]:
    """XRANGE pages through any client (a Cluster's, or one wrapping a client)."""
    while True:
        raw = await redis.xrange(key, start, "+", count=chunk)
        if raw:
            yield raw
        if len(raw) < chunk:
            return
        start = "(" + _str(raw[-1][0])


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def pages(redis: Any, keys: Keys, since: float,
                chunk: int = CHUNK) -> AsyncGenerator[list[Any], None]:
    """Yield the trail from the window's first stream id on, ``chunk`` entries per round
    trip, as the reply's [id, fields] pairs (entries are filtered by their own ``at`` later)."""
    read = _pages if isinstance(redis, aioredis.Redis) else _paged
    try:
        # aclosing: when the caller stops early or fails, _pages gives its connection back
        # now, not when the abandoned generator is collected.
        async with aclosing(read(redis, keys.audit, since_id(since), chunk)) as trail:
            async for raw in trail:
                yield raw
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
