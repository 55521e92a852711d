"""Leases on a real Redis: atomic claims, fencing tokens, the heartbeat, recovery."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from proxy.keys import Keys
from proxy.lease import Leases

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster


async def test_fenced_claim_renew_and_recover(aredis: aioredis.Redis, keys: Keys) -> None:
    leases = Leases(aredis, keys.queue_due, keys.queue_claimed, keys.queue_claims)
    await aredis.zadd(keys.queue_due, {"a": 100, "b": 100, "c": 500})
    token, ids = await leases.claim(200.0, 10, lease=60.0)
    assert sorted(ids) == ["a", "b"] and token
    assert await aredis.hget(keys.queue_claims, "a") == token.encode()
    assert await leases.renew(["a", "b"], token, until=400.0) == set()
    assert await leases.recover(300.0) == 0  # renewed: still held
    assert await leases.renew(["a"], "another", until=500.0) == {"a"}  # not that claim's
    assert await leases.recover(401.0) == 2
    assert await aredis.hlen(keys.queue_claims) == 0  # the old tokens are void
    assert await leases.renew(["a", "b"], token, until=600.0) == {"a", "b"}
    again, ids = await leases.claim(401.0, 1, lease=60.0)
    assert len(ids) == 1 and again != token


async def test_unfenced_claim_has_no_token(aredis: aioredis.Redis, keys: Keys) -> None:
    leases = Leases(aredis, keys.tell_due, keys.tell_claimed, keys.tell_claims)
    await aredis.zadd(keys.tell_due, {"j": 100})
    token, ids = await leases.claim(100.0, 10, lease=60.0, fenced=False)
    assert (token, ids) == ("", ["j"]) and await aredis.hlen(keys.tell_claims) == 0
    assert await leases.renew(["j", "gone"], "", until=300.0) == {"gone"}
    assert await leases.recover(200.0) == 0 and await leases.recover(301.0) == 1
