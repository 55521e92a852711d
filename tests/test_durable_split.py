"""Split Redis: what a reply promises is on the fsynced Redis first; a lost serving one is restored.

Real redis-servers throughout: the durable one with ``appendfsync always``, the
serving one with ``everysec`` (proxy/durable/, docs/architecture.md).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from proxy.clock import ManualClock
from proxy.durable.guard import ServingGuard
from proxy.durable.mirror import Mirror, MirroredRedis, durable_part
from proxy.durable.reconcile import bring_in_step, reconcile
from proxy.embedded_redis import EmbeddedRedis, free_port, ping, wait_port
from proxy.errors import StateUnavailable
from proxy.keys import Keys
from proxy.privacy import erase
from proxy.redisconn import connect_redis
from proxy.settings import UnsubscribeKey
from proxy.state import State
from proxy.tokens import TokenSigner
from tests.conftest import ROOT
from tests.harness import CONSENT_POLICY

A = "ann@example.org"
B = "bob@example.org"


class Pair:
    """A serving (everysec) and a durable (always) redis-server, each restartable."""

    def __init__(self, base: Path) -> None:
        self.serving = EmbeddedRedis(base / "serving", fsync="everysec")
        self.durable = EmbeddedRedis(base / "durable")
        self.serving.start()
        self.durable.start()

    def stop(self) -> None:
        self.serving.stop()
        self.durable.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    servers = Pair(tmp_path)
    yield servers
    servers.stop()


@pytest.fixture
async def clients(pair: Pair) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis]]:
    serving, durable = aioredis.from_url(pair.serving.url), aioredis.from_url(pair.durable.url)
    yield serving, durable
    await serving.aclose()
    await durable.aclose()


def state_on(serving: aioredis.Redis, durable: aioredis.Redis) -> State:
    keys = Keys()
    return State(MirroredRedis(serving, Mirror(durable, keys)), keys, ManualClock(1_800_000_000),
                 secret=b"erase-secret-0123456789abcdef")


def test_which_commands_the_durable_redis_runs_too() -> None:
    k = Keys()
    assert durable_part(k, ("HSETNX", k.refusal(A), "*", "{}")) is not None
    assert durable_part(k, ("HGETALL", k.refusal(A))) is None  # reads: serving only
    assert durable_part(k, ("HINCRBY", k.engagement(A), "total_sends", 1)) is None
    assert durable_part(k, ("DEL", k.consent(A), k.sends(A), k.prefs(A))) == (
        "DEL", k.consent(A), k.prefs(A))
    assert durable_part(k, ("EVAL", "return 1", 1, k.refusal(A), "x")) is not None
    assert durable_part(k, ("SADD", k.suppressed, "d1")) is not None
    assert durable_part(k, ("SADD", k.people, A)) is None


async def test_a_refusal_is_on_the_durable_redis_and_counted_on_both(
        clients: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    serving, durable = clients
    state = state_on(serving, durable)
    await state.grant(A, "news", source="form")
    assert await state.refuse(A, "unsubscribe", list="news", channel="one-click")
    k = Keys()
    assert await durable.hget(k.refusal(A), "news") is not None
    assert await durable.hget(k.consent(A), "news") is not None
    # Bookkeeping stays off the durable Redis: no audit, no people set there.
    assert not await durable.exists(k.audit) and not await durable.exists(k.people)
    assert await serving.exists(k.audit)
    assert await durable.get(k.durable_seq) == await serving.get(k.durable_seq) == b"2"


async def test_without_the_durable_redis_a_change_fails_and_the_serving_one_is_untouched(
        pair: Pair, clients: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    serving, durable = clients
    state = state_on(serving, durable)
    pair.durable.stop()
    with pytest.raises(StateUnavailable):  # the one-click page answers an error, not a 200
        await state.refuse(A, "unsubscribe", list="news", channel="one-click")
    assert not await serving.exists(Keys().refusal(A))


async def test_without_the_serving_redis_no_decision_is_read(
        pair: Pair, clients: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    serving, durable = clients
    state = state_on(serving, durable)
    pair.serving.stop()
    with pytest.raises(StateUnavailable):  # the SMTP edge answers 451 (fail closed)
        await state.snapshot(A)


async def test_a_serving_redis_that_lost_its_data_is_restored_before_use(
        pair: Pair, clients: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    serving, durable = clients
    state = state_on(serving, durable)
    k = Keys()
    await state.grant(A, "news", source="form")
    await state.grant("bob@example.org", "news", source="form")
    await erase(state, "bob@example.org")  # an erasure the serving Redis then loses
    await state.refuse(A, "unsubscribe", list="news", channel="one-click")
    assert (await reconcile(serving, durable, k)) == "in step"
    # The serving Redis loses everything (worse than everysec's last second), and
    # meanwhile holds a consent the durable Redis erased.
    await serving.flushall()
    await serving.hset(k.consent("bob@example.org"), "news", "{}")
    done = await reconcile(serving, durable, k)
    assert "restored" in done
    person = await state.snapshot(A)
    assert "news" in person.refusals and "news" in person.consents
    assert not await serving.exists(k.consent("bob@example.org"))
    assert (await state.snapshot("bob@example.org")).suppressed
    assert await reconcile(serving, durable, k) == "in step"


async def test_a_new_durable_redis_is_filled_from_the_serving_one(
        clients: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    """A site that ran on one Redis gets the split: nothing it knew is lost."""
    serving, durable = clients
    k = Keys()
    await serving.hset(k.refusal(A), "*", json.dumps({"kind": "complaint", "at": 1.0}))
    await serving.hset(k.engagement(A), "total_sends", 3)
    assert "filled" in await reconcile(serving, durable, k)
    assert await durable.hget(k.refusal(A), "*") is not None
    assert not await durable.exists(k.engagement(A))
    await serving.flushall()
    await reconcile(serving, durable, k)
    assert await serving.hget(k.refusal(A), "*") is not None


async def test_a_serving_redis_restarted_under_heed_is_restored_before_the_next_read(
        pair: Pair, clients: tuple[aioredis.Redis, aioredis.Redis]) -> None:
    serving, durable = clients
    k = Keys()
    await state_on(serving, durable).refuse(A, "unsubscribe", list="news", channel="one-click")
    await bring_in_step(serving, durable, k)
    guard = ServingGuard(pair.serving.url, durable, k)
    guarded = connect_redis(pair.serving.url, on_connect=guard.on_connect)
    reader = State(guarded, k, ManualClock(1_800_000_000))
    try:
        assert "news" in (await reader.snapshot(A)).refusals
        assert len(guard.known) == 1  # marked in step at start: nothing restored
        pair.serving.kill()
        shutil.rmtree(pair.serving.data_dir / "appendonlydir", ignore_errors=True)
        (pair.serving.data_dir / "dump.rdb").unlink(missing_ok=True)
        pair.serving.start()  # the same port, nothing on it
        try:
            person = await reader.snapshot(A)
        except StateUnavailable:  # the broken connection's reply: a 451 for that one
            person = await reader.snapshot(A)
        assert "news" in person.refusals
        assert len(guard.known) == 2
    finally:
        await guarded.aclose()


# --- the whole of `heed serve`: kill -9 of everything right after a one-click 200 ---------

SECRET = "test-secret-0123456789abcdef"


def heed_env(data: Path, http: int) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), HEED_REDIS__DATA_DIR=str(data),
                HEED_HTTP__LISTEN=f"127.0.0.1:{http}", HEED_HTTP__PUBLIC_URL="https://heed.test",
                HEED_UNSUBSCRIBE__KEYS=f"[{{id: t1, secret: {SECRET}}}]",
                HEED_UPSTREAM__ON_FAILURE="queue")  # nothing listens upstream: held


def serve(tmp: Path, data: Path, http: int, smtp: int) -> subprocess.Popen[bytes]:
    with (tmp / "heed.log").open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--listen", f"127.0.0.1:{smtp}",
             "--upstream", f"127.0.0.1:{free_port()}", "--policies", str(tmp / "policies")],
            cwd=tmp, env=heed_env(data, http), stdout=out, stderr=out)


def redis_pids(heed: int) -> list[int]:
    kids = Path(f"/proc/{heed}/task/{heed}/children").read_text().split()
    return [int(p) for p in kids if b"redis-server" in Path(f"/proc/{p}/cmdline").read_bytes()]


def test_kill_9_right_after_a_one_click_200_and_a_held_250_loses_nothing(
        tmp_path: Path) -> None:
    import smtplib

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "policy.yaml").write_text(CONSENT_POLICY)
    data, http, smtp = tmp_path / "var" / "redis", free_port(), free_port()
    heed = serve(tmp_path, data, http, smtp)
    try:
        wait_port(http, timeout=60)
        # A consent granted by the CLI beside the running heed (both Redis, durable first).
        granted = subprocess.run(
            [sys.executable, "-m", "proxy", "consent", "grant", B, "--list", "marketing",
             "--policies", str(tmp_path / "policies")],
            cwd=tmp_path, env=heed_env(data, http), capture_output=True, text=True, timeout=120)
        assert granted.returncode == 0, granted.stderr
        with smtplib.SMTP("127.0.0.1", smtp, timeout=30) as client:  # the upstream is down
            client.sendmail("news@example.com", [B],
                            b"From: news@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
        token = TokenSigner((UnsubscribeKey("t1", SECRET.encode()),),
                            ManualClock(time.time()), 30 * 86400).make(A, "news")
        request = urllib.request.Request(f"http://127.0.0.1:{http}/u/{token}",
                                         data=b"List-Unsubscribe=One-Click", method="POST")
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
        for pid in [*redis_pids(heed.pid), heed.pid]:  # at once: no shutdown writes anything
            os.kill(pid, signal.SIGKILL)
        heed.wait(10)
        # The serving Redis fsyncs once a second: the worst a crash can leave is less
        # than nothing of its last second. Take all of it.
        shutil.rmtree(data / "appendonlydir", ignore_errors=True)
        (data / "dump.rdb").unlink(missing_ok=True)
        assert (data / "durable" / "appendonlydir").exists()
        heed = serve(tmp_path, data, http, smtp)
        wait_port(http, timeout=60)
        log = (tmp_path / "heed.log").read_text()
        assert "restored from the durable one" in log, log[-2000:]
        assert ping(data / "redis.sock")
        k = Keys()
        client = redis.Redis(unix_socket_path=str(data / "redis.sock"))
        refusal, consent = client.hget(k.refusal(A), "news"), client.hget(k.consent(B),
                                                                          "marketing")
        client.close()
        assert refusal is not None and json.loads(refusal)["channel"]
        assert consent is not None
        durable = redis.Redis(unix_socket_path=str(data / "durable" / "redis.sock"))
        # The held copy's 250: in the queue on the durable Redis (due, or claimed by the
        # restarted scheduler meanwhile), and its item there.
        held = durable.zcard(k.queue_due) + durable.zcard(k.queue_claimed)
        items = durable.keys(k.queue_item("*"))
        durable.close()
        assert held == 1 and len(items) == 1
    finally:
        heed.send_signal(signal.SIGTERM)
        try:
            heed.wait(20)
        except subprocess.TimeoutExpired:
            heed.kill()


# --- heed with the durable Redis away: no promise it cannot keep --------------------------

def test_with_the_durable_redis_away_heed_promises_nothing_it_cannot_keep(
        pair: Pair, tmp_path: Path) -> None:
    import smtplib

    from tests.harness import HeedThread, make_settings, policy_dir

    http = free_port()
    settings = make_settings(
        redis_url=pair.serving.url, upstream_port=free_port(),  # nothing listens: hold it
        policies=policy_dir(tmp_path, CONSENT_POLICY),
        redis={"durable_url": pair.durable.url}, upstream={"on_failure": "queue"},
        http={"listen": f"127.0.0.1:{http}"})
    heed = HeedThread(settings, ManualClock(time.time())).start()
    try:
        assert heed.heed is not None
        state = heed.heed.state
        heed.call(state.grant(A, "marketing", source="form"))
        pair.durable.stop()
        token = heed.heed.tokens.make(A, "marketing")
        request = urllib.request.Request(f"http://127.0.0.1:{http}/u/{token}",
                                         data=b"List-Unsubscribe=One-Click", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        refused.value.close()
        assert refused.value.code == 503  # "try again later", never a 200
        with heed.smtp() as client, pytest.raises(smtplib.SMTPDataError) as held:
            client.sendmail("news@example.com", [A],
                            b"From: news@example.com\r\nSubject: hi\r\n\r\nhello\r\n")
        assert held.value.smtp_code == 451  # the upstream is down and the queue is away
    finally:
        heed.stop()
