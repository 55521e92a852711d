"""Engagement per kind and re-permission claims: the Redis scripts and how their fields read."""

from __future__ import annotations

from proxy.keys import ENGAGED_AT, ENGAGED_MARK, REPERMISSION
from proxy.types import Engagement

# An engagement, per kind. A script, because the mark is read from the same hash it is
# written to (n:<kind> = total_sends minus the mails sent after the event), and events
# reported late (webhooks, batches) must neither move a time backwards nor forget the
# mails that followed them (the sends ZSET holds the last 35 days: exact within those).
# KEYS: engagement hash, sends ZSET. ARGV: at, kind, at:<kind>, n:<kind>, "at:", "n:".
ENGAGE = """
local h, at = KEYS[1], tonumber(ARGV[1])
local total = tonumber(redis.call('HGET', h, 'total_sends') or '0')
local after = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[1], '+inf')
local function newer(field)
  local cur = tonumber(redis.call('HGET', h, field) or '')
  return cur == nil or cur <= at
end
local old_kind = redis.call('HGET', h, 'last_kind')
local old_at = redis.call('HGET', h, 'last_engaged')
if old_kind and old_at and redis.call('HEXISTS', h, ARGV[5] .. old_kind) == 0 then
  -- recorded before per-kind fields: keep that engagement under its kind
  local since = tonumber(redis.call('HGET', h, 'sends_since') or '0') or 0
  redis.call('HSET', h, ARGV[5] .. old_kind, old_at, ARGV[6] .. old_kind,
             math.max(total - since, 0))
end
if newer(ARGV[3]) then
  redis.call('HSET', h, ARGV[3], ARGV[1], ARGV[4], math.max(total - after, 0))
end
if newer('last_engaged') then
  redis.call('HSET', h, 'last_engaged', ARGV[1], 'sends_since', after, 'last_kind', ARGV[2])
end
return 1
"""

# Claim a stream's one re-permission message: "time|message-id" (the id says whose claim
# it is, so only that message gives it back). It is free when no claim exists or the
# claim is older than the person's last counted engagement (they answered; the next
# silence earns a new one). KEYS: engagement hash. ARGV: field, since, now, message id.
CLAIM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  local at = tonumber(string.sub(cur, 1, sep and sep - 1 or -1))
  if at == nil or at >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3] .. '|' .. ARGV[4])
return 1
"""

# Give a claim back (its copy did not go out), only if this message still holds it.
UNCLAIM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local sep = cur and string.find(cur, '|', 1, true)
if sep and string.sub(cur, sep + 1) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def engagement(eng: dict[str, str], last: float | None, since: int,
                total: int) -> dict[str, Engagement]:
    out = {}
    for name, value in eng.items():
        at = _number(value) if name.startswith(ENGAGED_AT) else None
        if at is not None:
            kind = name[len(ENGAGED_AT):]
            mark = int(_number(eng.get(ENGAGED_MARK + kind)) or 0)
            out[kind] = Engagement(kind, at, max(0, total - mark))
    if not out and last is not None:
        # Recorded before heed kept kinds apart: the one engagement it knew, under its kind.
        kind = eng.get("last_kind") or "click"
        out[kind] = Engagement(kind, last, since)
    return out


def asked(eng: dict[str, str]) -> dict[str, float]:
    """stream -> when its re-permission message was claimed, from repermission:<stream>."""
    out = {}
    for name, value in eng.items():
        if name.startswith(REPERMISSION):
            at = _number(value.split("|", 1)[0])
            # An unreadable time still says "asked": one re-ask too few beats one too many.
            out[name[len(REPERMISSION):]] = 0.0 if at is None else at
    return out
