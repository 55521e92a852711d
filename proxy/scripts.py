"""Lua for the per-recipient hot path: one command where redis-py packed and parsed five.

Each script touches the keys of one person only (their ``{address}`` hash tag,
proxy/keys.py), so it runs on one Redis Cluster slot. They go out with EVAL, not
EVALSHA: they ride on group-commit pipelines (proxy/batch.py), where a NOSCRIPT
after a restart or failover would have to be told apart from a real error and the
rest of the batch replayed; Redis keeps each script compiled under its SHA1, so
EVAL costs it one hash of a few hundred bytes more. Scripts run atomically, so a
write behind retried after a Redis error (proxy/batch.py) is still all or nothing.
"""

from __future__ import annotations

# The decision's read of one person (proxy/state.py ``snapshots``): consent, refusals,
# engagement and preferences as flat field/value lists, and the sends since ARGV[1]
# as flat member/score lists (scores as Redis formats them: %.17g, every digit).
READ_PERSON = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
        redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]),
        redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[1], '+inf', 'WITHSCORES')}
"""
READ_PERSON_KEYS = 5

# One delivered copy counted (proxy/state.py ``record_sends``): the silence counters,
# the first send's time, the send in the caps' history and the history's trim.
# KEYS: engagement, sends. ARGV: the send's time (repr), its member, the trim bound.
COUNT_SEND = """
redis.call('HINCRBY', KEYS[1], 'sends_since', 1)
redis.call('HINCRBY', KEYS[1], 'total_sends', 1)
redis.call('HSETNX', KEYS[1], 'first_send', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
"""
