"""The delay queue: held copies in Redis, a ZSET by due time, claimed with leases (as arq does).

Each claim carries a fencing token (proxy/lease.py, kept in ``queue_claims``): its
worker renews the lease while it still works on the copy, and ends the copy (done,
retry, reschedule) only while the token is still its own, so a copy recovered by
another worker after a lost lease is not completed twice."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.keys import Keys, normalise_address
from proxy.lease import HELD, Leases

# Put a claimed id back in due (retry or delay again) only while this claim (token
# ARGV[3]) still holds it: a copy recovered by another worker is not requeued twice.
_REQUEUE = HELD + """
if not held(KEYS[4], ARGV[1], ARGV[3]) then return 0 end
if unclaim(KEYS[2], KEYS[4], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Store copies: KEYS[1] due, KEYS[2..] one item hash each; ARGV[1] = fields per
# item, then per item: id, due, field, value, … A script rather than MULTI:
# atomic on one server and on a Cluster alike (the keys share {queue}), where
# redis-py's transactional cluster pipeline runs each command on a thread.
_PUT = """
local k = tonumber(ARGV[1])
local pos = 2
for i = 2, #KEYS do
  local fields = {}
  for j = pos + 2, pos + 1 + 2 * k do fields[#fields + 1] = ARGV[j] end
  redis.call('HSET', KEYS[i], unpack(fields))
  redis.call('ZADD', KEYS[1], ARGV[pos + 1], ARGV[pos])
  pos = pos + 2 + 2 * k
end
return #KEYS - 1
"""

# Forget one copy everywhere at once: KEYS due, claimed, item, claims; ARGV[1] id;
# with a token ARGV[2], only while that claim still holds it.
_DONE = HELD + """
if ARGV[2] ~= '' and not held(KEYS[4], ARGV[1], ARGV[2]) then return 0 end
redis.call('DEL', KEYS[3])
unclaim(KEYS[2], KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""

# End a held copy (KEYS[3], id ARGV[3]) and put another (KEYS[4], id ARGV[1], due
# ARGV[2], fields from ARGV[4]) in its place, only if the first still exists: so a copy
# given up twice (a crash between the two) is replaced once.
_REPLACE = HELD + """
if redis.call('EXISTS', KEYS[3]) == 0 then return 0 end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[3])
unclaim(KEYS[2], KEYS[5], ARGV[3])
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[4], unpack(fields))
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class HeldMail:
    """One held copy for one recipient."""

    id: str
    sender: str
    recipient: str
    stream: str
    data: bytes
    due: float
    first_queued: float
    attempts: int = 0
    reasons: tuple[str, ...] = ()
    message_id: str = ""
    last_error: str = ""
    claim: str = ""  # the fencing token of the claim this copy was read under (not stored)

    def to_hash(self) -> dict[str, Any]:
        return {"id": self.id, "sender": self.sender, "recipient": self.recipient,
                "stream": self.stream, "data": self.data, "due": repr(self.due),
                "first_queued": repr(self.first_queued), "attempts": self.attempts,
                "reasons": json.dumps(list(self.reasons)), "message_id": self.message_id,
                "last_error": self.last_error}

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> HeldMail:
        s = {k.decode(): v for k, v in raw.items()}

        def text(name: str) -> str:
            return s.get(name, b"").decode("utf-8", errors="replace")

        return cls(id=text("id"), sender=text("sender"), recipient=text("recipient"),
                   stream=text("stream"), data=s.get("data", b""), due=float(text("due")),
                   first_queued=float(text("first_queued")), attempts=int(text("attempts") or 0),
                   reasons=tuple(json.loads(text("reasons") or "[]")),
                   message_id=text("message_id"), last_error=text("last_error"))


