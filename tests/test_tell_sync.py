"""Sync-back (RFC 8058 one-click, mailto): a stand-in tool on loopback records what heed sends."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.audit import Audit
from proxy.clock import ManualClock
from proxy.explain import explain
from proxy.keys import Keys
from proxy.policy_store import PolicyStore
from proxy.relay import SmtpUpstream
from proxy.settings import TellSettings, UpstreamSettings
from proxy.state import State
from proxy.tell.offer import Offer
from proxy.tell.worker import Teller
from tests.conftest import Upstream
from tests.harness import CONSENT_POLICY, policy_dir
from tests.tool_standin import ToolStandIn

A = "ana@example.org"
SENDER = "unsubscribe@heed.test"


@pytest.fixture
def tool() -> Iterator[ToolStandIn]:
    stand_in = ToolStandIn().start()
    yield stand_in
    stand_in.stop()


def teller(aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path,
           upstream_port: int = 9, policy: str = CONSENT_POLICY, **tell: object) -> Teller:
    settings = TellSettings(**{"allow": ("127.0.0.1",), "timeout": 1.0,
                               "backoff": (30.0, 120.0), "max_attempts": 4, **tell})  # type: ignore[arg-type]
    return Teller(redis=aredis, keys=keys, clock=clock, settings=settings,
                  policies=PolicyStore(policy_dir(tmp_path, policy)),
                  upstream=SmtpUpstream(UpstreamSettings(port=upstream_port, timeout=5)),
                  audit=Audit(aredis, keys), sender=SENDER, hostname="heed.test")


async def offer(aredis: aioredis.Redis, keys: Keys, clock: ManualClock, o: Offer,
                address: str = A, lst: str = "marketing") -> None:
    """What the recorder keeps when a copy with the tool's own links went out."""
    await aredis.hset(keys.tool_offers(address), lst, o.to_json(clock.now()))


async def outcomes(aredis: aioredis.Redis, keys: Keys) -> list[tuple[str, str]]:
    entries = await Audit(aredis, keys).recent(A, 50)
    return [(e.outcome, e.detail) for e in reversed(entries) if e.outcome.startswith("tool-")]


@pytest.mark.cluster
async def test_one_click_offer_gets_exactly_one_rfc8058_post(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path,
        tool: ToolStandIn) -> None:
    await offer(aredis, keys, clock, Offer(tool.url("/u/abc?x=1"), True, "mailto:u@tool.test"))
    state, t = State(aredis, keys, clock), teller(aredis, keys, clock, tmp_path)
    await state.refuse(A, "unsubscribe", list="marketing", channel="one-click")
    assert await t.run_once() == 1
    [post] = tool.got
    # RFC 8058 §3.2: a POST of exactly this body as a form; §3.1: no cookie, no authorization.
    assert post.method == "POST" and post.path == "/u/abc?x=1"
    assert post.body == b"List-Unsubscribe=One-Click"
    assert post.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert not {"Cookie", "Authorization"} & set(post.headers)
    # The same refusal again, a wider one, and more rounds: the link is not asked twice.
    await state.refuse(A, "unsubscribe", list="marketing", channel="one-click")
    await state.refuse(A, "complaint", channel="arf")
    clock.advance(3600)
    assert await t.run_once() == 0
    assert len(tool.got) == 1
    assert [o for o, _ in await outcomes(aredis, keys)] == ["tool-told"]
    text = await explain(state, Audit(aredis, keys), A, now=clock.now())
    assert "unsubscribe of list 'marketing'" in text
    assert "the tool was told 2027-01-15 08:00 UTC: one-click to 127.0.0.1: HTTP 200" in text
    assert "(0 s after the refusal)" in text
    await t.close()


async def test_plain_https_link_is_never_fetched(aredis: aioredis.Redis, keys: Keys,
                                                 clock: ManualClock, tmp_path: Path,
                                                 tool: ToolStandIn) -> None:
    await offer(aredis, keys, clock, Offer(tool.url("/unsub?u=ana"), False, ""))
    t = teller(aredis, keys, clock, tmp_path)
    await State(aredis, keys, clock).refuse(A, "unsubscribe", list="marketing", channel="mailto")
    assert await t.run_once() == 0
    clock.advance(86400)
    await t.run_once()
    assert tool.got == []  # a GET is not an unsubscribe (RFC 8058 §4), and it is not one-click
    [(outcome, detail)] = await outcomes(aredis, keys)
    assert outcome == "tool-not-told" and "GET is not an unsubscribe" in detail
    await t.close()


