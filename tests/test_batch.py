"""Group commit (proxy/batch.py) against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import smtplib
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.batch import GroupCommit
from proxy.clock import ManualClock
from proxy.embedded_redis import EmbeddedRedis, free_port
from proxy.errors import StateUnavailable
from proxy.keys import Keys
from proxy.redisconn import connect_redis, warm_up
from proxy.state import State
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings

ROOT = Path(__file__).resolve().parent.parent


async def group_commit(redis_url: str, **kwargs: int) -> GroupCommit:
    client = connect_redis(redis_url)
    await warm_up(client)
    return GroupCommit(client, **kwargs)


@pytest.mark.cluster  # on one server and on a Cluster (one pipeline per node)
async def test_concurrent_writers_share_one_batch_and_each_sees_its_write(
        redis_url: str, aredis: aioredis.Redis) -> None:
    batched = await group_commit(redis_url)
    seen: dict[int, bytes | None] = {}

    async def writer(i: int) -> list[object]:
        pipe = batched.pipeline(transaction=False)
        pipe.set(f"w:{i}", f"v{i}")
        pipe.incrby("w:total", i)
        pipe.get(f"w:{i}")
        replies = await pipe.execute()
        # Answered only after Redis executed it: another client reads it back now.
        seen[i] = await aredis.get(f"w:{i}")
        return list(replies)

    try:
        replies = await asyncio.gather(*(writer(i) for i in range(1, 51)))
    finally:
        await batched.aclose()
    # Every caller got its own replies, in its own order.
    for i, r in enumerate(replies, start=1):
        assert r[0] is True and r[2] == f"v{i}".encode()
        assert isinstance(r[1], int)
    assert seen == {i: f"v{i}".encode() for i in range(1, 51)}
    assert int(await aredis.get("w:total") or 0) == sum(range(1, 51))
    # The 50 pipelines were queued before the first batch went: one batch carried all.
    assert (batched.batches, batched.requests) == (1, 50)


@pytest.mark.cluster
async def test_callers_arriving_during_a_batch_go_in_the_next(redis_url: str) -> None:
    batched = await group_commit(redis_url)

    async def one(i: int) -> object:
        pipe = batched.pipeline(transaction=False)
        pipe.incr("n")
        return (await pipe.execute())[0]

    try:
        first = asyncio.ensure_future(one(0))
        await asyncio.sleep(0)  # the first batch is on its way
        rest = await asyncio.gather(*(one(i) for i in range(1, 11)))
        got = [await first, *rest]
    finally:
        await batched.aclose()
    assert sorted(got) == list(range(1, 12))  # type: ignore[type-var]
    assert batched.batches == 2 and batched.requests == 11


@pytest.mark.cluster
async def test_a_command_error_fails_only_its_caller(redis_url: str,
                                                     aredis: aioredis.Redis) -> None:
    await aredis.set("plain", "x")
    batched = await group_commit(redis_url)

    async def bad() -> object:
        pipe = batched.pipeline(transaction=False)
        pipe.hgetall("plain")  # WRONGTYPE
        return await pipe.execute()

    async def good() -> object:
        pipe = batched.pipeline(transaction=False)
        pipe.set("good", "1")
        return await pipe.execute()

    try:
        results = await asyncio.gather(bad(), good(), return_exceptions=True)
    finally:
        await batched.aclose()
    assert isinstance(results[0], ResponseError)
    assert results[1] == [True]
    assert batched.batches == 1


@pytest.mark.cluster
async def test_batch_size_is_bounded(redis_url: str) -> None:
    batched = await group_commit(redis_url, max_commands=10)

    async def one(i: int) -> object:
        pipe = batched.pipeline(transaction=False)
        for _ in range(4):
            pipe.incr(f"b:{i}")
        return await pipe.execute()

    try:
        results = await asyncio.gather(*(one(i) for i in range(6)))
    finally:
        await batched.aclose()
    assert results == [[1, 2, 3, 4]] * 6
    assert batched.batches == 3  # two pipelines of 4 commands per batch of at most 10


async def test_redis_failure_fails_every_waiter_of_the_batch(tmp_path: Path) -> None:
    """A round trip that fails (Redis gone) reaches every caller as StateUnavailable."""
    server = EmbeddedRedis(tmp_path / "r", durable=False)
    url = server.start()
    batched = GroupCommit(connect_redis(url))
    state = State(batched, Keys(), ManualClock(1_800_000_000.0))
    try:
        await state.snapshot("warm@example.org")  # connected, so the failure is mid-use
        server.stop()
        results = await asyncio.gather(
            *(state.snapshot(f"p{i}@example.org") for i in range(20)), return_exceptions=True)
    finally:
        await batched.aclose()
        server.stop()
    assert len(results) == 20
    assert all(isinstance(r, StateUnavailable) for r in results), results
    assert batched.batches == 2


async def test_a_dead_connection_is_a_redis_error_for_the_caller() -> None:
    batched = GroupCommit(connect_redis(f"redis://127.0.0.1:{free_port()}"))
    pipe = batched.pipeline(transaction=False)
    pipe.get("x")
    try:
        with pytest.raises(RedisConnectionError):
            await pipe.execute()
    finally:
        await batched.aclose()


def test_paused_redis_mid_batch_answers_every_session_451(
        upstream: Upstream, tmp_path: Path, clock: ManualClock) -> None:
    """Sessions whose RCPT reads share a stalled batch all get 451 4.3.0, none a 250."""
    server = EmbeddedRedis(tmp_path / "r", durable=False)
    url = server.start()
    settings = make_settings(redis_url=url, upstream_port=upstream.port,
                             policies=ROOT / "policies")
    heed = HeedThread(settings, clock).start()
    clients: list[smtplib.SMTP] = []
    try:
        assert heed.heed is not None
        heed.call(heed.heed.state.snapshot("warm@example.org"))  # connected before the stall
        for _ in range(5):
            c = heed.smtp()
            c.mail("offers@news.example.com")
            clients.append(c)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            # smtplib blocks, so each RCPT is sent from its own thread, all at once.
            async def all_rcpts() -> list[tuple[int, bytes]]:
                return await asyncio.gather(*(
                    asyncio.to_thread(c.rcpt, f"r{i}@example.org")
                    for i, c in enumerate(clients)))

            replies = asyncio.run(all_rcpts())
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert [(code, msg[:5]) for code, msg in replies] == [(451, b"4.3.0")] * 5
        assert upstream.received == []
        # Once Redis answers again, so does heed.
        assert clients[0].rcpt("alice@example.org")[0] in (250, 550)
    finally:
        for c in clients:
            c.close()
        heed.stop()
        server.stop()


async def test_a_batch_that_times_out_fails_its_callers_and_the_next_batch_is_in_step(
        tmp_path: Path) -> None:
    """The lane has no per-reply timeout; the batch's own bound fails every waiter, and the
    connection it left mid-reply is not reused out of step (the next replies are right)."""
    server = EmbeddedRedis(tmp_path / "r", durable=False)
    url = server.start()
    batched = GroupCommit(connect_redis(url), lane=connect_redis(url, read_timeout=None),
                          timeout=0.5)

    async def one(i: int) -> object:
        pipe = batched.pipeline(transaction=False)
        pipe.set(f"k{i}", f"v{i}")
        pipe.get(f"k{i}")
        return await pipe.execute()

    try:
        assert await one(0) == [True, b"v0"]
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            stalled = await asyncio.gather(*(one(i) for i in range(1, 6)),
                                           return_exceptions=True)
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert all(isinstance(r, RedisTimeoutError) for r in stalled), stalled
        assert await asyncio.gather(*(one(i) for i in range(6, 9))) == [
            [True, f"v{i}".encode()] for i in range(6, 9)]
    finally:
        await batched.aclose()
        server.stop()
