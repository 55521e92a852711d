"""The delay queue on a real Redis: durable puts, atomic claims, leases recovered."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.embedded_redis import free_port
from proxy.errors import StateUnavailable
from proxy.keys import Keys
from proxy.queue import DelayQueue, HeldMail
from proxy.redisconn import connect_redis, warm_up

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster


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


async def test_concurrent_claimers_never_share(aredis: aioredis.Redis, keys: Keys,
                                               redis_url: str) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(i) for i in range(200)])
    second = connect_redis(redis_url)  # another client, as another heed would have
    await warm_up(second)
    other = DelayQueue(second, keys)
    batches = await asyncio.gather(*(c.claim(1000, 7, 300) for c in [q, other] * 20))
    await second.aclose()
    ids = [h.id for batch in batches for h in batch]
    assert len(ids) == len(set(ids)) == 200


async def test_lease_expiry_recovers_and_stale_worker_cannot_requeue(
        aredis: aioredis.Redis, keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(1)])
    [first] = await q.claim(100, 10, lease=300)
    assert await q.recover(200) == 0  # lease still running
    assert await q.recover(401) == 1  # the worker died: back to due
    [again] = await q.claim(401, 10, 300)
    assert again.id == "id1" and again.claim != first.claim
    await q.done("id1", again.claim)
    # The first worker wakes up late: its retry must not resurrect the copy.
    assert await q.retry(first, 500, 1, "late") is False
    assert await q.depth() == 0


async def test_a_lost_claim_can_neither_renew_nor_complete(aredis: aioredis.Redis,
                                                           keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(1)])
    [first] = await q.claim(100, 10, lease=3)
    assert await q.renew([first], 106) == set()  # the heartbeat: lease now ends at 106
    assert await q.recover(104) == 0
    assert await q.recover(107) == 1  # the worker stalled past its renewed lease
    [second] = await q.claim(107, 10, 3)
    assert await q.renew([first], 110) == {"id1"}  # the stalled worker learns it lost it
    assert await q.done("id1", first.claim) is False  # fenced: not completed by it
    assert await q.reschedule(first, 900) is False
    assert await q.depth() == 1
    assert await q.done("id1", second.claim) is True
    assert await q.depth() == 0


async def test_retry_counts_attempts(aredis: aioredis.Redis, keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(1)])
    [claimed] = await q.claim(100, 10, 300)
    assert await q.retry(claimed, 160, 1, "451 try later")
    assert await q.claim(150, 10, 300) == []
    held = (await q.claim(161, 10, 300))[0]
    assert (held.attempts, held.last_error, held.due) == (1, "451 try later", 160.0)


async def test_reschedule_keeps_attempts_and_updates_reasons(aredis: aioredis.Redis,
                                                             keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(1)])
    [claimed] = await q.claim(100, 10, 300)
    assert await q.reschedule(claimed, 900, reasons=["quiet hours until 09:00"])
    held = await q.get("id1")
    assert held is not None
    assert (held.due, held.attempts, held.reasons) == (900.0, 0, ("quiet hours until 09:00",))
    assert await q.claim(899, 10, 300) == [] and len(await q.claim(900, 10, 300)) == 1


async def test_items_for_and_orphans(aredis: aioredis.Redis, keys: Keys) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([item(1, due=300), item(2), item(3, due=200)])
    await q.put([replace(item(4), recipient="R1@Example.org", due=150)])
    await q.claim(100, 1, 300)  # claimed copies are still held for the person
    assert [h.id for h in await q.items_for("r1@example.org")] == ["id4", "id1"]
    await aredis.delete(keys.queue_item("id3"))  # data gone: the id is forgotten
    assert [h.id for h in await q.claim(1000, 10, 300)] == ["id4", "id1"]
    assert await q.depth() == 3 and await aredis.zscore(keys.queue_claimed, "id3") is None


async def test_redis_down_is_state_unavailable(keys: Keys) -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5,
                          retry=Retry(NoBackoff(), 0))
    q = DelayQueue(dead, keys)
    for call in (q.put([item(1)]), q.claim(100, 10, 300), q.depth(), q.recover(100)):
        with pytest.raises(StateUnavailable):
            await call
    await dead.aclose()
