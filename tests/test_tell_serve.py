"""`heed serve` drains the tell jobs itself; killed with -9 while jobs wait, none is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

from proxy.clock import SystemClock
from proxy.embedded_redis import free_port
from proxy.keys import Keys
from proxy.redisconn import connect_redis, warm_up
from proxy.state import State
from proxy.tell.offer import Offer
from tests.harness import CONSENT_POLICY, serve_process
from tests.tool_standin import ToolStandIn


def serve(tmp: Path, redis_url: str, name: str) -> subprocess.Popen[bytes]:
    return serve_process(
        tmp, name, policy=CONSENT_POLICY, redis_url=redis_url, upstream_port=free_port(),
        env={"HEED_TELL__ALLOW": "[127.0.0.1]", "HEED_TELL__BACKOFF": "[1s]",
             "HEED_TELL__POLL_INTERVAL": "0.2s", "HEED_TELL__LEASE": "1s",
             "HEED_UNSUBSCRIBE__KEYS": "[{id: t1, secret: test-secret-0123456789abcdef}]"})


async def refuse(redis_url: str, address: str, url: str) -> None:
    client = connect_redis(redis_url)
    await warm_up(client)
    keys, clock = Keys(), SystemClock()
    await client.hset(keys.tool_offers(address), "marketing",
                      Offer(url, True, "").to_json(clock.now()))
    await State(client, keys, clock).refuse(address, "unsubscribe", list="marketing",
                                            channel="one-click")
    await client.aclose()


async def attempts(redis_url: str) -> int:
    client = connect_redis(redis_url)
    stats = await client.hgetall(Keys().tell_stats)
    await client.aclose()
    return int(stats.get(b"one-click:failed", 0))


def wait_for(check, seconds: float = 20.0) -> bool:  # noqa: ANN001
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_kill_9_with_jobs_pending_then_each_delivered_once(tmp_path: Path,
                                                           redis_url: str) -> None:
    tool = ToolStandIn()  # its port is chosen, but nothing listens yet: the tool is down
    first = serve(tmp_path, redis_url, "first")
    try:
        asyncio.run(refuse(redis_url, "ana@example.org", tool.url("/u/ana")))
        assert wait_for(lambda: asyncio.run(attempts(redis_url)) >= 1), "no attempt made"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        # Refused while no heed runs: the outbox keeps it.
        asyncio.run(refuse(redis_url, "bo@example.org", tool.url("/u/bo")))
        tool.start()
        second = serve(tmp_path, redis_url, "second")
        try:
            assert wait_for(lambda: len(tool.got) >= 2), f"tool got {tool.got}"
            time.sleep(2.5)  # past the lease and backoff: nothing more may come
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(20)
    finally:
        if first.poll() is None:
            first.kill()
        tool.stop()
    assert sorted(r.path for r in tool.got) == ["/u/ana", "/u/bo"]
    assert {r.body for r in tool.got} == {b"List-Unsubscribe=One-Click"}