async def test_503_and_timeout_then_one_effective_call(aredis: aioredis.Redis, keys: Keys,
                                                       clock: ManualClock,
                                                       tmp_path: Path) -> None:
    tool = ToolStandIn(replies=[503, 200, 200], delays=[0, 2.0]).start()
    try:
        await offer(aredis, keys, clock, Offer(tool.url("/oc"), True, ""))
        t = teller(aredis, keys, clock, tmp_path, timeout=0.5)
        await State(aredis, keys, clock).refuse(A, "complaint", channel="arf")
        assert await t.run_once() == 1  # 503
        assert await t.run_once() == 0  # not due before the backoff
        clock.advance(30)
        assert await t.run_once() == 1  # times out (the tool answers after 2 s)
        clock.advance(120)
        assert await t.run_once() == 1  # 200
        clock.advance(86400)
        assert await t.run_once() == 0
        assert [r.body for r in tool.got] == [b"List-Unsubscribe=One-Click"] * 3
        assert (await t.jobs.stats())[("one-click", "sent")] == 1
        assert (await t.jobs.stats())[("one-click", "failed")] == 2
        assert [o for o, _ in await outcomes(aredis, keys)] == ["tool-told"]
        await t.close()
    finally:
        tool.stop()
    assert tool.answered.count(200) >= 1 and tool.answered[0] == 503


async def test_mailto_only_sends_the_unsubscribe_mail_upstream(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path,
        upstream: Upstream) -> None:
    mailto = "mailto:leave-ana-77@lists.tool.test?subject=unsubscribe%20ana-77"
    await offer(aredis, keys, clock, Offer("https://tool.test/plain", False, mailto))
    t = teller(aredis, keys, clock, tmp_path, upstream_port=upstream.port)
    await State(aredis, keys, clock).refuse(A, "unsubscribe", list="marketing",
                                            channel="preference-centre")
    assert await t.run_once() == 1
    [mail] = upstream.received
    assert mail.sender == SENDER and mail.recipients == ["leave-ana-77@lists.tool.test"]
    msg = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert msg["Subject"] == "unsubscribe ana-77" and msg["From"] == SENDER
    assert msg["Auto-Submitted"] == "auto-generated"
    assert [o for o, _ in await outcomes(aredis, keys)] == ["tool-told"]
    await t.close()


async def test_loopback_refused_unless_allowed(aredis: aioredis.Redis, keys: Keys,
                                               clock: ManualClock, tmp_path: Path,
                                               tool: ToolStandIn) -> None:
    await offer(aredis, keys, clock, Offer(tool.url("/oc"), True, ""))
    await offer(aredis, keys, clock, Offer(f"https://localhost:{tool.port}/oc", True, ""),
                lst="news")
    t = teller(aredis, keys, clock, tmp_path, allow=())
    await State(aredis, keys, clock).refuse(A, "unsubscribe", channel="one-click")
    await t.run_once()
    assert tool.got == []  # http to 127.0.0.1, and localhost resolving to loopback: refused
    dead = await t.jobs.dead()
    assert {j.kind for j in dead} == {"one-click"} and len(dead) == 1  # news: no sync_back
    [(outcome, detail)] = [o for o in await outcomes(aredis, keys) if o[0] == "tool-not-told"
                           and "refused" in o[1]]
    assert "tell.allow" in detail or "not https" in detail
    await t.close()


async def test_redirect_to_another_host_is_not_followed(aredis: aioredis.Redis, keys: Keys,
                                                        clock: ManualClock, tmp_path: Path,
                                                        tool: ToolStandIn) -> None:
    tool.replies = [302]
    await offer(aredis, keys, clock,
                Offer(tool.url("/oc?to=http://evil.test/x"), True, ""))
    t = teller(aredis, keys, clock, tmp_path)
    await State(aredis, keys, clock).refuse(A, "unsubscribe", list="marketing", channel="x")
    await t.run_once()
    assert len(tool.got) == 1
    [(outcome, detail)] = await outcomes(aredis, keys)
    assert outcome == "tool-not-told" and "another host" in detail
    await t.close()


async def test_sync_back_off_for_a_stream_tells_nothing(aredis: aioredis.Redis, keys: Keys,
                                                        clock: ManualClock, tmp_path: Path,
                                                        tool: ToolStandIn) -> None:
    await offer(aredis, keys, clock, Offer(tool.url("/oc"), True, ""))
    policy = CONSENT_POLICY.replace("kind: marketing", "kind: marketing\n    sync_back: false")
    t = teller(aredis, keys, clock, tmp_path, policy=policy)
    await State(aredis, keys, clock).refuse(A, "unsubscribe", list="marketing", channel="x")
    await t.run_once()
    assert tool.got == []
    [(outcome, detail)] = await outcomes(aredis, keys)
    assert outcome == "tool-not-told" and "sync_back is off" in detail
    await t.close()


