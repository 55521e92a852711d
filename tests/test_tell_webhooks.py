"""Signed outbound webhooks, checked by an independent implementation (standardwebhooks)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from standardwebhooks import Webhook

from proxy.audit import Audit
from proxy.clock import ManualClock
from proxy.keys import Keys
from proxy.policy_store import PolicyStore
from proxy.privacy import erase
from proxy.relay import SmtpUpstream
from proxy.settings import TellSettings, UpstreamSettings
from proxy.state import State
from proxy.tell.webhook import sign
from proxy.tell.worker import Teller
from tests.harness import CONSENT_POLICY, policy_dir
from tests.tool_standin import ToolStandIn

OLD = "whsec_" + base64.b64encode(b"old-secret-0123456789abcdef").decode()
NEW = "whsec_" + base64.b64encode(b"new-secret-0123456789abcdef").decode()


def test_the_spec_test_vector() -> None:
    # Standard Webhooks' published example (also svix's test vector).
    got = sign(("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",), "msg_p5jXN8AQM9LWM0D4loKWxJek",
               1614265330, '{"test": 2432232314}')
    assert got == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def teller(aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path,
           url: str, **tell: object) -> Teller:
    settings = TellSettings(**{"webhooks": ((url, (NEW, OLD)),), "backoff": (10.0,),
                               "max_attempts": 3, "timeout": 2.0, **tell})  # type: ignore[arg-type]
    return Teller(redis=aredis, keys=keys, clock=clock, settings=settings,
                  policies=PolicyStore(policy_dir(tmp_path, CONSENT_POLICY)),
                  upstream=SmtpUpstream(UpstreamSettings(port=9)), audit=Audit(aredis, keys),
                  sender="u@heed.test", hostname="heed.test")


async def test_every_change_arrives_signed_and_verifiable(aredis: aioredis.Redis, keys: Keys,
                                                          tmp_path: Path) -> None:
    # The verifier checks the timestamp against the real time (±5 minutes): the clock
    # starts at the real time, and no outcome here depends on the hour.
    clock = ManualClock(time.time())
    hook = ToolStandIn().start()
    try:
        state = State(aredis, keys, clock, secret=b"erase-secret-0123456789abcdef")
        t = teller(aredis, keys, clock, tmp_path, hook.url("/hooks/heed"))
        await state.grant("ana@example.org", "news", source="form", text="v1")
        await state.refuse("ana@example.org", "unsubscribe", list="news", channel="one-click")
        await state.revoke("ana@example.org", "news", source="api")
        await state.set_preferences("bo@example.org", off=["news"])
        await erase(state, "cy@example.org")
        assert await t.run_once() == 5
        await t.close()
    finally:
        hook.stop()
    events = []
    for request in hook.got:
        for secret in (OLD, NEW):  # either secret verifies: rotation needs no flag day
            events.append(Webhook(secret).verify(request.body, request.headers))
        assert request.headers["webhook-id"] == events[-1]["data"]["event_id"]
    by_type = {e["type"]: e["data"] for e in events}
    assert set(by_type) == {"consent.granted", "refusal.created", "consent.revoked",
                            "preferences.changed", "person.erased"}
    assert by_type["refusal.created"]["kind"] == "unsubscribe"
    assert by_type["refusal.created"]["list"] == "news"
    assert by_type["preferences.changed"]["off"] == ["news"]
    erased = by_type["person.erased"]
    assert "address" not in erased and len(erased["suppression_id"]) == 64
    assert b"cy@example.org" not in b"".join(r.body for r in hook.got)


@pytest.mark.cluster
async def test_retried_with_the_same_id_then_dead_lettered(aredis: aioredis.Redis, keys: Keys,
                                                           clock: ManualClock,
                                                           tmp_path: Path) -> None:
    hook = ToolStandIn(replies=[500, 200]).start()
    down = ToolStandIn(replies=[503] * 10).start()
    try:
        state = State(aredis, keys, clock)
        t = teller(aredis, keys, clock, tmp_path, hook.url("/a"))
        await state.refuse("ana@example.org", "complaint", channel="arf")
        await t.run_once()
        clock.advance(10)
        await t.run_once()
        assert [r.headers["webhook-id"] for r in hook.got] == [hook.got[0].headers[
            "webhook-id"]] * 2
        assert hook.got[0].body == hook.got[1].body  # the same event, byte for byte
        assert hook.got[0].headers["webhook-timestamp"] != hook.got[1].headers[
            "webhook-timestamp"]  # each attempt signed when sent
        (tmp_path / "d").mkdir()
        d = teller(aredis, keys, clock, tmp_path / "d", down.url("/b"))
        await state.refuse("bo@example.org", "complaint", channel="arf")
        for _ in range(4):
            await d.run_once()
            clock.advance(10)
        [dead] = await d.jobs.dead()
        assert dead.kind == "webhook" and dead.target == down.url("/b")
        stats = await d.jobs.stats()
        assert stats[("webhook", "dead")] == 1 and stats[("webhook", "failed")] == 3
        assert json.loads(dead.body)["data"]["address"] == "bo@example.org"
        await t.close()
        await d.close()
    finally:
        hook.stop()
        down.stop()
    assert len(down.got) == 3


def test_tell_settings_from_env_and_their_errors() -> None:
    from proxy.errors import ConfigError
    from proxy.settings import load_settings

    s = load_settings(None, env={"HEED_TELL__ALLOW": "[127.0.0.1, tool.internal]",
                                 "HEED_TELL__BACKOFF": "[1s, 1m]",
                                 "HEED_TELL__WEBHOOKS": f"[{{url: 'https://t.test/h', "
                                                        f"secrets: [{NEW}, {OLD}]}}]"})
    assert s.tell.allow == ("127.0.0.1", "tool.internal") and s.tell.backoff == (1.0, 60.0)
    assert s.tell.webhooks == (("https://t.test/h", (NEW, OLD)),)
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={}, overrides={"tell": {
            "webhooks": [{"url": "ftp://x", "secrets": [NEW]}, {"url": "https://x",
                                                                 "secrets": ["whsec_abc"]}],
            "timeout": "5m", "backoff": []}})
    text = "\n".join(info.value.errors)
    assert "'tell.webhooks': entry 0: needs url" in text
    assert "'tell.timeout' must be between 0s and 60s" in text
    assert "'tell.backoff' needs at least one delay" in text


SILENCE_POLICY = """
version: silence
default_stream: marketing
streams:
  marketing:
    kind: marketing
    silence:
      inactive: {sends: 2}
    rules:
      - {if: refused, then: drop}