class DelayQueue:
    """Durable once ``put`` returns (Redis runs with appendfsync always)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self.leases = Leases(redis, keys.queue_due, keys.queue_claimed, keys.queue_claims)
        self._requeue = redis.register_script(_REQUEUE)
        self._put = redis.register_script(_PUT)
        self._done = redis.register_script(_DONE)
        self._replace = redis.register_script(_REPLACE)
        # Told the due time of each copy put here (the scheduler of this process listens:
        # it wakes for its own copies instead of looking every poll interval).
        self.on_put: Callable[[float], None] | None = None

    async def _run(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisError, OSError) as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def put(self, items: Sequence[HeldMail]) -> None:
        """Store the copies atomically in one round trip; once this returns Redis has them."""
        if not items:
            return
        args: list[Any] = [len(items[0].to_hash())]
        for item in items:
            args += [item.id, repr(item.due)]
            args += [x for pair in item.to_hash().items() for x in pair]
        await self._run(self._put(
            keys=[self.keys.queue_due, *(self.keys.queue_item(i.id) for i in items)], args=args))
        if self.on_put is not None:
            self.on_put(min(i.due for i in items))

    async def claim(self, now: float, limit: int, lease: float) -> list[HeldMail]:
        """Take up to ``limit`` due copies for this worker until ``now + lease``; each
        comes back with this claim's fencing token in ``claim``."""
        if limit <= 0:
            return []
        return (await self.claim_next(now, limit, lease))[0]

    async def claim_next(self, now: float, limit: int, lease: float
                         ) -> tuple[list[HeldMail], float | None]:
        """``claim``, and when the first copy left comes due (None: none waits)."""
        token, ids, first = await self._run(self.leases.claim_next(now, max(1, limit), lease))
        return await self._read_claimed(token, ids), first

    async def _read_claimed(self, token: str, ids: list[str]) -> list[HeldMail]:
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for item_id in ids:
            pipe.hgetall(self.keys.queue_item(item_id))
        raws = await self._run(pipe.execute())
        items = [replace(HeldMail.from_hash(raw), claim=token) for raw in raws if raw]
        orphans = [i for i, raw in zip(ids, raws, strict=True) if not raw]
        if orphans:  # an id whose data is gone: nothing to send, forget the id and its claim
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(self.keys.queue_claimed, *orphans)
            pipe.hdel(self.keys.queue_claims, *orphans)
            await self._run(pipe.execute())
        return items

    async def get(self, item_id: str) -> HeldMail | None:
        """One held copy, or None once it is done."""
        raw = await self._run(self.redis.hgetall(self.keys.queue_item(item_id)))
        return HeldMail.from_hash(raw) if raw else None

    async def done(self, item_id: str, claim: str = "") -> bool:
        """Forget a copy: delivered, dropped, expired or failed for good. With ``claim``
        (a fencing token) only while that claim holds it; False when it did not."""
        return bool(await self._run(self._done(
            keys=[self.keys.queue_due, self.keys.queue_claimed, self.keys.queue_item(item_id),
                  self.keys.queue_claims],
            args=[item_id, claim])))

    async def renew(self, items: Sequence[HeldMail], until: float) -> set[str]:
        """Extend the leases of copies still being worked on; the ids whose claim was lost."""
        if not items:
            return set()
        return set(await self._run(
            self.leases.renew([i.id for i in items], items[0].claim, until)))

    async def replace(self, item_id: str, new: HeldMail) -> bool:
        """End ``item_id`` and hold ``new`` instead, atomically; False if it had ended already."""
        fields: list[Any] = []
        for name, value in new.to_hash().items():
            fields += [name, value]
        replaced = bool(await self._run(self._replace(
            keys=[self.keys.queue_due, self.keys.queue_claimed, self.keys.queue_item(item_id),
                  self.keys.queue_item(new.id), self.keys.queue_claims],
            args=[new.id, repr(new.due), item_id, *fields])))
        if replaced and self.on_put is not None:
            self.on_put(new.due)
        return replaced

    async def retry(self, item: HeldMail, due: float, attempts: int, last_error: str) -> bool:
        """Back to due after a failed attempt; False if its claim no longer holds it."""
        return await self._requeue_claimed(item, due, ["attempts", attempts,
                                                       "last_error", last_error])

    async def reschedule(self, item: HeldMail, due: float,
                         reasons: Sequence[str] | None = None) -> bool:
        """Back to due without counting an attempt (the policy said: not yet)."""
        fields: list[Any] = []
        if reasons is not None:
            fields += ["reasons", json.dumps(list(reasons))]
        return await self._requeue_claimed(item, due, fields)

    async def _requeue_claimed(self, item: HeldMail, due: float, fields: list[Any]) -> bool:
        return bool(await self._run(self._requeue(
            keys=[self.keys.queue_due, self.keys.queue_claimed, self.keys.queue_item(item.id),
                  self.keys.queue_claims],
            args=[item.id, repr(due), item.claim, *fields, "due", repr(due)])))

    async def recover(self, now: float) -> int:
        """Claims whose lease ended (their worker died) go back to due; returns how many."""
        return int(await self._run(self.leases.recover(now)))

    async def depth(self) -> int:
        """Copies held, waiting or claimed."""
        return (await self.gauges())[0]

    async def oldest(self) -> float | None:
        """Due time of the earliest waiting copy (how overdue the queue is)."""
        return (await self.gauges())[1]

    async def gauges(self) -> tuple[int, float | None]:
        """``depth`` and ``oldest`` in one round trip (the /metrics gauges, every few seconds)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(self.keys.queue_due)
        pipe.zcard(self.keys.queue_claimed)
        pipe.zrange(self.keys.queue_due, 0, 0, withscores=True)
        due, claimed, first = await self._run(pipe.execute())
        return int(due) + int(claimed), float(first[0][1]) if first else None

    async def items_for(self, recipient: str) -> list[HeldMail]:
        """Copies held for one address, earliest due first; walks the whole queue (for explain)."""
        wanted = normalise_address(recipient)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.keys.queue_due, 0, -1)
        pipe.zrange(self.keys.queue_claimed, 0, -1)
        due, claimed = await self._run(pipe.execute())
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in [*due, *claimed]]
        found: list[HeldMail] = []
        for start in range(0, len(ids), 500):
            pipe = self.redis.pipeline(transaction=False)
            for item_id in ids[start:start + 500]:
                pipe.hget(self.keys.queue_item(item_id), "recipient")
            rcpts = await self._run(pipe.execute())
            for item_id, rcpt in zip(ids[start:start + 500], rcpts, strict=True):
                if rcpt is not None and normalise_address(rcpt.decode(errors="replace")) == wanted:
                    item = await self.get(item_id)
                    if item is not None:
                        found.append(item)
        return sorted(found, key=lambda h: h.due)
