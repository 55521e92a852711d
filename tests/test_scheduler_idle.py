"""The scheduler at rest on a real Redis: it sleeps until a copy is due instead of claiming."""

from __future__ import annotations

import asyncio
import signal
import smtplib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.clock import Clock, ManualClock, SystemClock
from proxy.keys import Keys
from proxy.queue import DelayQueue, HeldMail
from proxy.redisconn import connect_redis, warm_up
from proxy.scheduler import Release, ReleaseOutcome, Scheduler
from proxy.settings import QueueSettings
from proxy.state import State
from tests.conftest import Upstream
from tests.harness import marketing_policy, serve_process
from tests.test_tell_idle import calls

# Polled every 10 ms before; a look for a dead worker's claims every 75 s.
SETTINGS = QueueSettings(poll_interval=0.01, batch=10, lease=300, max_hold=3600,
                         backoff=(60,))


def held(item_id: str, due: float) -> HeldMail:
    return HeldMail(id=item_id, sender="s@x.test", recipient=f"{item_id}@example.org",
                    stream="marketing", data=b"x\r\n", due=due, first_queued=due)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> bool:
    """Whether ``check`` came true within ``seconds`` (a generous bound, not a timing)."""
    end = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < end:
        if await check():
            return True
        await asyncio.sleep(0.01)
    return False


class Running:
    """A scheduler's run() in a task, and the ids it released."""

    def __init__(self, queue: DelayQueue, clock: Clock, settings: QueueSettings) -> None:
        self.released: list[str] = []
        self.stop = asyncio.Event()

        async def release(item: HeldMail) -> Release:
            self.released.append(item.id)
            return Release(ReleaseOutcome.DELIVERED)

        self.scheduler = Scheduler(queue, release, clock, settings)
        queue.on_put = self.scheduler.wake  # as proxy/app.py wires it
        self.task = asyncio.ensure_future(self.scheduler.run(self.stop))

    async def got(self, item_id: str) -> bool:
        return item_id in self.released


@pytest.fixture
async def rested(aredis: aioredis.Redis, keys: Keys,
                 clock: ManualClock) -> AsyncIterator[tuple[DelayQueue, Running]]:
    """A scheduler past its first round (which claims and looks), Redis's counts reset."""
    queue = DelayQueue(aredis, keys)
    running = Running(queue, clock, SETTINGS)

    async def claimed() -> bool:
        return "evalsha" in await calls(aredis)

    assert await until(claimed)
    await asyncio.sleep(0.05)
    await aredis.config_resetstat()
    yield queue, running
    running.stop.set()
    await asyncio.wait_for(running.task, 5)


async def test_at_rest_it_sends_no_command(aredis: aioredis.Redis,
                                           rested: tuple[DelayQueue, Running]) -> None:
    await asyncio.sleep(0.3)  # 30 poll intervals
    assert await calls(aredis) == {}


async def test_a_copy_this_process_puts_wakes_it(aredis: aioredis.Redis, clock: ManualClock,
                                                 rested: tuple[DelayQueue, Running]) -> None:
    queue, running = rested
    await queue.put([held("later", clock.now() + 60)])
    await asyncio.sleep(0.1)
    assert "zrangebyscore" not in await calls(aredis)  # known, not due: no claim for it
    await queue.put([held("now", clock.now())])
    assert await until(lambda: running.got("now"))

    async def settled() -> bool:
        return await queue.depth() == 1  # "now" done (after its release), "later" held

    assert await until(settled) and running.released == ["now"]


async def test_a_copy_another_process_puts_is_claimed_at_the_next_look(
        aredis: aioredis.Redis, keys: Keys) -> None:
    clock = SystemClock()
    quick = QueueSettings(poll_interval=0.01, batch=10, lease=0.4, max_hold=3600,
                          backoff=(60,))  # a look every 0.1 s
    running = Running(DelayQueue(aredis, keys), clock, quick)
    try:
        await asyncio.sleep(0.05)
        # Put through another client: no wake reaches this scheduler.
        await DelayQueue(aredis, keys).put([held("theirs", clock.now())])
        assert await until(lambda: running.got("theirs"))
    finally:
        running.stop.set()
        await asyncio.wait_for(running.task, 5)


def test_heed_serve_releases_its_own_retry_when_due(tmp_path: Path, redis_url: str,
                                                    upstream: Upstream) -> None:
    """A real `heed serve`: the upstream refuses for now, heed holds the copy (on_failure:
    queue) due a second later, and sends it then, though its next look is minutes away."""
    upstream.handler.reply = "451 4.3.0 try again later"
    heed = serve_process(
        tmp_path, "heed", policy=marketing_policy(), redis_url=redis_url,
        upstream_port=upstream.port,
        env={"HEED_UPSTREAM__ON_FAILURE": "queue", "HEED_QUEUE__BACKOFF": "[1s]",
             "HEED_UNSUBSCRIBE__KEYS": "[{id: t1, secret: test-secret-0123456789abcdef}]"})
    try:
        asyncio.run(consent(redis_url, "ana@example.org"))
        port = int(heed.args[heed.args.index("--listen") + 1].rpartition(":")[2])
        with smtplib.SMTP("127.0.0.1", port) as s:
            s.sendmail("news@shop.example.com", ["ana@example.org"],
                       b"Subject: hi\r\nMessage-ID: <r1@shop.example.com>\r\n\r\nhi\r\n")
        upstream.handler.reply = None
        end = time.monotonic() + 30  # a generous bound; the look would come after 75 s
        while time.monotonic() < end and not upstream.received:
            time.sleep(0.05)
        assert upstream.recipients() == ["ana@example.org"]
    finally:
        heed.send_signal(signal.SIGTERM)
        heed.wait(20)


async def consent(redis_url: str, address: str) -> None:
    client = connect_redis(redis_url)
    await warm_up(client)
    await State(client, Keys(), SystemClock()).grant(address, "marketing", source="test")
    await client.aclose()
