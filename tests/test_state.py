"""Person state on a real Redis: one round trip per read, proof kept, CSV import by line."""

from __future__ import annotations

import io
import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.audit import Audit
from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.errors import StateUnavailable
from proxy.keys import Keys
from proxy.state import SEND_WINDOW, State
from proxy.types import Consent, Preferences, Refusal

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

DAY = 86400.0
HEADER = "email,list,granted_at,source,ip,text\n"


class TripCounter:
    """Counts the packets a client writes to Redis: one per pipeline or command."""

    def __init__(self) -> None:
        self.trips = 0


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[TripCounter]:
    counter = TripCounter()
    original = AbstractConnection.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter.trips += 1
        await original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    yield counter


def packets_per_round(client: Any) -> int:
    """Packets in one round trip: one, or one per master when a pipeline spans a Cluster."""
    return len(client.get_primaries()) if isinstance(client, RedisCluster) else 1


async def warm(client: Any) -> None:
    """Open the connections first (to every master), so only the reads that follow count."""
    if isinstance(client, RedisCluster):
        await client.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.ping()


async def send(state: State, aredis: aioredis.Redis, stream: str, addresses: list[str],
               at: float) -> None:
    pipe = aredis.pipeline(transaction=False)
    state.record_sends(pipe, stream, addresses, at)
    await pipe.execute()


async def test_snapshot_is_one_round_trip(aredis: aioredis.Redis, keys: Keys,
                                          clock: ManualClock, trips: TripCounter) -> None:
    state = State(aredis, keys, clock)
    await state.grant("Ana@Example.org", "marketing", source="form", ip="192.0.2.7", text="v3")
    await send(state, aredis, "marketing", ["ana@example.org"], clock.now())
    await warm(aredis)
    trips.trips = 0
    snap = await state.snapshot(" <ANA@example.org> ")
    assert trips.trips == 1  # one person's keys share a slot: one packet on a Cluster too
    trips.trips = 0
    many = await state.snapshots([f"p{i}@example.org" for i in range(50)] + ["ana@example.org"])
    assert trips.trips == packets_per_round(aredis)
    assert len(many) == 51 and many[-1] == snap
    assert snap.address == "ana@example.org"
    assert snap.consents == {"marketing": Consent("marketing", clock.now(), "form", "192.0.2.7",
                                                  "v3")}
    assert snap.sends == {"marketing": (clock.now(),)}
    assert snap.sends_since_engagement == 1 and snap.first_send == clock.now()
    assert await state.snapshots([]) == []


async def test_unknown_person_is_empty(aredis: aioredis.Redis, keys: Keys,
                                       clock: ManualClock) -> None:
    snap = await State(aredis, keys, clock).snapshot("nobody@example.org")
    assert (snap.consents, snap.refusals, snap.sends) == ({}, {}, {})
    assert snap.last_engaged is None and snap.first_send is None
    assert snap.sends_since_engagement == 0 and snap.prefs == Preferences()


