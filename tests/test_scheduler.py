"""The scheduler on a real Redis queue, with a moved clock: release, backoff, expiry."""

from __future__ import annotations

import redis.asyncio as aioredis

from proxy.clock import ManualClock
from proxy.keys import Keys
from proxy.queue import DelayQueue, HeldMail
from proxy.scheduler import Release, ReleaseOutcome, Scheduler
from proxy.settings import QueueSettings

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
