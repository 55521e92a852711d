"""The scheduler on a real Redis queue, with a moved clock: release, backoff, expiry."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from proxy.clock import ManualClock
from proxy.errors import StateUnavailable
from proxy.keys import Keys
from proxy.queue import DelayQueue, HeldMail
from proxy.scheduler import Release, ReleaseOutcome, Scheduler
from proxy.settings import QueueSettings

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

SETTINGS = QueueSettings(batch=10, lease=300, max_hold=3600, backoff=(60, 600))


def held(now: float) -> HeldMail:
    return HeldMail(id="h1", sender="s@x.test", recipient="r@example.org", stream="marketing",
                    data=b"x\r\n", due=now, first_queued=now)


async def test_release_backoff_then_success(aredis: aioredis.Redis, keys: Keys,
                                            clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([held(clock.now())])
    answers = [Release(ReleaseOutcome.TEMPFAIL, error="451"), Release(ReleaseOutcome.DELIVERED)]
    seen: list[int] = []

    async def release(item: HeldMail) -> Release:
        seen.append(item.attempts)
        return answers.pop(0)

    s = Scheduler(q, release, clock, SETTINGS)
    assert await s.run_once() == 1
    assert await s.run_once() == 0  # backing off 60 s
    clock.advance(61)
    assert await s.run_once() == 1
    assert seen == [0, 1] and await q.depth() == 0


async def test_expiry_after_max_hold_audited_once(aredis: aioredis.Redis, keys: Keys,
                                                  clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([held(clock.now())])
    expired: list[str] = []

    async def release(item: HeldMail) -> Release:
        return Release(ReleaseOutcome.TEMPFAIL, error="upstream down")

    async def on_expire(item: HeldMail, why: str) -> None:
        expired.append(why)

    s = Scheduler(q, release, clock, SETTINGS, on_expire=on_expire)
    for _ in range(20):
        await s.run_once()
        clock.advance(600)
    assert len(expired) == 1 and "upstream down" in expired[0]
    assert await q.depth() == 0


async def test_a_crashing_release_loses_nothing(aredis: aioredis.Redis, keys: Keys,
                                                clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([held(clock.now())])

    async def release(item: HeldMail) -> Release:
        raise RuntimeError("bug")

    await Scheduler(q, release, clock, SETTINGS).run_once()
    assert await q.depth() == 1


async def test_delayed_again_does_not_count_an_attempt(aredis: aioredis.Redis, keys: Keys,
                                                       clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([held(clock.now())])

    async def release(item: HeldMail) -> Release:
        return Release(ReleaseOutcome.DELAYED, until=clock.now() + 120)

    await Scheduler(q, release, clock, SETTINGS).run_once()
    clock.advance(121)
    item = (await q.claim(clock.now(), 10, 300))[0]
    assert item.attempts == 0


async def test_only_due_copies_are_released(aredis: aioredis.Redis, keys: Keys,
                                            clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    now = clock.now()
    later = replace(held(now), id="h2", due=now + 3600)
    await q.put([held(now), later])
    released: list[str] = []

    async def release(item: HeldMail) -> Release:
        released.append(item.id)
        return Release(ReleaseOutcome.DELIVERED)

    s = Scheduler(q, release, clock, SETTINGS)
    assert await s.run_once() == 1 and released == ["h1"]
    clock.advance(3599)
    assert await s.run_once() == 0
    clock.advance(1)
    assert await s.run_once() == 1 and released == ["h1", "h2"]
    assert await q.depth() == 0


async def test_permfail_calls_hook_and_ends_the_copy(aredis: aioredis.Redis, keys: Keys,
                                                     clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([held(clock.now())])
    failed: list[tuple[str, str]] = []

    async def release(item: HeldMail) -> Release:
        return Release(ReleaseOutcome.PERMFAIL, error="550 5.1.1 no such user")

    async def on_permfail(item: HeldMail, why: str) -> None:
        failed.append((item.id, why))

    await Scheduler(q, release, clock, SETTINGS, on_permfail=on_permfail).run_once()
    assert failed == [("h1", "550 5.1.1 no such user")] and await q.depth() == 0


async def test_a_dead_workers_claim_is_released_after_its_lease(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([held(clock.now())])
    await q.claim(clock.now(), 10, SETTINGS.lease)  # a worker claims it, then dies
    released: list[str] = []

    async def release(item: HeldMail) -> Release:
        released.append(item.id)
        return Release(ReleaseOutcome.DELIVERED)

    s = Scheduler(q, release, clock, SETTINGS)
    assert await s.run_once() == 0
    clock.advance(SETTINGS.lease + 1)
    assert await s.run_once() == 1 and released == ["h1"]


async def test_run_survives_redis_trouble_and_stops(aredis: aioredis.Redis, keys: Keys,
                                                    clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([held(clock.now())])
    stop = asyncio.Event()
    rounds = [0]
    real_recover = q.recover

    async def flaky_recover(now: float) -> int:
        rounds[0] += 1
        if rounds[0] == 1:
            raise StateUnavailable("redis unavailable")
        return await real_recover(now)

    async def release(item: HeldMail) -> Release:
        stop.set()
        return Release(ReleaseOutcome.DELIVERED)

    q.recover = flaky_recover  # type: ignore[method-assign]
    fast = QueueSettings(poll_interval=0.01, batch=10, lease=300, max_hold=3600, backoff=(60,))
    await asyncio.wait_for(Scheduler(q, release, clock, fast).run(stop), 5)
    assert rounds[0] == 2 and await q.depth() == 0


async def test_a_dead_workers_claims_are_looked_for_every_quarter_lease(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock) -> None:
    q = DelayQueue(aredis, keys)
    await q.put([held(clock.now())])
    assert len(await q.claim(clock.now(), 10, SETTINGS.lease)) == 1  # a worker that then died
    released: list[str] = []

    async def release(item: HeldMail) -> Release:
        released.append(item.id)
        return Release(ReleaseOutcome.DELIVERED)

    s = Scheduler(q, release, clock, SETTINGS)  # lease 300 s: a look every 75 s
    clock.advance(299)
    assert await s.run_once() == 0  # looked: the claim still holds
    clock.advance(1)
    assert await s.run_once() == 0  # the lease is over, the next look is 74 s away
    clock.advance(74)
    assert await s.run_once() == 1 and released == ["h1"]
    assert await q.depth() == 0
