"""The audit trail on a real Redis: in the caller's pipeline, per person, newest first."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, fields

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.audit import Audit, AuditEntry
from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.errors import StateUnavailable
from proxy.keys import Keys

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster


def entry(at: float, recipient: str = "ana@example.org", **kw: object) -> AuditEntry:
    kw.setdefault("outcome", "delivered")
    return AuditEntry(at=at, kind="decision", recipient=recipient, **kw)  # type: ignore[arg-type]


def test_fields_round_trip() -> None:
    full = AuditEntry(at=1_800_000_000.123456, kind="decision", recipient="ana@example.org",
                      outcome="reject", stream="marketing",
                      reasons=("no_consent: no consent for list 'marketing'", "ไม่ยินยอม"),
                      message_id="<m1@example.com>", sender="news@example.com",
                      policy_version="2026-11-01+abc", correlation_id="c1", detail="550")
    fields = full.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    raw = {k.encode(): v.encode() for k, v in fields.items()} | {b"added_later": b"x"}
    assert AuditEntry.from_fields(raw) == full


def test_field_maps_are_what_asdict_gave() -> None:
    """The spelt-out maps name every field, in declaration order, with asdict's values."""
    full = AuditEntry(at=1_800_000_000.5, kind="decision", recipient="ana@example.org",
                      outcome="delivered", stream="marketing", reasons=("a: b", "ไม่"),
                      message_id="<m1@example.com>", sender="news@example.com",
                      policy_version="v1", correlation_id="c1", detail="550 no",
                      one_click="signed")
    as_dict = asdict(full)
    assert list(as_dict) == [f.name for f in fields(AuditEntry)]
    assert full.log_fields() == {**as_dict, "reasons": ["a: b", "ไม่"]}
    assert list(full.log_fields()) == list(as_dict)
    stored = {k: str(v) for k, v in as_dict.items() if k != "reasons"}
    stored["at"] = repr(full.at)
    stored["reasons"] = json.dumps(["a: b", "ไม่"], ensure_ascii=False)
    assert full.to_fields() == stored
    assert list(full.to_fields()) == list(stored)


async def test_add_goes_out_with_the_callers_pipeline(aredis: aioredis.Redis, keys: Keys,
                                                      clock: ManualClock) -> None:
    audit = Audit(aredis, keys)
    pipe = aredis.pipeline(transaction=False)
    audit.add(pipe, [entry(clock.now()), entry(clock.now(), "bo@example.org")])
    assert await audit.tail() == []  # queued only
    await pipe.execute()
    assert [e.recipient for e in await audit.tail()] == ["bo@example.org", "ana@example.org"]
    assert [e.recipient for e in await audit.recent("BO@example.org")] == ["bo@example.org"]


async def test_recent_is_newest_first_and_capped(aredis: aioredis.Redis, keys: Keys,
                                                 clock: ManualClock) -> None:
    audit = Audit(aredis, keys, maxlen_person=10)
    for i in range(1000):
        await audit.record([entry(clock.now() + i, outcome=f"o{i}")])
    recent = await audit.recent("ana@example.org", count=3)
    assert [e.outcome for e in recent] == ["o999", "o998", "o997"]
    # MAXLEN ~ trims whole nodes (about 100 entries), so the cap is approximate.
    assert await aredis.xlen(keys.person_audit("ana@example.org")) < 250
    assert await aredis.xlen(keys.audit) == 1000


async def test_entry_without_recipient_stays_global(aredis: aioredis.Redis, keys: Keys,
                                                    clock: ManualClock) -> None:
    audit = Audit(aredis, keys)
    await audit.record([AuditEntry(at=clock.now(), kind="upstream", recipient="",
                                   outcome="down")])
    await audit.record([])
    assert [e.outcome for e in await audit.tail()] == ["down"]
    assert await aredis.keys(keys.person_audit("") + "*") == []


async def test_tail_since_and_count(aredis: aioredis.Redis, keys: Keys,
                                    clock: ManualClock) -> None:
    audit = Audit(aredis, keys)
    start = clock.now()
    for i in range(0, 1300, 100):
        pipe = aredis.pipeline(transaction=False)
        audit.add(pipe, [entry(start + j, outcome=str(j)) for j in range(i, i + 100)])
        await pipe.execute()
    assert [e.outcome for e in await audit.tail(count=2)] == ["1299", "1298"]
    since = await audit.tail(count=5000, since=start + 50)  # reads across several pages
    assert len(since) == 1250 and since[-1].outcome == "50"
    assert [e.outcome for e in await audit.tail(count=3, since=start)] == ["1299", "1298", "1297"]
    assert await audit.tail(since=start + 5000) == []


@pytest.mark.parametrize("call", ["record", "recent", "tail", "tail_since"])
async def test_redis_down_is_state_unavailable(call: str, keys: Keys,
                                               clock: ManualClock) -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5,
                          retry=Retry(NoBackoff(), 0))  # fail now, not after retries
    audit = Audit(dead, keys)
    try:
        with pytest.raises(StateUnavailable, match="^redis unavailable$"):
            if call == "record":
                await audit.record([entry(clock.now())])
            elif call == "recent":
                await audit.recent("ana@example.org")
            else:
                await audit.tail(since=clock.now() if call == "tail_since" else None)
    finally:
        await dead.aclose()


async def test_max_age_trims_the_global_trail(aredis: aioredis.Redis, keys: Keys) -> None:
    """audit.max_age: entries older than it leave the trail (whole stream nodes at a time)."""
    now = time.time()
    audit = Audit(aredis, keys, max_age=86400)
    pipe = aredis.pipeline(transaction=False)
    audit.add(pipe, [AuditEntry(at=now, kind="decision", recipient="", outcome="queued")] * 250)
    await pipe.execute()
    assert await aredis.xlen(keys.audit) == 250
    first = await audit.oldest()
    assert first is not None and first.at == now
    # A day and a bit later (heed's clock): what was written before is past max_age.
    later = AuditEntry(at=now + 86400 + 5, kind="decision", recipient="", outcome="queued")
    await audit.record([later])
    assert await aredis.xlen(keys.audit) < 100  # the full nodes of old entries are gone
    unlimited = Audit(aredis, keys)
    await unlimited.record([later] * 3)
    assert await aredis.xlen(keys.audit) < 103
