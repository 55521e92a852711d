"""Delivery records survive what mail survives: kill -9 of heed right after a 250, Redis
killed while a record waits behind (real `heed serve`, real redis-server, aiosmtpd sink)."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest
import redis as redis_sync

from bench.soak import CountingSink, HeedProcess, wait_for
from proxy.audit import AuditEntry
from proxy.clock import ManualClock
from proxy.embedded_redis import EmbeddedRedis
from proxy.keys import Keys
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings, policy_dir
from tests.test_smtp_mailpath import NOON
from tests.topologies import RedisProcess

# One marketing copy a day per person: a second message must be held, never sent.
CAPPED = """
default_stream: transactional
streams:
  transactional: {kind: transactional}
  marketing:
    kind: marketing
    unsigned: allow  # relayed without a DKIM key
    rules:
      - {if: cap, per_day: 1, then: delay}
classify:
  - sender: "*@news.example.com"
    stream: marketing
"""
SENDER = "offers@news.example.com"


def offer(to: str, tag: str) -> bytes:
    return (f"From: <{SENDER}>\r\nTo: <{to}>\r\nSubject: offer {tag}\r\n"
            f"Message-ID: <{tag}@records.test>\r\nX-Soak-Tag: {tag}\r\n\r\nbody {tag}\r\n"
            ).encode()


def trail(redis_url: str, address: str) -> list[AuditEntry]:
    r = redis_sync.Redis.from_url(redis_url)
    try:
        return [AuditEntry.from_fields(f) for _, f in r.xrange(Keys().person_audit(address))]
    finally:
        r.close()


def test_kill_9_right_after_the_250_keeps_the_count_and_the_audit(tmp_path: Path) -> None:
    redis = EmbeddedRedis(tmp_path / "redis")  # AOF, appendfsync always, as heed runs it
    redis_url = redis.start()
    sink = CountingSink()
    heed = HeedProcess(tmp_path / "heed", redis_url, sink.port, CAPPED)  # default write_behind
    heed.start()
    try:
        for n in range(3):
            to = f"p{n}@example.org"
            with smtplib.SMTP("127.0.0.1", heed.port, timeout=30) as c:
                assert c.sendmail(SENDER, [to], offer(to, f"first{n}")) == {}
                # Killed within a few ms of the 250, well inside the 50 ms write-behind.
                heed.kill9()
            heed.start()
            with smtplib.SMTP("127.0.0.1", heed.port, timeout=30) as c:
                assert c.sendmail(SENDER, [to], offer(to, f"second{n}")) == {}  # 250: held
            # The first copy counts towards the cap: the second was held, not sent (its
            # record is written behind) ...
            assert wait_for(lambda to=to, n=n: ("decision", "queued", f"<second{n}@records.test>")
                            in [(e.kind, e.outcome, e.message_id)
                                for e in trail(redis_url, to)], 10)
            # ... and is in the audit, its outcome not confirmed.
            assert [(e.kind, e.outcome, e.message_id) for e in trail(redis_url, to)][:1] == [
                ("intent", "sending", f"<first{n}@records.test>")]
        assert wait_for(lambda: len(sink.tags) >= 3, 10)
        assert sorted(sink.tags) == ["first0", "first1", "first2"]
    finally:
        heed.stop()
        sink.stop()
        redis.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> EmbeddedRedis:
    redis = EmbeddedRedis(tmp_path / "own-redis")
    redis.start()
    return redis


def test_a_record_behind_waits_out_a_redis_outage(own_redis: EmbeddedRedis,
                                                  upstream: Upstream, tmp_path: Path) -> None:
    url = own_redis.url
    settings = make_settings(redis_url=url, upstream_port=upstream.port,
                             policies=policy_dir(tmp_path, CAPPED),
                             redis={"url": url, "write_behind": "1s"})
    h = HeedThread(settings, ManualClock(NOON)).start()
    try:
        to = "outage@example.org"
        with smtplib.SMTP("127.0.0.1", h.port, timeout=30) as c:
            assert c.sendmail(SENDER, [to], offer(to, "o1")) == {}
        own_redis.kill()  # the confirmation is still behind (1 s): its batch fails
        time.sleep(2.5)  # retried while Redis is away
        own_redis.start()
        assert h.heed is not None
        registry = h.heed.metrics.registry

        def confirmed() -> bool:
            return any(e.kind == "decision" and e.outcome == "delivered"
                       for e in trail(url, to))

        assert wait_for(confirmed, 20), "the record written behind was dropped"
        assert (registry.get_sample_value("heed_records_retried_total") or 0) >= 1
        assert registry.get_sample_value("heed_records_lost_total") == 0
        # Counted once: the intent's count stands, the confirmation adds none.
        r = redis_sync.Redis.from_url(url)
        assert r.zcard(Keys().sends(to)) == 1
        r.close()
    finally:
        h.stop()
        own_redis.stop()


def test_a_sentinel_failover_under_a_record_behind_loses_no_record(
        upstream: Upstream, tmp_path: Path) -> None:
    """The master dies (kill -9) while a delivery's record waits behind; the Sentinel
    promotes the replica; the record is retried until it reaches the new master."""
    master = RedisProcess(tmp_path / "master").started()
    replica = RedisProcess(tmp_path / "replica",
                           ["--replicaof", "127.0.0.1", str(master.port)]).started()
    watcher = RedisProcess(tmp_path / "sentinel")
    watcher.data_dir.mkdir(parents=True)
    config = watcher.data_dir / "sentinel.conf"
    config.write_text(f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
                      "sentinel down-after-milliseconds mymaster 1000\n"
                      "sentinel failover-timeout mymaster 10000\n")
    watcher.extra, watcher.config = ["--sentinel"], config
    watcher.started()
    h: HeedThread | None = None
    try:
        with redis_sync.Redis(port=watcher.port) as s:
            assert wait_for(lambda: any(r.get("master-link-status") == "ok" for r in
                                        s.sentinel_slaves("mymaster")), 30), "no replica seen"
        url = f"redis+sentinel://127.0.0.1:{watcher.port}/mymaster/0"
        settings = make_settings(redis_url=url, upstream_port=upstream.port,
                                 policies=policy_dir(tmp_path, CAPPED),
                                 redis={"url": url, "write_behind": "1s"})
        h = HeedThread(settings, ManualClock(NOON)).start()
        to = "failover@example.org"
        with smtplib.SMTP("127.0.0.1", h.port, timeout=30) as c:
            assert c.sendmail(SENDER, [to], offer(to, "f1")) == {}
        with redis_sync.Redis(port=master.port) as m:
            assert m.wait(1, 5000) == 1  # the intent is on the replica too
        master.kill()  # the confirmation is still behind: its batch meets the failover
        with redis_sync.Redis(port=watcher.port) as s:
            assert wait_for(lambda: s.sentinel_get_master_addr_by_name("mymaster")[1]
                            == replica.port, 30), "the sentinel did not promote the replica"
        promoted = f"redis://127.0.0.1:{replica.port}/0"
        assert wait_for(lambda: any(e.kind == "decision" and e.outcome == "delivered"
                                    for e in trail(promoted, to)), 30), "record dropped"
        assert h.heed is not None
        registry = h.heed.metrics.registry
        assert (registry.get_sample_value("heed_records_retried_total") or 0) >= 1
        assert registry.get_sample_value("heed_records_lost_total") == 0
    finally:
        if h is not None:
            h.stop()
        for server in (watcher, replica, master):
            server.stop()
