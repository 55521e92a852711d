"""Lifecycle changes the tool hears of: a periodic pass finds who turned inactive, or active again.

A stage is not recorded when it changes (it follows from engagement, sends and time,
computed when mail is decided), so the worker looks: every ``tell.lifecycle_every``
one worker (a lock in Redis) reads every known person in batches, computes each
marketing stream's stage under the current policy, and compares it with the stage it
last saw (kept in the person's told hash). Crossing the inactive line either way
writes a ``lifecycle.changed`` outbox event; the first look only records a baseline.
When the pass has been over everyone, its start time is kept in Redis
(``keys.tell_lifecycle_last``): a restart does not look again before the period ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.keys import normalise_address
from proxy.person import person
from proxy.policy import Policy, lifecycle_stage
from proxy.tell.outbox import Event, note

# People per SSCAN page, read round trip and write pipeline, and a pause between
# pages. The pass shares the event loop with the mail path: pages of 500 snapshots
# held the loop long enough to delay the replies of that moment by up to ~170 ms
# (bench.latency, 200 messages/s, 3 Dec 2026: max 151-178 ms, none over 25 ms with the
# pass off); pages of 50 still made steps of up to 9-11 ms of CPU on a busy machine
# (bench.latency --watch-ms, 3 Dec 2026). An hourly pass can take its time: 1M people
# in 50,000 pages is ~8 minutes of pauses.
SCAN = 20
PAUSE = 0.01  # seconds between pages
STAGE = "stage:"  # stage:<stream> -> "inactive" | "active" in the person's told hash


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def lifecycle_pass(state: Any, policy: Policy, now: float,
                         stop: asyncio.Event | None = None) -> int:
    """One pass over ``keys.people``; returns the lifecycle.changed events written. It
    ends between two pages once ``stop`` is set (heed stopping: not before Redis does)."""
    streams = [s for s in policy.streams.values() if s.marketing and s.silence.inactive]
    if not streams:
        return 0
    k, events, cursor = state.keys, 0, 0
    fields = [STAGE + s.name for s in streams]
    while True:
        try:
            cursor, members = await state.redis.sscan(k.people, cursor, count=SCAN)
            people = [normalise_address(_s(m)) for m in members]
            if people:
                # A stage follows from the engagement hash alone (counters, first send,
                # per-kind marks: Silence.assess), so that is all the pass reads, with
                # the stages it saw last, in one round trip: a full snapshot (consent,
                # refusals, prefs, the send history) cost ~3x the CPU a person.
                pipe = state.redis.pipeline(transaction=False)
                for a in people:
                    pipe.hgetall(k.engagement(a))
                    pipe.hmget(k.tool_told(a), fields)
                raw = await pipe.execute()
                pipe = state.redis.pipeline(transaction=False)
                for a, engage, before in zip(people, raw[::2], raw[1::2], strict=True):
                    snap = person(a, None, None, engage, None, None)
                    for s, old in zip(streams, before, strict=True):
                        stage = ("inactive" if lifecycle_stage(s, snap, now) == "inactive"
                                 else "active")
                        if old is not None and _s(old) == stage:
                            continue
                        pipe.hset(k.tool_told(a), STAGE + s.name, stage)
                        if old is not None:
                            note(pipe, k, Event("lifecycle.changed", a, s.list, at=now,
                                                data={"stream": s.name, "stage": stage}))
                            events += 1
                if len(pipe):
                    await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        if int(cursor) == 0 or (stop is not None and stop.is_set()):
            return events
        await asyncio.sleep(PAUSE)
