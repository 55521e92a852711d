"""Leases on the ids of a Redis queue (as arq): due ZSET -> claimed ZSET, each claim fenced.

A claim moves due ids to ``claimed``, scored by the lease's end, and writes its fencing
token for each id in ``claims``. Its worker renews the lease while it still works
(``renew``) and ends an id only while the token is still its own (the ``HELD`` Lua
helper in the queue's own scripts), so an id recovered by another worker after a lost
lease is not completed twice. Every key of one queue shares a hash tag (one slot)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

# Lua helpers for a queue's own end scripts: whether the claim with token ``t`` still
# holds ``id``, and the claim's end (out of claimed, its token void).
HELD = """
local function held(claims, id, t)
  return redis.call('HGET', claims, id) == t
end
local function unclaim(claimed, claims, id)
  redis.call('HDEL', claims, id)
  return redis.call('ZREM', claimed, id)
end
"""

# KEYS: due, claimed, claims. Move up to ARGV[2] due ids (score <= ARGV[1]) to claimed,
# scored by the lease's end (ARGV[3]), with the claim's token ARGV[4] (none when
# empty); atomic, so two workers never claim the same id.
_TAKE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], id, ARGV[4]) end
end
"""
_CLAIM = _TAKE + "return ids"
# The same, and the due time of the first id left ("" when none): a worker that knows
# it sleeps until then instead of looking every poll interval.
_CLAIM_NEXT = _TAKE + """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {ids, first[2] or ''}
"""

# KEYS: due, claimed, claims. Claims whose lease ended (their worker died or stalled)
# go back to due, due now (ARGV[1]); their tokens are void.
_RECOVER = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
  redis.call('HDEL', KEYS[3], id)
end
return #ids
"""

# KEYS: claimed, claims. The heartbeat: extend to ARGV[1] the leases of ids ARGV[3..]
# still held with token ARGV[2] (with no token: still claimed at all); returns the ids
# whose claim is lost.
_RENEW = """
local lost = {}
for i = 3, #ARGV do
  local ours
  if ARGV[2] ~= '' then
    ours = redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[2]
  else
    ours = redis.call('ZSCORE', KEYS[1], ARGV[i]) ~= false
  end
  if ours then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
"""


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class Leases:
    """The claims on one queue's ids: ``due`` and ``claimed`` ZSETs, ``claims`` HASH of tokens."""

    def __init__(self, redis: Any, due: str, claimed: str, claims: str) -> None:
        self.due, self.claimed, self.claims = due, claimed, claims
        self._claim = redis.register_script(_CLAIM)
        self._claim_next = redis.register_script(_CLAIM_NEXT)
        self._recover = redis.register_script(_RECOVER)
        self._renew = redis.register_script(_RENEW)

    async def claim(self, now: float, limit: int, lease: float,
                    fenced: bool = True) -> tuple[str, list[str]]:
        """Up to ``limit`` ids due by ``now``, held until ``now + lease``; and the claim's
        fencing token ("" when not ``fenced``)."""
        token = uuid.uuid4().hex if fenced else ""
        ids = await self._claim(keys=[self.due, self.claimed, self.claims],
                                args=[repr(now), limit, repr(now + lease), token])
        return token, [text(i) for i in ids]

    async def claim_next(self, now: float, limit: int, lease: float
                         ) -> tuple[str, list[str], float | None]:
        """``claim`` (fenced), and when the first id left comes due (None: none left)."""
        token = uuid.uuid4().hex
        ids, first = await self._claim_next(keys=[self.due, self.claimed, self.claims],
                                            args=[repr(now), limit, repr(now + lease), token])
        return token, [text(i) for i in ids], float(text(first)) if first else None

    async def recover(self, now: float) -> int:
        """Claims whose lease ended go back to due; returns how many."""
        return int(await self._recover(keys=[self.due, self.claimed, self.claims],
                                       args=[repr(now)]))

    async def renew(self, ids: Sequence[str], token: str, until: float) -> set[str]:
        """Extend the leases of ``ids`` still held with ``token``; the ids whose claim was lost."""
        if not ids:
            return set()
        lost = await self._renew(keys=[self.claimed, self.claims],
                                 args=[repr(until), token, *ids])
        return {text(i) for i in lost}
