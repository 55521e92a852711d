"""The delay queue on a real Redis: durable puts, atomic claims, leases recovered."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from proxy.keys import Keys
from proxy.queue import DelayQueue, HeldMail


def item(i: int, due: float = 100.0) -> HeldMail:
    return HeldMail(id=f"id{i}", sender="s@news.example.com", recipient=f"r{i}@example.org",
                    stream="marketing", data=b"Subject: x\r\n\r\nbody\r\n", due=due,
                    first_queued=50.0, reasons=("cap: 2 a day",))


async def test_put_claim_done(aredis: aioredis.Redis, keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(1, due=100), item(2, due=200)])
    assert await q.depth() == 2 and await q.oldest() == 100
    assert await q.claim(99, 10, 300) == []
    claimed = await q.claim(150, 10, 300)
    assert [c.id for c in claimed] == ["id1"] and claimed[0].data == item(1).data
    assert claimed[0].reasons == ("cap: 2 a day",)
    await q.done("id1")
    assert await q.depth() == 1 and await aredis.exists(keys.queue_item("id1")) == 0


async def test_concurrent_claimers_never_share(aredis: aioredis.Redis, keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(i) for i in range(200)])
    other = DelayQueue(aioredis.Redis(connection_pool=aredis.connection_pool), keys)
    batches = await asyncio.gather(*(c.claim(1000, 7, 300) for c in [q, other] * 20))
    ids = [h.id for batch in batches for h in batch]
    assert len(ids) == len(set(ids)) == 200


async def test_lease_expiry_recovers_and_stale_worker_cannot_requeue(
        aredis: aioredis.Redis, keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(1)])
    assert len(await q.claim(100, 10, lease=300)) == 1
    assert await q.recover(200) == 0  # lease still running
    assert await q.recover(401) == 1  # the worker died: back to due
    again = await q.claim(401, 10, 300)
    assert [h.id for h in again] == ["id1"]
    await q.done("id1")
    # The first worker wakes up late: its retry must not resurrect the copy.
    assert await q.retry("id1", 500, 1, "late") is False
    assert await q.depth() == 0


async def test_retry_counts_attempts(aredis: aioredis.Redis, keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(1)])
    await q.claim(100, 10, 300)
    assert await q.retry("id1", 160, 1, "451 try later")
    assert await q.claim(150, 10, 300) == []
    held = (await q.claim(161, 10, 300))[0]
    assert (held.attempts, held.last_error, held.due) == (1, "451 try later", 160.0)
