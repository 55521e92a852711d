"""The outbox: each change to whether a person may be mailed, written in the change's pipeline.

The tell worker turns every entry into outbound jobs (proxy/tell/worker.py). Written
beside the change itself, so a crash after the change cannot lose what the tool
must hear; read through a consumer group, so an entry a dead worker held is taken over.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError, ResponseError

from proxy.errors import StateUnavailable
from proxy.keys import Keys

GROUP = "tell"
EVENT_TYPES = ("refusal.created", "refusal.lifted", "consent.granted", "consent.revoked",
               "person.resubscribed", "person.erased", "preferences.changed",
               "lifecycle.changed")


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Event:
    """One change, as the outbox keeps it: ``id`` is stable (webhook-id, job ids)."""

    type: str
    address: str = ""  # "" for an erasure: the person is known by ``data["suppression_id"]``
    list: str = ""  # the list or scope ("*" = every list) the change is about
    kind: str = ""  # refusal kind (unsubscribe, complaint, bounce, manual)
    channel: str = ""
    at: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)
    id: str = ""

    def to_fields(self) -> dict[str, str]:
        return {"id": self.id, "type": self.type, "address": self.address, "list": self.list,
                "kind": self.kind, "channel": self.channel, "at": repr(float(self.at)),
                "data": json.dumps(self.data, ensure_ascii=False, sort_keys=True)}

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> Event:
        f = {_s(k): _s(v) for k, v in raw.items()}
        try:
            data = json.loads(f.get("data", "{}"))
        except ValueError:
            data = {}
        try:
            at = float(f.get("at", "0"))
        except ValueError:
            at = 0.0
        return cls(type=f.get("type", ""), address=f.get("address", ""), list=f.get("list", ""),
                   kind=f.get("kind", ""), channel=f.get("channel", ""), at=at,
                   data=data if isinstance(data, dict) else {}, id=f.get("id", ""))


def note(pipe: Any, keys: Keys, event: Event) -> Event:
    """Queue the event's XADD on the caller's pipeline; returns it with its new stable id."""
    if event.type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event.type!r}")
    stamped = Event(event.type, event.address, event.list, event.kind, event.channel, event.at,
                    event.data, event.id or "evt_" + os.urandom(12).hex())
    # Never trimmed: the worker deletes what it has turned into jobs.
    pipe.xadd(keys.tell_outbox, stamped.to_fields())
    return stamped


class Outbox:
    """Reads the outbox for one worker (``consumer``) and forgets what it has handled."""

    def __init__(self, redis: Any, keys: Keys, consumer: str) -> None:
        self.redis = redis
        self.key = keys.tell_outbox
        self.consumer = consumer
        self._group = False

    async def _ensure_group(self) -> None:
        if self._group:
            return
        try:
            await self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group = True

    async def take(self, count: int, lease: float, block: float = 0.0,
                   stale: bool = True) -> list[tuple[str, Event]]:
        """Entries a dead worker held longer than ``lease`` seconds (unless not ``stale``),
        then new ones, waiting up to ``block`` seconds for one (so a refusal wakes the
        worker at once)."""
        try:
            await self._ensure_group()
            entries = []
            if stale:
                got = await self.redis.xautoclaim(self.key, GROUP, self.consumer,
                                                  min_idle_time=int(lease * 1000),
                                                  start_id="0-0", count=count)
                entries = list(got[1]) if got else []
            if len(entries) < count:
                wait = int(block * 1000) if block > 0 and not entries else None
                fresh = await self.redis.xreadgroup(GROUP, self.consumer, {self.key: ">"},
                                                    count=count - len(entries), block=wait)
                for _stream, items in fresh or []:
                    entries.extend(items)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return [(_s(i), Event.from_fields(f)) for i, f in entries if f]

    async def done(self, entry_ids: list[str]) -> None:
        if not entry_ids:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.xack(self.key, GROUP, *entry_ids)
            pipe.xdel(self.key, *entry_ids)
            await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def pending(self) -> int:
        try:
            return int(await self.redis.xlen(self.key))
        except RedisError:
            return 0