async def test_a_name_resolving_to_loopback_is_refused_unless_named() -> None:
    from proxy.tell.oneclick import OneClick

    stand_in = ToolStandIn().start()
    try:
        closed = OneClick((), 1.0)
        got = await closed.post(f"https://localhost:{stand_in.port}/oc")
        assert not got.ok and not got.retry and "tell.allow" in got.detail
        opened = OneClick(("localhost",), 1.0)
        assert (await opened.post(f"http://localhost:{stand_in.port}/oc")).ok
        await closed.close()
        await opened.close()
    finally:
        stand_in.stop()
    assert len(stand_in.got) == 1


def test_one_click_through_heed_reaches_the_tool_once(tmp_path: Path, redis_url: str,
                                                      upstream: Upstream,
                                                      tool: ToolStandIn) -> None:
    import re
    import urllib.request

    from proxy.embedded_redis import free_port
    from tests.harness import HeedThread, make_settings

    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policy_dir(tmp_path, CONSENT_POLICY),
                             http={"listen": f"127.0.0.1:{free_port()}"},
                             tell={"allow": ["127.0.0.1"]})
    h = HeedThread(settings, ManualClock()).start()
    try:
        assert h.heed is not None
        for who in (A, "bo@example.org"):
            h.call(h.heed.state.grant(who, "marketing", source="form", text="yes"))
        tool_link = tool.url("/u/ana-77")

        def send(to: str, rcpts: list[str]) -> None:
            msg = (f"From: news@shop.test\r\nTo: {to}\r\nSubject: hi\r\n"
                   f"List-Unsubscribe: <{tool_link}>, <mailto:u-77@tool.test>\r\n"
                   "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nhello\r\n")
            with h.smtp() as c:
                c.sendmail("news@shop.test", rcpts, msg)

        send("Bo <bo@example.org>, ana@example.org", [A, "bo@example.org"])  # not personal
        h.settle()
        assert not h.call(h.heed.redis.exists(h.heed.keys.tool_offers(A)))
        send("Ana <ana@example.org>", [A])
        h.settle()
        copy = upstream.received[-1].data
        assert tool_link.encode() not in copy  # heed's own link replaced the tool's
        token = re.search(rb"/u/([A-Za-z0-9_.-]+)>", copy)
        assert token is not None
        assert settings.http.listen is not None
        host, port = settings.http.listen
        req = urllib.request.Request(f"http://{host}:{port}/u/{token.group(1).decode()}",
                                     data=b"List-Unsubscribe=One-Click", method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
        assert h.call(h.heed.teller.run_once()) == 1
        assert h.call(h.heed.teller.run_once()) == 0
    finally:
        h.stop()
    [post] = tool.got
    assert post.path == "/u/ana-77" and post.body == b"List-Unsubscribe=One-Click"


async def test_report_and_metrics_show_what_the_tool_was_told(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path,
        tool: ToolStandIn) -> None:
    from proxy.metrics import Metrics
    from proxy.report import build_report
    from proxy.report.render_text import as_dict, render_text

    # Audit stream ids carry Redis' clock (not this process's, which libfaketime may
    # move): this history starts an hour before Redis's now (no outcome here depends
    # on the hour).
    seconds, micros = await aredis.time()
    start = seconds + micros / 1e6 - 3600
    clock.set(start)
    await offer(aredis, keys, clock, Offer(tool.url("/oc/ana"), True, ""))
    await offer(aredis, keys, clock, Offer("https://tool.test/plain", False, ""),
                address="bo@example.org")
    state, t = State(aredis, keys, clock), teller(aredis, keys, clock, tmp_path)
    t.metrics = Metrics()
    await state.refuse(A, "unsubscribe", list="marketing", channel="one-click")
    await state.refuse("bo@example.org", "unsubscribe", list="marketing", channel="one-click")
    clock.advance(7)  # the worker comes round 7 s later
    await t.run_once()
    await t.refresh_gauges()
    metrics = t.metrics.render().decode()
    assert 'heed_tell_jobs{kind="one-click",state="sent"} 1.0' in metrics
    assert 'heed_tell_jobs{kind="one-click",state="pending"} 0.0' in metrics
    report = await build_report(state, t.policies.current, since=start - 60,
                                now=clock.now(), lookback=86400)
    figures = as_dict(report)["refusals"]["tool_told"]
    assert figures == {"refusals": 1, "share": 0.5, "seconds": {"p50": 7.0, "p99": 7.0}}
    assert "Refusals the tool was told of: 1 of 2 (50" in render_text(report)
    await t.close()


async def test_preference_centre_switching_a_stream_off_tells_the_tool(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path,
        tool: ToolStandIn) -> None:
    await offer(aredis, keys, clock, Offer(tool.url("/oc"), True, ""))
    state, t = State(aredis, keys, clock), teller(aredis, keys, clock, tmp_path)
    await state.set_preferences(A, off=["marketing"])
    await state.set_preferences(A, off=["marketing"], frequency="weekly")  # still off
    await t.run_once()
    clock.advance(60)
    await t.run_once()
    assert [r.path for r in tool.posts()] == ["/oc"]
    await t.close()
