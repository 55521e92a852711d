"""The audit trail as the report reads it: big XRANGE pages, only the fields it counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.keys import Keys

# Entries per XRANGE round trip: a million entries in 100 round trips, and a page of
# 10,000 (about 4 MB) is all the report holds of the trail at once.
CHUNK = 10_000
SKEW = 3600.0  # stream ids carry Redis' clock, entries heed's: start an hour early, filter by `at`


# The field names in the order AuditEntry.to_fields writes them (tests/test_report_scale.py
# checks they agree): an entry in this order is read by position.
ORDER = [b"at", b"kind", b"recipient", b"outcome", b"stream", b"message_id", b"sender",
         b"policy_version", b"correlation_id", b"detail", b"one_click", b"body_link",
         b"reasons"]
READ = frozenset(("decision", "change"))  # the kinds whose other fields a figure reads


class Row(NamedTuple):
    """The fields of an audit entry the figures read (proxy/audit.py AuditEntry has all)."""

    at: float
    kind: str
    recipient: str
    outcome: str
    stream: str
    reasons: tuple[str, ...]
    detail: str
    one_click: str
    body_link: str


def since_id(since: float) -> str:
    """The XRANGE start id for entries recorded at ``since`` (ids are ms timestamps)."""
    return f"{max(0, int((since - SKEW) * 1000))}-0"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _reasons(raw: Any) -> tuple[str, ...]:
    if raw in (b"[]", b"", "[]", "", None):  # most entries: no JSON parse for them
        return ()
    text = _text(raw)
    try:
        return tuple(str(r) for r in json.loads(text))
    except (ValueError, TypeError):
        return (text,)


def row(fields: Any, since: float, now: float) -> Row | None:
    """The entry's row if it was recorded within [since, now] (by its own ``at``), else None.

    ``fields`` is the reply's flat [name, value, …] list, or a map (a Cluster client's)."""
    if isinstance(fields, list) and fields[0::2] == ORDER:
        return _in_order(fields, since, now)
    if isinstance(fields, list):
        it = iter(fields)
        fields = dict(zip(it, it, strict=True))
    elif b"kind" not in fields:  # a client that decodes replies: names are str
        fields = {k.encode() if isinstance(k, str) else k: v for k, v in fields.items()}
    g = fields.get
    try:
        at = float(g(b"at") or 0)
    except ValueError:
        at = 0.0
    if not since <= at <= now:
        return None
    return Row(at, _text(g(b"kind")), _text(g(b"recipient")), _text(g(b"outcome")),
               _text(g(b"stream")), _reasons(g(b"reasons")), _text(g(b"detail")),
               _text(g(b"one_click")), _text(g(b"body_link")))


def _in_order(f: list[bytes], since: float, now: float) -> Row | None:
    """An entry as AuditEntry.to_fields writes it: each value by its place, no map."""
    try:
        at = float(f[1])
    except ValueError:
        at = 0.0
    if not since <= at <= now:
        return None
    kind = f[3].decode()
    if kind not in READ:  # counted, nothing else read
        return Row(at, kind, "", "", "", (), "", "", "")
    return Row(at, kind, f[5].decode("utf-8", "replace"), f[7].decode(), f[9].decode(),
               _reasons(f[25]), f[19].decode("utf-8", "replace"), f[21].decode(),
               f[23].decode())


async def _page(redis: Any, key: str, start: str, chunk: int) -> Any:
    if not isinstance(redis, aioredis.Redis):  # a Cluster's client, or one wrapping a client
        return await redis.xrange(key, start, "+", count=chunk)
    # The command name as bytes matches none of redis-py's reply callbacks (keyed by str):
    # the reply stays hiredis's nested lists, without a dict built per entry in Python.
    return await redis.execute_command(b"XRANGE", key, start, "+", b"COUNT", chunk)


async def read_audit(redis: Any, keys: Keys, since: float, now: float,
                     chunk: int = CHUNK) -> AsyncIterator[Row]:
    """Yield trail entries recorded between ``since`` and ``now``, ``chunk`` per round trip.

    The next page is asked for before this one is parsed: Redis answers while heed
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
            pending = (asyncio.ensure_future(fetch("(" + _text(raw[-1][0])))
                       if len(raw) == chunk else None)
            for _id, fields in raw:
                entry = row(fields, since, now)
                if entry is not None:
                    yield entry
    finally:
        if pending is not None:
            pending.cancel()