"""


async def test_turning_inactive_and_active_again_is_sent(aredis: aioredis.Redis, keys: Keys,
                                                         tmp_path: Path) -> None:
    clock = ManualClock(time.time())  # the verifier checks timestamps against the real time
    hook = ToolStandIn().start()
    try:
        state = State(aredis, keys, clock)
        t = teller(aredis, keys, clock, tmp_path, hook.url("/h"), lifecycle_every=3600.0)
        t.policies = PolicyStore(policy_dir(tmp_path, SILENCE_POLICY, "silence"))
        await state.grant("ana@example.org", "marketing", source="form", text="v1")
        await state.grant("bo@example.org", "marketing", source="form", text="v1")
        assert await t.lifecycle() == 0  # the first look is a baseline: both active
        pipe = aredis.pipeline(transaction=False)
        state.record_sends(pipe, "marketing", ["ana@example.org"] * 2, clock.now())
        await pipe.execute()
        assert await t.lifecycle() == 0  # not due again within the hour
        clock.advance(3600)
        await aredis.delete(keys.tell_lifecycle_lock)  # its TTL runs on Redis' own clock
        assert await t.lifecycle() == 1
        await state.engage("ana@example.org", kind="click")
        clock.advance(3600)
        await aredis.delete(keys.tell_lifecycle_lock)
        assert await t.lifecycle() == 1
        clock.set(time.time())  # signed now, for the verifier's ±5 minutes
        await t.run_once()
        await t.close()
    finally:
        hook.stop()
    got = [Webhook(NEW).verify(r.body, r.headers) for r in hook.got]
    # Sent together (one round sends its jobs at once): in the order they happened.
    changes = [(e["data"]["address"], e["data"]["stage"]) for e in sorted(
        got, key=lambda e: e["data"]["at"]) if e["type"] == "lifecycle.changed"]
    assert changes == [("ana@example.org", "inactive"), ("ana@example.org", "active")]
