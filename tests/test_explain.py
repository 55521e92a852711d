"""`heed explain` on a real Redis: the facts a compliance officer asks for, in plain words."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.audit import Audit, AuditEntry
from proxy.clock import ManualClock
from proxy.explain import explain, when
from proxy.keys import Keys
from proxy.policy import load_policies
from proxy.state import State
from proxy.types import Action, Decision, DropMode, PersonState, Reason

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

ROOT = Path(__file__).resolve().parent.parent


async def test_unknown_address(aredis: aioredis.Redis, keys: Keys, clock: ManualClock) -> None:
    text = await explain(State(aredis, keys, clock), Audit(aredis, keys), "Nobody@Example.org",
                         now=clock.now())
    assert text.startswith("nobody@example.org")
    assert "heed holds nothing about this address" in text


async def test_facts_and_decisions_newest_first(aredis: aioredis.Redis, keys: Keys,
                                                clock: ManualClock) -> None:
    state, audit = State(aredis, keys, clock), Audit(aredis, keys)
    granted = clock.now()
    await state.grant("di@example.org", "marketing", source="shop-checkout", ip="192.0.2.9",
                      text="consent-v3")
    clock.advance(3600)
    await state.engage("di@example.org", kind="click")
    await state.set_preferences("di@example.org", timezone="Asia/Ho_Chi_Minh", off={"digest"})
    clock.advance(3600)
    await audit.record([AuditEntry(
        at=clock.now(), kind="decision", recipient="di@example.org", outcome="delivered",
        stream="marketing", message_id="<m1@example.com>")])
    clock.advance(3600)
    left = clock.now()
    await state.refuse("di@example.org", "unsubscribe", list="marketing", channel="one-click")
    clock.advance(3600)
    await audit.record([AuditEntry(
        at=clock.now(), kind="decision", recipient="di@example.org", outcome="reject",
        stream="marketing", reasons=("refused: unsubscribe from list 'marketing'",))])
    text = await explain(state, audit, "di@example.org", now=clock.now())
    assert (f"list 'marketing': granted {when(granted)}, source shop-checkout,"
            " from IP 192.0.2.9, wording consent-v3") in text
    assert f"unsubscribe of list 'marketing' on {when(left)} via one-click" in text
    assert "last engaged" in text and "0 mail(s) since" in text
    assert "Asia/Ho_Chi_Minh" in text and "switched off: digest" in text
    history = text.split("newest first):\n", 1)[1].splitlines()
    assert history[0] == (f"  {when(clock.now())}  marketing  dropped (rejected at RCPT):"
                          " unsubscribe from list 'marketing'")
    assert "refused mail (said no)" in history[1] and "one-click" in history[1]
    assert "delivered" in history[2]
    assert "consent granted" in history[-1] and "shop-checkout" in history[-1]


async def test_would_be_lines_from_a_decide_callable(aredis: aioredis.Redis, keys: Keys,
                                                     clock: ManualClock) -> None:
    state, audit = State(aredis, keys, clock), Audit(aredis, keys)
    await state.grant("el@example.org", "marketing")
    later = clock.now() + 7200

    def decide(stream: str, person: PersonState) -> Decision:
        assert person.address == "el@example.org" and "marketing" in person.consents
        if stream == "marketing":
            return Decision(Action.DELAY, stream, (Reason("quiet_hours", "night in Bangkok"),),
                            until=later)
        return Decision(Action.DROP, stream, (Reason("no_consent", "no consent for 'digest'"),),
                        drop_mode=DropMode.REJECT)

    text = await explain(state, audit, "el@example.org", now=clock.now(), decide=decide,
                         streams=["marketing", "digest"])
    assert (f"  marketing: would be: delay until {when(later)} because night in Bangkok"
            in text)
    assert "  digest: would be: drop because no consent for 'digest'" in text


async def test_would_be_lines_from_the_shipped_policy(aredis: aioredis.Redis, keys: Keys,
                                                      clock: ManualClock) -> None:
    state, audit = State(aredis, keys, clock), Audit(aredis, keys)
    policy = load_policies(ROOT / "policies")
    await state.refuse("fo@example.org", "complaint", channel="arf")
    text = await explain(state, audit, "fo@example.org", now=clock.now(), policy=policy)
    assert "complaint of every marketing list" in text
    for name in policy.streams:
        assert f"  {name}: would be: " in text
    assert "  marketing: would be: drop because" in text
