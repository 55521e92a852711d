"""Re-permission: one message to an inactive person, exactly one, over real SMTP and Redis."""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.clock import ManualClock
from proxy.keys import Keys
from proxy.policy import Policy, decide, load_policies
from proxy.repermission import claim, give_back
from proxy.state import State
from proxy.types import Action, DropMode
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings, marketing_policy

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

POLICY = marketing_policy(stream="""\
    silence:
      inactive: {sends: 3}
""", rules="""\
      - {if: lifecycle, stage: inactive, repermission: true, then: discard}
      - {if: quiet_hours, start: "21:00", end: "08:00", zone: UTC, then: delay}
""", after="""\
  trial:
    list: marketing
    unsigned: allow
    shadow: true
    silence:
      inactive: {sends: 3}
    rules:
      - {if: lifecycle, stage: inactive, repermission: true, then: discard}
classify:
  - sender: "*@news.example.com"
    stream: marketing
""")
ADDR = "hana@example.org"
SENDER = "offers@news.example.com"


def message(n: int) -> str:
    return (f"From: Shop <{SENDER}>\r\nTo: {ADDR}\r\nSubject: Offer {n}\r\n"
            f"Message-ID: <offer-{n}@news.example.com>\r\n\r\nStill interested?\r\n")


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, tmp_path: Path,
         clock: ManualClock) -> Iterator[HeedThread]:
    """heed over real SMTP with POLICY; the clock starts at 08:00 UTC."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICY)
    h = HeedThread(make_settings(redis_url=redis_url, upstream_port=upstream.port,
                                 policies=tmp_path / "policies"), clock).start()
    yield h
    h.stop()


def state(h: HeedThread) -> State:
    assert h.heed is not None
    return h.heed.state


def send(h: HeedThread, n: int) -> str:
    with h.smtp() as c:
        c.mail(SENDER)
        assert c.rcpt(ADDR)[0] == 250
        code, msg = c.data(message(n))
        return f"{code} {msg.decode()}"


def delivered(upstream: Upstream) -> list[str]:
    return [str(r.message["Subject"]) for r in upstream.received]


def make_inactive(h: HeedThread, upstream: Upstream, clock: ManualClock) -> None:
    """Three mails unanswered (the policy's inactive threshold), an hour apart."""
    for n in range(1, 4):
        assert send(h, n).startswith("250")
        clock.advance(3600)
    assert len(upstream.received) == 3


def test_one_message_through_then_stop_then_a_click_reopens(
        heed: HeedThread, upstream: Upstream, clock: ManualClock) -> None:
    heed.call(state(heed).grant(ADDR, "marketing", source="test"))
    make_inactive(heed, upstream, clock)
    # Inactive: the first message after is the re-ask, and it goes…
    assert send(heed, 4).startswith("250")
    assert delivered(upstream)[-1] == "Offer 4"
    recent = heed.call(state(heed).audit.recent(ADDR, 1))[0]
    assert recent.outcome == "delivered" and recent.reasons[0].startswith(
        "repermission: inactive: 3 sends since engagement, never engaged; the one message")
    # …and then it stops: accepted (the tool keeps the address), not sent.
    for n in (5, 6):
        assert send(heed, n).startswith("250")
    assert len(upstream.received) == 4
    recent = heed.call(state(heed).audit.recent(ADDR, 1))[0]
    assert recent.outcome == "discarded" and recent.reasons[0].startswith("lifecycle: inactive")
    # An open is not an answer (the default policy counts click, reply, preference-visit).
    heed.call(state(heed).engage(ADDR, kind="open"))
    assert send(heed, 7).startswith("250") and len(upstream.received) == 4
    # A click on the re-ask: active again, mail flows.
    clock.advance(60)
    heed.call(state(heed).engage(ADDR, kind="click"))
    assert send(heed, 8).startswith("250") and delivered(upstream)[-1] == "Offer 8"
    # Silent again (8, 9, 10 unanswered): inactive again, and a new re-ask is due, as the
    # old one predates the click.
    for n in (9, 10, 11, 12):
        assert send(heed, n).startswith("250")
    assert delivered(upstream)[-5:] == ["Offer 4", "Offer 8", "Offer 9", "Offer 10", "Offer 11"]


def test_two_sessions_past_rcpt_only_one_copy_goes(heed: HeedThread, upstream: Upstream,
                                                   clock: ManualClock) -> None:
    heed.call(state(heed).grant(ADDR, "marketing", source="test"))
    make_inactive(heed, upstream, clock)
    # Both sessions were told 250 at RCPT from the same state ("the re-ask may go")…
    first, second = heed.smtp(), heed.smtp()
    for c in (first, second):
        c.mail(SENDER)
        assert c.rcpt(ADDR)[0] == 250
    # …but only one DATA can spend it.
    replies = [c.data(message(n))[0] for n, c in ((4, first), (5, second))]
    for c in (first, second):
        c.quit()
    assert replies == [250, 250]
    assert delivered(upstream) == ["Offer 1", "Offer 2", "Offer 3", "Offer 4"]


def test_concurrent_messages_over_smtp_exactly_one(heed: HeedThread, upstream: Upstream,
                                                   clock: ManualClock) -> None:
    heed.call(state(heed).grant(ADDR, "marketing", source="test"))
    make_inactive(heed, upstream, clock)
    clients = 6
    ready = threading.Barrier(clients)
    replies: list[int] = []

    def one(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", heed.port, timeout=10) as c:
            c.ehlo("tool.test")
            c.mail(SENDER)
            c.rcpt(ADDR)
            ready.wait()  # every session is past RCPT before any DATA starts
            replies.append(c.data(message(n))[0])

    threads = [threading.Thread(target=one, args=(10 + i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert replies == [250] * clients
    assert len(upstream.received) == 4  # three before, exactly one re-ask
    outcomes = [e.outcome for e in heed.call(state(heed).audit.recent(ADDR, 2 * clients))
                if e.kind == "decision"][:clients]
    assert sorted(outcomes) == ["delivered"] + ["discarded"] * (clients - 1)


def test_held_at_night_the_first_released_is_the_one(heed: HeedThread, upstream: Upstream,
                                                     clock: ManualClock) -> None:
    heed.call(state(heed).grant(ADDR, "marketing", source="test"))
    make_inactive(heed, upstream, clock)
    clock.advance(12 * 3600)  # 23:00 UTC: quiet hours hold both; holding spends nothing
    assert send(heed, 4).startswith("250") and send(heed, 5).startswith("250")
    assert heed.heed is not None and heed.call(heed.heed.queue.depth()) == 2
    clock.advance(10 * 3600)  # 09:00: both due
    heed.release_due()
    assert len(upstream.received) == 4
    outcomes = sorted(e.outcome for e in heed.call(state(heed).audit.recent(ADDR, 2)))
    assert outcomes == ["dropped-at-release", "released"]


def test_a_copy_the_upstream_refuses_gives_the_claim_back(
        heed: HeedThread, upstream: Upstream, clock: ManualClock) -> None:
    heed.call(state(heed).grant(ADDR, "marketing", source="test"))
    make_inactive(heed, upstream, clock)
    upstream.handler.reply = "554 5.7.1 not today"
    assert send(heed, 4).startswith("554")
    upstream.handler.reply = None
    assert send(heed, 5).startswith("250") and delivered(upstream)[-1] == "Offer 5"
    assert send(heed, 6).startswith("250") and len(upstream.received) == 4


# --- the claim itself (real Redis, no SMTP) --------------------------------------------


def loaded(tmp_path: Path) -> Policy:
    (tmp_path / "p.yaml").write_text(POLICY)
    return load_policies(tmp_path)


async def inactive(s: State, clock: ManualClock, stream: str = "marketing") -> None:
    await s.grant(ADDR, "marketing")
    pipe = s.redis.pipeline(transaction=False)
    s.record_sends(pipe, stream, [ADDR] * 3, clock.now())
    await pipe.execute()


async def test_claims_race_in_redis_one_wins(aredis: aioredis.Redis, keys: Keys,
                                             clock: ManualClock, tmp_path: Path) -> None:
    s, p = State(aredis, keys, clock), loaded(tmp_path)
    await inactive(s, clock)
    stale = await s.snapshot(ADDR)
    first = decide(p, "marketing", stale, clock.now())
    assert first.action is Action.DELIVER and first.repermission
    # Two messages decided from the same snapshot claim at once.
    results = await asyncio.gather(*(claim(s, p, {ADDR: first}, f"<m{i}@x>", clock.now())
                                     for i in range(2)))
    decisions = sorted((d[ADDR].action.value, len(c)) for d, c in results)
    assert decisions == [("deliver", 1), ("drop", 0)]
    lost = next(d[ADDR] for d, _ in results if d[ADDR].action is Action.DROP)
    assert lost.drop_mode is DropMode.DISCARD and lost.reasons[0].code == "lifecycle"
    owner = next(c for _, c in results if c)
    # A copy that did not go out gives it back; someone else's id cannot.
    await give_back(s, owner, [], "<other@x>")
    assert await s.claim_repermission(ADDR, "marketing", since=None, message_id="<m9@x>") is False
    winner = next(f"<m{i}@x>" for i, (_, c) in enumerate(results) if c)
    await give_back(s, owner, [], winner)
    assert await s.claim_repermission(ADDR, "marketing", since=None, message_id="<m9@x>")
    # Spent until a counted engagement later than the claim.
    clock.advance(60)
    await s.engage(ADDR, kind="reply")
    assert await s.claim_repermission(ADDR, "marketing", since=clock.now(),
                                      message_id="<m10@x>")


async def test_shadow_mode_does_not_spend_the_re_ask(aredis: aioredis.Redis, keys: Keys,
                                                     clock: ManualClock, tmp_path: Path) -> None:
    s, p = State(aredis, keys, clock), loaded(tmp_path)
    await inactive(s, clock, "trial")
    d = decide(p, "trial", await s.snapshot(ADDR), clock.now())
    assert d.shadow and d.repermission and d.action is Action.DELIVER
    out, claimed = await claim(s, p, {ADDR: d}, "<t@x>", clock.now())
    assert claimed == [] and out[ADDR] == d
    assert (await s.snapshot(ADDR)).repermission == {}


RECONFIRM = """
default_stream: marketing
streams:
  marketing:
    silence:
      inactive: {sends: 10, or_days: 180, min_sends: 5}
    rules:
      - {if: lifecycle, stage: inactive, then: discard}
  reconfirm:
    list: marketing                    # same consent and refusals as marketing
    silence:
      inactive: {sends: 10, or_days: 180, min_sends: 5}
    rules:
      - {if: refused, then: drop}
      - {if: no_consent, then: drop}
      - {if: lifecycle, stage: inactive, repermission: true, then: discard}
      - {if: lifecycle, stage: [loyal, active], then: discard}  # not asked
"""


async def test_the_documented_reconfirm_stream(aredis: aioredis.Redis, keys: Keys,
                                               clock: ManualClock, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(RECONFIRM)
    p, s = load_policies(tmp_path), State(aredis, keys, clock)
    await s.grant(ADDR, "marketing")
    assert decide(p, "reconfirm", await s.snapshot(ADDR), clock.now()).action is Action.DROP
    pipe = s.redis.pipeline(transaction=False)
    s.record_sends(pipe, "marketing", [ADDR] * 10, clock.now())
    await pipe.execute()
    snap = await s.snapshot(ADDR)
    assert decide(p, "marketing", snap, clock.now()).action is Action.DROP
    asks = [decide(p, "reconfirm", snap, clock.now())] * 2
    decided = [await claim(s, p, {ADDR: d}, f"<r{i}@x>", clock.now()) for i, d in enumerate(asks)]
    assert [d[ADDR].action for d, _ in decided] == [Action.DELIVER, Action.DROP]
