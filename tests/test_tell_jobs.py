"""Outbound tell jobs on a real Redis: made once, claimed with fenced leases, ended once."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from proxy.keys import Keys
from proxy.tell.jobs import Job, Jobs, job_id

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster


def job(n: int = 1) -> Job:
    target = f"https://tool.example/u/{n}"
    return Job(id=job_id(f"ev{n}", "one-click", target), kind="one-click", target=target,
               event=f"ev{n}", address=f"p{n}@example.org", scope="news", created=50.0)


async def test_made_once_claimed_and_ended_once(aredis: aioredis.Redis, keys: Keys) -> None:
    jobs = Jobs(aredis, keys)
    assert await jobs.make(job(), due=100.0)
    assert not await jobs.make(job(), due=100.0)  # the same id again: a no-op
    assert await jobs.claim(99.0, 10, lease=60.0) == []
    [held] = await jobs.claim(100.0, 10, lease=60.0)
    assert held.id == job().id and held.claim
    assert await jobs.end(held, "sent", 110.0)
    assert not await jobs.end(held, "sent", 111.0)  # ended already: counted once
    assert (await jobs.stats())[("one-click", "sent")] == 1
    assert await aredis.hlen(keys.tell_claims) == 0


async def test_a_fenced_out_holder_can_neither_complete_nor_retry(
        aredis: aioredis.Redis, keys: Keys) -> None:
    jobs = Jobs(aredis, keys)
    await jobs.make(job(), due=100.0)
    [stale] = await jobs.claim(100.0, 10, lease=60.0)
    # The first worker stalls past its lease; another worker recovers the job and takes it.
    [fresh] = await jobs.claim(200.0, 10, lease=60.0)
    assert fresh.id == stale.id and fresh.claim != stale.claim
    assert not await jobs.end(stale, "sent", 201.0)
    assert not await jobs.retry(stale, 500.0, "late")
    assert not await jobs.end(stale, "dead", 201.0)
    assert await aredis.zscore(keys.tell_claimed, fresh.id) is not None  # still the fresh one's
    assert await jobs.end(fresh, "sent", 202.0)
    stats = await jobs.stats()
    assert stats[("one-click", "sent")] == 1 and stats.get(("one-click", "dead"), 0) == 0
    assert stats.get(("one-click", "failed"), 0) == 0 and await jobs.dead() == []
    assert await aredis.zcard(keys.tell_due) == 0 and await aredis.zcard(keys.tell_claimed) == 0


async def test_retry_under_the_claim_puts_the_job_back_due(aredis: aioredis.Redis,
                                                           keys: Keys) -> None:
    jobs = Jobs(aredis, keys)
    await jobs.make(job(), due=100.0)
    [held] = await jobs.claim(100.0, 10, lease=60.0)
    assert await jobs.retry(held, 130.0, "503")
    assert not await jobs.retry(held, 130.0, "503")  # its claim ended with the retry
    assert await jobs.claim(129.0, 10, lease=60.0) == []
    [again] = await jobs.claim(130.0, 10, lease=60.0)
    assert again.attempts == 1 and again.claim != held.claim