async def test_revoke_keeps_proof(aredis: aioredis.Redis, keys: Keys, clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    granted = clock.now()
    await state.grant("bo@example.org", "marketing", source="form", ip="192.0.2.1", text="v1")
    await state.grant("bo@example.org", "digest", source="form")
    clock.advance(10)
    await state.revoke("bo@example.org", "marketing", source="cli")
    snap = await state.snapshot("bo@example.org")
    assert set(snap.consents) == {"digest"}
    record = json.loads(await aredis.hget(keys.consent("bo@example.org"), "marketing") or "")
    assert record["granted_at"] == granted and record["ip"] == "192.0.2.1"
    assert record["revoked_at"] == clock.now() and record["revoked_by"] == "cli"
    clock.advance(10)
    await state.revoke("bo@example.org", "marketing", source="api")  # again: proof unchanged
    raw = await aredis.hget(keys.consent("bo@example.org"), "marketing")
    assert json.loads(raw or "") == record
    clock.advance(10)
    await state.grant("bo@example.org", "marketing", source="double-opt-in")
    again = (await state.snapshot("bo@example.org")).consents["marketing"]
    assert (again.source, again.granted_at) == ("double-opt-in", clock.now())


async def test_refusal_keeps_the_first_time(aredis: aioredis.Redis, keys: Keys,
                                            clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    assert await state.refuse("bo@example.org", "complaint", channel="arf") is True
    first = (await state.snapshot("bo@example.org")).refusals["*"]
    assert first == Refusal("*", "complaint", clock.now(), "arf")
    clock.advance(100)
    assert await state.refuse("bo@example.org", "unsubscribe", channel="one-click") is False
    assert await state.refuse("bo@example.org", "bounce", at=clock.now() - 1000) is False
    assert (await state.snapshot("bo@example.org")).refusals["*"] == first
    await state.refuse("bo@example.org", "unsubscribe", list="digest", channel="mailto")
    assert set((await state.snapshot("bo@example.org")).refusals) == {"*", "digest"}
    with pytest.raises(ValueError, match="whim"):
        await state.refuse("bo@example.org", "whim")
    assert await state.lift("bo@example.org", None, "complained by mistake") == [
        "complaint of every list"]
    assert set((await state.snapshot("bo@example.org")).refusals) == {"digest"}
    outcomes = [e.outcome for e in await Audit(aredis, keys).recent("bo@example.org")]
    assert outcomes == ["lifted", "refused", "refused", "refused", "refused"]


async def test_sends_and_engagement(aredis: aioredis.Redis, keys: Keys,
                                    clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    start = clock.now()
    pipe = aredis.pipeline(transaction=False)
    state.record_sends(pipe, "marketing", ["Cy@example.org", "dee@example.org"], start)
    assert (await state.snapshot("cy@example.org")).sends == {}  # queued, not executed
    await pipe.execute()
    clock.advance(3600)
    await send(state, aredis, "digest", ["cy@example.org"], clock.now())
    clock.advance(3600)
    await send(state, aredis, "marketing", ["cy@example.org"], clock.now())
    snap = await state.snapshot("cy@example.org")
    assert snap.sends == {"marketing": (start, start + 7200), "digest": (start + 3600,)}
    assert snap.sends_since_engagement == 3 and snap.first_send == start
    assert await aredis.sismember(keys.people, "dee@example.org")
    await state.engage("cy@example.org", kind="reply")
    snap = await state.snapshot("cy@example.org")
    assert snap.sends_since_engagement == 0 and snap.last_engaged == clock.now()
    assert await aredis.hget(keys.engagement("cy@example.org"), "last_kind") == b"reply"
    assert await aredis.hget(keys.engagement("cy@example.org"), "total_sends") == b"3"
    clock.advance(40 * DAY)
    assert (await state.snapshot("cy@example.org")).sends == {}  # older than the cap window
    await send(state, aredis, "marketing", ["cy@example.org"], clock.now())
    assert await aredis.zcard(keys.sends("cy@example.org")) == 1  # old entries trimmed
    assert (await state.snapshot("cy@example.org")).first_send == start


async def test_sends_within_31_days_are_read(aredis: aioredis.Redis, keys: Keys,
                                             clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    at = clock.now() - 31 * DAY
    await send(state, aredis, "marketing", ["ed@example.org"], at)
    await send(state, aredis, "marketing", ["ed@example.org"], clock.now() - SEND_WINDOW - 1)
    assert (await state.snapshot("ed@example.org")).sends == {"marketing": (at,)}


async def test_preferences_change_only_given_fields(aredis: aioredis.Redis, keys: Keys,
                                                    clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    until = clock.now() + 7 * DAY
    await state.set_preferences("fa@example.org", paused_until=until, timezone="Asia/Bangkok")
    await state.set_preferences("fa@example.org", off={"digest", "offers"}, frequency="weekly")
    prefs = (await state.snapshot("fa@example.org")).prefs
    assert prefs == Preferences(until, "Asia/Bangkok", frozenset({"digest", "offers"}), "weekly")
    await state.set_preferences("fa@example.org", paused_until=None)
    prefs = (await state.snapshot("fa@example.org")).prefs
    assert prefs.paused_until is None and prefs.timezone == "Asia/Bangkok"
    with pytest.raises(ValueError):
        await state.set_preferences("fa@example.org", timezone="Mars/Olympus")
    with pytest.raises(ValueError):
        await state.set_preferences("fa@example.org", frequency="hourly")


async def test_csv_import_reports_bad_rows_keeps_good(aredis: aioredis.Redis, keys: Keys,
                                                      clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    text = (HEADER +
            "OK1@example.org,marketing,2026-01-02T03:04:05Z,fair,192.0.2.1,v1\n"  # line 2
            "not-an-address,marketing,,,,\n"                                      # line 3
            "ok2@example.org,,,,,\n"                                              # line 4
            "ok3@example.org,weekly-digest,1700000000,,,\n"                       # line 5
            "ok4@example.org,marketing,yesterday,,,\n"                            # line 6
            "too,few\n"                                                           # line 7
            "\n"                                                                  # line 8
            '"a b@example.org",marketing,,,,\n'                                   # line 9
            '"ok5@example.org\r\nRCPT TO:<x@evil.example>",marketing,,,,\n'       # line 10-11
            'ok6@example.org,marketing,,,,"wording, with a comma\nand a newline"\n'  # 12-13
            "ok7@example.org,marketing,2099-01-01,,,\n")                          # line 14
    report = await state.import_consent_csv(io.StringIO(text))
    assert report.imported == 3
    assert [e.split(":")[0] for e in report.errors] == [
        "line 3", "line 4", "line 6", "line 7", "line 9", "line 11", "line 14"]
    assert "columns" in report.errors[3] and "future" in report.errors[-1]
    ok1 = (await state.snapshot("ok1@example.org")).consents["marketing"]
    assert ok1 == Consent("marketing", 1767323045.0, "fair", "192.0.2.1", "v1")
    ok3 = (await state.snapshot("ok3@example.org")).consents["weekly-digest"]
    assert (ok3.source, ok3.granted_at) == ("import", 1700000000.0)
    ok6 = (await state.snapshot("ok6@example.org")).consents["marketing"]
    assert ok6.text == "wording, with a comma\nand a newline" and ok6.granted_at == clock.now()
    assert [e.detail.split(";")[0] for e in await Audit(aredis, keys).recent("ok1@example.org")] \
        == ["csv import"]


async def test_csv_import_from_a_file_any_column_order(aredis: aioredis.Redis, keys: Keys,
                                                       clock: ManualClock,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "consent.csv"
    path.write_text("\ufefflist,Email\nmarketing,ana@example.org\n", encoding="utf-8")
    state = State(aredis, keys, clock)
    report = await state.import_consent_csv(path, source_default="crm")
    assert (report.imported, report.errors) == (1, [])
    assert (await state.snapshot("ana@example.org")).consents["marketing"].source == "crm"
    bad = await state.import_consent_csv(io.StringIO("mail,list\nx@example.org,m\n"))
    assert bad.imported == 0 and bad.errors[0].startswith("line 1: header lacks email")
    missing = await state.import_consent_csv(tmp_path / "absent.csv")
    assert missing.imported == 0 and missing.errors[0].startswith("line 0: cannot read")


async def test_csv_import_batches_round_trips(aredis: aioredis.Redis, keys: Keys,
                                              clock: ManualClock, trips: TripCounter) -> None:
    rows = "".join(f"u{i}@example.org,marketing,,,,\n" for i in range(1201))
    await warm(aredis)
    trips.trips = 0
    report = await State(aredis, keys, clock).import_consent_csv(io.StringIO(HEADER + rows))
    assert (report.imported, report.errors) == (1201, [])
    assert trips.trips == 3 * packets_per_round(aredis)  # 500 rows a round trip
    assert await aredis.scard(keys.people) == 1201


Call = Callable[[State], Awaitable[Any]]
CALLS: dict[str, Call] = {
    "snapshot": lambda s: s.snapshot("x@example.org"),
    "snapshots": lambda s: s.snapshots(["x@example.org", "y@example.org"]),
    "grant": lambda s: s.grant("x@example.org", "marketing"),
    "revoke": lambda s: s.revoke("x@example.org", "marketing"),
    "refuse": lambda s: s.refuse("x@example.org", "unsubscribe"),
    "lift": lambda s: s.lift("x@example.org", None, "test"),
    "engage": lambda s: s.engage("x@example.org"),
    "prefs": lambda s: s.set_preferences("x@example.org", frequency="weekly"),
    "import": lambda s: s.import_consent_csv(io.StringIO(HEADER + "x@example.org,m,,,,\n")),
}


@pytest.mark.parametrize("name", sorted(CALLS))
async def test_redis_down_is_state_unavailable(name: str, keys: Keys,
                                               clock: ManualClock) -> None:
    port = free_port()  # nothing listens here
    dead = aioredis.Redis(port=port, socket_connect_timeout=0.5,
                          retry=Retry(NoBackoff(), 0))  # fail now, not after retries
    try:
        with pytest.raises(StateUnavailable) as info:
            await CALLS[name](State(dead, keys, clock))
        assert str(info.value) == "redis unavailable"
        assert str(port) not in str(info.value)
        assert info.value.__cause__ is not None
    finally:
        await dead.aclose()
