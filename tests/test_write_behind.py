"""Write-behind (``redis.write_behind``, proxy/batch.py): a delivery's record shares a later
round trip instead of holding up the 250; nothing queued behind is skipped or reordered."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import redis as redis_sync
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from proxy.audit import AuditEntry
from proxy.batch import GroupCommit
from proxy.clock import ManualClock
from proxy.copy.links import link_id
from proxy.copy.personal import ClickTarget
from proxy.embedded_redis import free_port
from proxy.errors import ConfigError
from proxy.keys import Keys
from proxy.redisconn import connect_redis, warm_up
from proxy.settings import ClickSettings, UnsubscribeKey, load_settings
from proxy.signals.clicks import Clicks, Request
from proxy.state import State
from proxy.tokens import CLICK, TokenSigner
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings, policy_dir
from tests.test_smtp_mailpath import NOON, POLICY, grant, send

LONG = 5.0  # a linger no test waits out: only a batch or a close writes what is behind


async def group_commit(redis_url: str, linger: float) -> GroupCommit:
    client = connect_redis(redis_url)
    await warm_up(client)
    return GroupCommit(client, linger=linger)


async def behind(batched: GroupCommit, *commands: tuple[str, ...]) -> None:
    pipe = batched.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(*args)
    await pipe.execute_behind("the test's record")


async def test_what_is_behind_goes_out_first_in_the_next_batch(
        redis_url: str, aredis: aioredis.Redis) -> None:
    batched = await group_commit(redis_url, LONG)
    try:
        await behind(batched, ("SET", "wb:a", "1"), ("INCR", "wb:n"))
        assert batched.batches == 0 and await aredis.get("wb:a") is None  # not yet sent
        pipe = batched.pipeline(transaction=False)
        pipe.get("wb:a")
        pipe.get("wb:n")
        # A read queued after the record sees it: same batch, and the record first.
        assert await pipe.execute() == [b"1", b"1"]
        assert (batched.batches, batched.requests) == (1, 2)
    finally:
        await batched.aclose()


@pytest.mark.cluster
async def test_with_no_batch_the_linger_sends_it(redis_url: str,
                                                 aredis: aioredis.Redis) -> None:
    batched = await group_commit(redis_url, 0.05)
    try:
        await behind(batched, ("SET", "wb:lone", "x"))
        for _ in range(200):  # at most 10 s: the linger is 50 ms
            if await aredis.get("wb:lone") == b"x":
                break
            await asyncio.sleep(0.05)
        assert await aredis.get("wb:lone") == b"x"
        assert batched.batches == 1
    finally:
        await batched.aclose()


async def test_close_writes_what_is_behind(redis_url: str, aredis: aioredis.Redis) -> None:
    batched = await group_commit(redis_url, LONG)
    await behind(batched, ("RPUSH", "wb:list", "1"), ("RPUSH", "wb:list", "2"))
    await batched.aclose()
    assert await aredis.lrange("wb:list", 0, -1) == [b"1", b"2"]


async def test_a_failed_record_is_logged_and_the_rest_written(
        redis_url: str, aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    await aredis.hset("wb:hash", "f", "v")
    batched = await group_commit(redis_url, LONG)
    with caplog.at_level(logging.ERROR, logger="heed.redis"):
        await behind(batched, ("INCR", "wb:hash"), ("SET", "wb:after", "y"))
        await batched.flush()
    await batched.aclose()
    assert await aredis.get("wb:after") == b"y"
    assert "could not record the test's record: ResponseError" in caplog.text


async def test_without_linger_the_caller_waits_and_errors_are_logged(
        redis_url: str, aredis: aioredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    await aredis.hset("wb:hash", "f", "v")
    batched = await group_commit(redis_url, 0)
    try:
        await behind(batched, ("SET", "wb:now", "1"))
        assert await aredis.get("wb:now") == b"1"  # written before execute_behind returned
        with caplog.at_level(logging.ERROR, logger="heed.redis"):
            # The mail is out: a refused record is logged, never raised into a 4xx.
            await behind(batched, ("INCR", "wb:hash"))
        assert "could not record the test's record: ResponseError" in caplog.text
        assert batched.retrying == 0  # a command Redis refused is not sent again
    finally:
        await batched.aclose()


@pytest.fixture
def heed_behind(redis_url: str, upstream: Upstream, tmp_path: Path) -> HeedThread:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policy_dir(tmp_path, POLICY),
                             redis={"url": redis_url, "write_behind": "1s"})
    return HeedThread(settings, ManualClock(NOON)).start()


def test_one_round_trip_per_lone_message_and_the_cap_still_counts(
        heed_behind: HeedThread, upstream: Upstream) -> None:
    h = heed_behind
    try:
        grant(h, "alice@example.org")
        assert h.heed is not None
        batched = h.heed.batched
        before = batched.batches
        replies = []
        expected = before
        for _ in range(3):
            replies.append(send(h, "offers@news.example.com", ["alice@example.org"])[1])
            # One batch on the reply path: the RCPT read, carrying the previous one's
            # record; a delivered copy's intent shares the wait for the upstream's reply.
            expected += 2 if len(replies) < 3 else 1
            assert batched.batches == expected
        # The policy caps marketing at 2 a day: the third is held, so the reads saw the
        # two sends recorded behind.
        assert [r[:3] for r in replies] == ["250"] * 3
        assert upstream.recipients() == ["alice@example.org"] * 2
        trail = h.call(h.heed.audit.recent("alice@example.org", 5))
        assert [e.outcome for e in trail] == ["queued", "delivered", "sending", "delivered",
                                              "sending"]
        # Each record's wait until written is timed (heed_redis_seconds{op="record"}).
        registry = h.heed.metrics.registry
        assert registry.get_sample_value("heed_redis_seconds_count", {"op": "record"}) == 3
    finally:
        h.stop()


def test_stopping_heed_writes_the_records_behind(
        heed_behind: HeedThread, upstream: Upstream, redis_url: str) -> None:
    h = heed_behind
    grant(h, "bob@example.org")
    assert send(h, "offers@news.example.com", ["bob@example.org"])[1].startswith("250")
    assert h.heed is not None
    # Stopped directly (HeedThread.call would flush first): the close must write it.
    asyncio.run_coroutine_threadsafe(h.heed.stop(), h.loop).result(30)
    h.heed = None
    r = redis_sync.Redis.from_url(redis_url)
    trail = [AuditEntry.from_fields(f) for _, f in r.xrange(Keys().person_audit(
        "bob@example.org"))]
    assert [e.outcome for e in trail if e.kind == "decision"] == ["delivered"]
    assert upstream.recipients() == ["bob@example.org"]
    h.stop()  # ends the thread's loop


@pytest.mark.parametrize(("value", "problem"), [
    ("-0.5", "'redis.write_behind' must be between 0s and 1s"),
    ("2s", "'redis.write_behind' must be between 0s and 1s"),
    ("-1s", "'redis.write_behind': expected a duration"),
    ("soon", "'redis.write_behind': expected a duration"),
])
def test_a_bad_write_behind_stops_heed_at_start(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={"HEED_REDIS__WRITE_BEHIND": value})
    assert problem in str(info.value)


def test_write_behind_takes_a_duration() -> None:
    assert load_settings(None, env={"HEED_REDIS__WRITE_BEHIND": "0"}).redis.write_behind == 0
    assert load_settings(None, env={}).redis.write_behind == 0.05


async def test_a_record_behind_is_retried_then_given_up_and_counted() -> None:
    """Redis away for longer than the retry bound: retried with backoff, then given up
    (logged, counted), never retried for ever."""
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2,
                          retry=Retry(NoBackoff(), 0))
    counts = {"retried": 0, "lost": 0}

    def count(name: str) -> Callable[[], None]:
        return lambda: counts.__setitem__(name, counts[name] + 1)

    batched = GroupCommit(dead, linger=0.01, retry_for=1.0, on_retry=count("retried"),
                          on_lost=count("lost"))
    await behind(batched, ("SET", "wb:never", "1"))
    for _ in range(200):
        if counts["lost"]:
            break
        await asyncio.sleep(0.05)
    assert counts["lost"] == 1 and counts["retried"] >= 2
    assert batched.retrying == 0
    await batched.aclose()


async def test_a_click_redirects_after_one_round_trip_its_engagement_behind(
        redis_url: str, aredis: aioredis.Redis) -> None:
    """GET /c/: the destination and the copy's last request before the 302; the
    engagement and its audit entry ride on the next batch (docs/engagement.md)."""
    clock = ManualClock(NOON)
    keys = Keys()
    batched = await group_commit(redis_url, LONG)
    try:
        tokens = TokenSigner([UnsubscribeKey("k1", b"0123456789abcdef0123")], clock, 86400)
        clicks = Clicks(tokens, State(batched, keys, clock), batched, keys, ClickSettings(),
                        86400)
        url = "https://shop.example/sale"
        await clicks.store({link_id(url): url})
        token = tokens.make("ana@example.org", ClickTarget("marketing", "c1", link_id(url))
                            .encode(), purpose=CLICK)
        clock.advance(600)
        before = batched.batches
        click = await clicks.follow(token, Request("GET", "192.0.2.1", "Firefox"), clock.now())
        assert (click.destination, click.kind) == (url, "click")
        assert batched.batches == before + 1  # one round trip on the redirect's path
        assert await aredis.hlen(keys.clicks("ana@example.org")) == 1  # the copy's request
        assert not await aredis.exists(keys.engagement("ana@example.org"))  # still behind
        await batched.flush()
        assert await aredis.exists(keys.engagement("ana@example.org"))
    finally:
        await batched.aclose()
