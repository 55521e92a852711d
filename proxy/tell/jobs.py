"""Outbound jobs in Redis: made once per id, a ZSET by due time, claimed with leases (as arq)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.keys import Keys
from proxy.lease import HELD, Leases, text

KINDS = ("one-click", "mailto", "webhook")
STATES = ("created", "sent", "failed", "dead")  # failed: attempts that will be retried
DONE_KEEP = 30 * 86400  # a finished job's record stays this long: the same id is not made again

# Make a job only if its id was never made (KEYS: due, job, stats; ARGV: id, due, kind,
# then field/value pairs): a worker that dies after making it and before forgetting
# its outbox entry makes it again, and this makes that a no-op.
_MAKE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':created', 1)
return 1
"""

# End a claimed job (KEYS: claimed, job, stats, dead, claims; ARGV: id, kind, state, now,
# error, keep, token): only while this claim still holds it (proxy/lease.py), so a job a
# stalled worker lost and another took over is counted and ended once. (Its request may
# still go twice, which is harmless: RFC 8058 one-click is idempotent, a webhook carries
# its id.)
_END = HELD + """
if not held(KEYS[5], ARGV[1], ARGV[7]) then return 0 end
if unclaim(KEYS[1], KEYS[5], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'status', ARGV[3], 'finished', ARGV[4], 'last_error', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':' .. ARGV[3], 1)
if ARGV[3] == 'dead' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1]) end
return 1
"""

# Try again later (KEYS: due, claimed, job, stats, claims; ARGV: id, kind, due, error,
# token), likewise only while this claim holds the job.
_RETRY = HELD + """
if not held(KEYS[5], ARGV[1], ARGV[5]) then return 0 end
if unclaim(KEYS[2], KEYS[5], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('HSET', KEYS[3], 'last_error', ARGV[4])
redis.call('HINCRBY', KEYS[4], ARGV[2] .. ':failed', 1)
return 1
"""


def job_id(event_id: str, kind: str, target: str) -> str:
    """Stable: one event makes at most one job per kind and target."""
    return hashlib.sha256(f"{event_id}\x00{kind}\x00{target}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Job:
    """One request to make: a one-click POST, an unsubscribe mail, or a webhook delivery."""

    id: str
    kind: str  # one of KINDS
    target: str  # the tool's URL, its mailto URI, or the webhook endpoint
    event: str  # the outbox event id (the webhook-id)
    address: str = ""  # whose refusal it tells ("" for webhooks of an erasure)
    scope: str = ""
    refused_at: float = 0.0
    body: str = ""  # the webhook payload (JSON), fixed when made: retries send the same
    attempts: int = 0
    created: float = 0.0
    claim: str = ""  # the fencing token of the claim this job was read under (not stored)

    def to_hash(self) -> dict[str, str]:
        return {"id": self.id, "kind": self.kind, "target": self.target, "event": self.event,
                "address": self.address, "scope": self.scope,
                "refused_at": repr(self.refused_at), "body": self.body,
                "attempts": str(self.attempts), "created": repr(self.created),
                "status": "pending"}

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> Job:
        f = {text(k): text(v) for k, v in raw.items()}

        def num(name: str) -> float:
            try:
                return float(f.get(name) or 0)
            except ValueError:
                return 0.0

        return cls(id=f.get("id", ""), kind=f.get("kind", ""), target=f.get("target", ""),
                   event=f.get("event", ""), address=f.get("address", ""),
                   scope=f.get("scope", ""), refused_at=num("refused_at"),
                   body=f.get("body", ""), attempts=int(num("attempts")),
                   created=num("created"))


class Jobs:
    """The outbound job queue; every key shares the {tell} hash tag (one slot, scripts)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._make = redis.register_script(_MAKE)
        self._end = redis.register_script(_END)
        self._retry = redis.register_script(_RETRY)
        self.leases = Leases(redis, keys.tell_due, keys.tell_claimed, keys.tell_claims)

    async def make(self, job: Job, due: float) -> bool:
        """Store ``job`` due at ``due``; False when a job of that id was made before."""
        k = self.keys
        args: list[str] = [job.id, repr(due), job.kind]
        for name, value in job.to_hash().items():
            args += [name, value]
        try:
            return bool(await self._make(keys=[k.tell_due, k.tell_job(job.id), k.tell_stats],
                                         args=args))
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def claim(self, now: float, count: int, lease: float) -> list[Job]:
        """Jobs due by ``now`` (and those whose worker died), each claimed for ``lease``."""
        return (await self.claim_due(now, count, lease))[0]

    async def claim_due(self, now: float, count: int, lease: float, recover: bool = True
                        ) -> tuple[list[Job], float | None]:
        """``claim``, and when the first job left comes due (None: none is waiting);
        without ``recover``, jobs whose worker died are left for a later look."""
        k = self.keys
        try:
            if recover:
                await self.leases.recover(now)
            token, ids, first = await self.leases.claim_next(now, count, lease)
            if not ids:
                return [], first
            pipe = self.redis.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(k.tell_job(i))
            raws = await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return [replace(Job.from_hash(r), claim=token) for r in raws if r], first

    async def end(self, job: Job, state: str, now: float, error: str = "") -> bool:
        """``sent`` or ``dead``: the job leaves the queue (its record stays a while); False
        when this claim no longer holds it (its lease ended and another worker took it)."""
        k = self.keys
        try:
            return bool(await self._end(
                keys=[k.tell_claimed, k.tell_job(job.id), k.tell_stats, k.tell_dead,
                      k.tell_claims],
                args=[job.id, job.kind, state, repr(now), error[:500], DONE_KEEP, job.claim]))
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def retry(self, job: Job, due: float, error: str) -> bool:
        """Back to due after a failed attempt; False when this claim no longer holds it."""
        k = self.keys
        try:
            return bool(await self._retry(
                keys=[k.tell_due, k.tell_claimed, k.tell_job(job.id), k.tell_stats,
                      k.tell_claims],
                args=[job.id, job.kind, repr(due), error[:500], job.claim]))
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def stats(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> count; pending = created - sent - dead."""
        try:
            raw = await self.redis.hgetall(self.keys.tell_stats)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        out: dict[tuple[str, str], int] = {}
        for name, value in (raw or {}).items():
            kind, _, state = text(name).rpartition(":")
            out[(kind, state)] = int(text(value))
        for kind in KINDS:
            made = out.get((kind, "created"), 0)
            out[(kind, "pending")] = made - out.get((kind, "sent"), 0) - out.get((kind, "dead"), 0)
        return out

    async def dead(self, count: int = 100) -> list[Job]:
        """The newest jobs given up, for `heed tell dead` and people reading the trail."""
        try:
            ids = await self.redis.zrevrange(self.keys.tell_dead, 0, count - 1)
            pipe = self.redis.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.tell_job(text(i)))
            raws = await pipe.execute() if ids else []
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return [Job.from_hash(r) for r in raws if r]
