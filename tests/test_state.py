"""Person state on a real Redis: one round trip per read, proof kept, CSV import by line."""

from __future__ import annotations

import io

import pytest
import redis.asyncio as aioredis

from proxy.audit import Audit
from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.errors import StateUnavailable
from proxy.explain import explain
from proxy.keys import Keys
from proxy.state import State


async def test_snapshot_is_one_round_trip(aredis: aioredis.Redis, keys: Keys,
                                          clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    await state.grant("Ana@Example.org", "marketing", source="form", ip="192.0.2.7", text="v3")
    # Count the network round trips the client makes for one snapshot.
    trips = 0
    conn = await aredis.connection_pool.get_connection()
    await aredis.connection_pool.release(conn)
    original = type(conn).send_packed_command

    async def counting(self, command, check_health=True):  # noqa: ANN001,ANN202
        nonlocal trips
        trips += 1
        return await original(self, command, check_health)

    type(conn).send_packed_command = counting  # type: ignore[method-assign]
    try:
        snap = await state.snapshot("ana@example.org")
        assert trips == 1
        trips = 0
        await state.snapshots([f"p{i}@example.org" for i in range(10)])
        assert trips == 1
    finally:
        type(conn).send_packed_command = original  # type: ignore[method-assign]
    c = snap.consents["marketing"]
    assert (c.source, c.ip, c.text, c.granted_at) == ("form", "192.0.2.7", "v3", clock.now())


async def test_revoke_keeps_proof_and_refusal_keeps_first_time(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    await state.grant("bo@example.org", "marketing", source="form")
    clock.advance(10)
    await state.revoke("bo@example.org", "marketing", source="cli")
    assert (await state.snapshot("bo@example.org")).consents == {}
    assert b"revoked_at" in await aredis.hget(keys.consent("bo@example.org"), "marketing")
    await state.refuse("bo@example.org", "complaint", channel="arf")
    first = (await state.snapshot("bo@example.org")).refusals["*"]
    clock.advance(100)
    await state.refuse("bo@example.org", "unsubscribe", channel="one-click")
    assert (await state.snapshot("bo@example.org")).refusals["*"] == first
    with pytest.raises(ValueError):
        await state.refuse("bo@example.org", "whim")


async def test_sends_and_engagement(aredis: aioredis.Redis, keys: Keys,
                                    clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    for _ in range(3):
        pipe = aredis.pipeline(transaction=False)
        state.record_sends(pipe, "marketing", ["cy@example.org"], clock.now())
        await pipe.execute()
        clock.advance(3600)
    snap = await state.snapshot("cy@example.org")
    assert snap.sends_since_engagement == 3 and len(snap.sends["marketing"]) == 3
    await state.engage("cy@example.org", kind="reply")
    snap = await state.snapshot("cy@example.org")
    assert snap.sends_since_engagement == 0 and snap.last_engaged == clock.now()
    clock.advance(40 * 86400)
    assert (await state.snapshot("cy@example.org")).sends == {}  # older than the cap window


async def test_csv_import_reports_bad_rows_keeps_good(aredis: aioredis.Redis, keys: Keys,
                                                      clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    text = ("email,list,granted_at,source,ip,text\n"
            "ok1@example.org,marketing,2026-01-02T03:04:05Z,fair,192.0.2.1,v1\n"
            "not-an-address,marketing,,,,\n"
            "ok2@example.org,,,,,\n"
            "ok3@example.org,weekly-digest,1700000000,,,\n"
            "ok4@example.org,marketing,yesterday,,,\n"
            "too,few\n")
    report = await state.import_consent_csv(io.StringIO(text))
    assert report.imported == 2
    assert [e.split(":")[0] for e in report.errors] == ["line 3", "line 4", "line 6", "line 7"]
    snap = await state.snapshot("ok1@example.org")
    assert snap.consents["marketing"].granted_at == 1767323045.0
    assert (await state.snapshot("ok3@example.org")).consents["weekly-digest"].source == "import"


async def test_redis_down_is_state_unavailable(keys: Keys, clock: ManualClock) -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    with pytest.raises(StateUnavailable) as info:
        await State(dead, keys, clock).snapshot("x@example.org")
    assert "127.0.0.1" not in str(info.value)
    await dead.aclose()


async def test_explain_in_plain_words(aredis: aioredis.Redis, keys: Keys,
                                      clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    audit = Audit(aredis, keys)
    assert "holds nothing" in await explain(state, audit, "nobody@example.org", now=clock.now())
    await state.grant("di@example.org", "marketing", source="shop-checkout", ip="192.0.2.9")
    await state.refuse("di@example.org", "unsubscribe", list="marketing", channel="one-click")
    text = await explain(state, audit, "di@example.org", now=clock.now())
    assert "shop-checkout" in text and "192.0.2.9" in text
    assert "unsubscribe of list marketing" in text and "one-click" in text
