"""The tell worker at rest on a real Redis: it waits for work instead of looking for it."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from proxy.clock import ManualClock
from proxy.keys import Keys
from proxy.state import State
from proxy.tell.jobs import Job, Jobs
from tests.test_tell_webhooks import teller


async def calls(aredis: aioredis.Redis) -> dict[str, int]:
    stats = await aredis.info("commandstats")
    return {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()
            if not k.startswith(("cmdstat_info", "cmdstat_config"))}


async def test_an_idle_round_only_waits_on_the_outbox(aredis: aioredis.Redis, keys: Keys,
                                                      clock: ManualClock,
                                                      tmp_path: Path) -> None:
    t = teller(aredis, keys, clock, tmp_path, "https://t.test/h", lease=60.0)
    assert await t.run_once() == 0  # the first round looks for everything
    await aredis.config_resetstat()
    for _ in range(5):
        assert await t.run_once() == 0
    assert await calls(aredis) == {"xreadgroup": 5}
    clock.set(clock.now() - 3600)  # the system clock stepped back: the next look is not
    await aredis.config_resetstat()  # an hour away
    assert await t.run_once() == 0
    assert "xautoclaim" in await calls(aredis)
    assert await t.run_once() == 0
    assert (await calls(aredis))["xautoclaim"] == 1  # and then a quarter lease apart again
    clock.advance(15)  # a quarter lease: time to look for what a dead worker left
    await aredis.config_resetstat()
    assert await t.run_once() == 0
    assert {"xautoclaim", "xreadgroup", "evalsha"} <= set(await calls(aredis))


async def test_a_job_a_dead_worker_made_is_found_by_the_next_look(aredis: aioredis.Redis,
                                                                  keys: Keys,
                                                                  clock: ManualClock,
                                                                  tmp_path: Path) -> None:
    t = teller(aredis, keys, clock, tmp_path, "https://t.test/h", lease=60.0)
    assert await t.run_once() == 0
    # Made (as by a worker that died before it claimed it), due now: no entry wakes t.
    await Jobs(aredis, keys).make(Job("j1", "bogus", "x", "evt_1", created=clock.now()),
                                  clock.now())
    assert await t.run_once() == 0  # not looked for yet
    clock.advance(15)
    assert await t.run_once() == 1  # found, and ended ("unknown job kind")
    assert (await t.jobs.stats())[("bogus", "dead")] == 1


async def test_a_retry_is_claimed_when_due_without_a_look(aredis: aioredis.Redis, keys: Keys,
                                                          clock: ManualClock,
                                                          tmp_path: Path) -> None:
    t = teller(aredis, keys, clock, tmp_path, "https://t.test/h", lease=600.0, backoff=(10.0,))
    await Jobs(aredis, keys).make(Job("j2", "mailto", "mailto:u@t.test", "evt_2",
                                      created=clock.now()), clock.now())
    assert await t.run_once() == 1  # the upstream (port 9) refuses: retried in 10 s
    clock.advance(9)
    assert await t.run_once() == 0
    clock.advance(1)  # due; the next look for a dead worker's work is 140 s away
    assert await t.run_once() == 1


async def test_entries_that_make_no_job_cost_no_claim(aredis: aioredis.Redis, keys: Keys,
                                                      clock: ManualClock,
                                                      tmp_path: Path) -> None:
    """An import's consent.granted entries, with no webhook: read and forgotten, no more."""
    t = teller(aredis, keys, clock, tmp_path, "https://t.test/h", webhooks=())
    assert await t.run_once() == 0
    await State(aredis, keys, clock).grant("ana@example.org", "news", source="form", text="v1")
    await aredis.config_resetstat()
    assert await t.run_once() == 0 and t.expanded == 1
    assert set(await calls(aredis)) == {"xreadgroup", "xack", "xdel"}
    assert await aredis.xlen(keys.tell_outbox) == 0
