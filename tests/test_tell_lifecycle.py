"""The lifecycle pass on a real Redis, with a moved clock: what it reads, and when it is due."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.clock import ManualClock
from proxy.errors import StateUnavailable
from proxy.keys import Keys
from proxy.policy import lifecycle_stage
from proxy.policy_store import PolicyStore
from proxy.state import State
from proxy.tell.lifecycle import STAGE
from proxy.tell.worker import Teller
from tests.harness import policy_dir
from tests.test_tell_webhooks import SILENCE_POLICY, teller

DAYS_POLICY = """
version: days
default_stream: marketing
streams:
  marketing:
    kind: marketing
    silence:
      inactive: {sends: 3, or_days: 30, min_sends: 1}
    rules:
      - {if: refused, then: drop}
"""


def lifecycle_teller(aredis: aioredis.Redis, keys: Keys, clock: ManualClock, where: Path,
                     policy: str, version: str) -> Teller:
    """A worker with an hourly pass under ``policy`` (no webhook is sent here)."""
    where.mkdir(exist_ok=True)
    t = teller(aredis, keys, clock, where, "https://t.test/h", lifecycle_every=3600.0)
    t.policies = PolicyStore(policy_dir(where, policy, version))
    return t


async def stage(aredis: aioredis.Redis, keys: Keys, address: str) -> str | None:
    got = await aredis.hget(keys.tool_told(address), STAGE + "marketing")
    return got.decode() if got is not None else None


async def test_the_pass_sees_the_stage_a_full_snapshot_gives(aredis: aioredis.Redis, keys: Keys,
                                                              clock: ManualClock,
                                                              tmp_path: Path) -> None:
    """The pass reads only the engagement hash: the stage must be the one a decision sees."""
    state = State(aredis, keys, clock)
    t = lifecycle_teller(aredis, keys, clock, tmp_path, DAYS_POLICY, "days")
    people = [f"p{n}@example.org" for n in range(6)]
    for a in people:
        await state.grant(a, "marketing", source="form", text="v1")
    pipe = aredis.pipeline(transaction=False)
    state.record_sends(pipe, "marketing", people[1:] + people[2:] + people[3:4], clock.now())
    await pipe.execute()
    await state.engage(people[2], kind="click")
    await state.engage(people[4], kind="open")  # not counted by default: still silent
    clock.advance(40 * 86400)  # p1 (one send, 40 days) and p5 too turn inactive by days
    await t.lifecycle()
    stream = t.policies.current.streams["marketing"]
    seen = []
    for a, snap in zip(people, await state.snapshots(people), strict=True):
        want = "inactive" if lifecycle_stage(stream, snap, clock.now()) == "inactive" else "active"
        assert await stage(aredis, keys, a) == want, a
        seen.append(want)
    assert "inactive" in seen and "active" in seen  # both sides of the line were checked


async def test_a_restart_waits_out_the_period_of_the_last_pass(aredis: aioredis.Redis,
                                                               keys: Keys, clock: ManualClock,
                                                               tmp_path: Path) -> None:
    state = State(aredis, keys, clock)
    t = lifecycle_teller(aredis, keys, clock, tmp_path, SILENCE_POLICY, "silence")
    await state.grant("ana@example.org", "marketing", source="form", text="v1")
    assert await t.lifecycle() == 0  # never made: due at once; the first look is a baseline
    assert await stage(aredis, keys, "ana@example.org") == "active"
    assert float(await aredis.get(keys.tell_lifecycle_last)) == clock.now()
    await state.grant("bo@example.org", "marketing", source="form", text="v1")
    clock.advance(1800)
    # A restart half-way through the period, the lock gone (a Redis restart, or a lock
    # TTL shorter than a pass's period on a changed setting): no second pass yet.
    await aredis.delete(keys.tell_lifecycle_lock)
    again = lifecycle_teller(aredis, keys, clock, tmp_path / "again", SILENCE_POLICY, "silence")
    assert await again.lifecycle() == 0
    assert await stage(aredis, keys, "bo@example.org") is None  # not looked at
    clock.advance(1799)
    assert await again.lifecycle() == 0 and await stage(aredis, keys, "bo@example.org") is None
    clock.advance(1)  # a period after the last pass began
    assert await again.lifecycle() == 0
    assert await stage(aredis, keys, "bo@example.org") == "active"


async def test_a_pass_that_fails_is_not_counted_as_made(aredis: aioredis.Redis, keys: Keys,
                                                        clock: ManualClock,
                                                        tmp_path: Path) -> None:
    state = State(aredis, keys, clock)
    t = lifecycle_teller(aredis, keys, clock, tmp_path, SILENCE_POLICY, "silence")
    await state.grant("ana@example.org", "marketing", source="form", text="v1")
    await aredis.set(keys.tool_told("ana@example.org"), "not a hash")  # the pass's read fails
    with pytest.raises(StateUnavailable):  # WRONGTYPE: the worker's loop logs it, goes on
        await t.lifecycle()
    assert await aredis.get(keys.tell_lifecycle_last) is None  # made again, after the lock


async def test_a_pass_ends_between_pages_when_heed_stops(aredis: aioredis.Redis, keys: Keys,
                                                         clock: ManualClock,
                                                         tmp_path: Path) -> None:
    """heed stopping ends the pass at the next page, before its Redis may close; the pass
    is not counted as made (made again once its lock ends)."""
    t = lifecycle_teller(aredis, keys, clock, tmp_path, SILENCE_POLICY, "silence")
    people = [f"p{n}@example.org" for n in range(300)]  # a hashtable set: SSCAN pages
    await aredis.sadd(keys.people, *people)
    t._stop = asyncio.Event()
    t._stop.set()
    assert await t.lifecycle() == 0
    seen = [await stage(aredis, keys, a) for a in people]
    assert 0 < sum(s is not None for s in seen) < len(people)
    assert await aredis.get(keys.tell_lifecycle_last) is None
