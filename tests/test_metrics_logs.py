"""Watch: /metrics scraped over HTTP after real SMTP traffic; JSON log lines tied to the audit."""

from __future__ import annotations

import io
import json
import logging
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis as redis_sync

from proxy.audit import AuditEntry
from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.errors import ConfigError
from proxy.keys import Keys
from proxy.logs import JsonFormatter, LoggedAddress
from proxy.settings import DkimKey, load_settings
from proxy.tokens import PREFERENCES
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings
from tests.test_smtp_mailpath import NOON, grant, send
from tests.test_smtp_mailpath import policies as policies  # the fixture, shared


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, policies: Path, tmp_path: Path
         ) -> Iterator[HeedThread]:
    from proxy.dkim import generate_key

    key_file, _record = generate_key("news.example.com", "s1", tmp_path / "keys")
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies,
                             http={"listen": f"127.0.0.1:{free_port()}"})
    settings = replace(settings, dkim=(DkimKey("news.example.com", "s1", key_file),))
    h = HeedThread(settings, ManualClock(NOON)).start()
    yield h
    h.stop()


def scrape(h: HeedThread) -> dict[str, float]:
    """GET /metrics like Prometheus does; sample name{labels} -> value."""
    assert h.settings.http.listen is not None
    host, port = h.settings.http.listen
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("heed.mailpath")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield buffer
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_metrics_follow_real_traffic(heed: HeedThread, upstream: Upstream,
                                     policies: Path) -> None:
    grant(heed, "alice@example.org")
    assert heed.heed is not None
    heed.call(heed.heed.state.refuse("bob@example.org", "unsubscribe", channel="test"))
    before = scrape(heed)
    refused, reply = send(heed, "offers@news.example.com", ["alice@example.org",
                                                             "bob@example.org"])
    assert reply.startswith("250") and refused["bob@example.org"][0] == 550
    _, reply = send(heed, "orders@shop.example.com", ["zed@example.org"])
    assert reply.startswith("250")
    upstream.handler.reply = "451 4.3.0 try later"
    _, reply = send(heed, "orders@shop.example.com", ["zed@example.org"])
    assert reply.startswith("451")
    assert heed.heed.reload()
    (policies / "policy.yaml").write_text("streams: [")
    assert not heed.heed.reload()

    heed.settle()  # the records written behind are timed once written
    m = scrape(heed)
    assert m['heed_recipients_total{outcome="delivered",reason="none",stream="marketing"}'] == 1
    assert m['heed_recipients_total{outcome="reject",reason="refused",stream="marketing"}'] == 1
    assert m['heed_recipients_total{outcome="delivered",reason="none",'
             'stream="transactional"}'] == 1
    assert m['heed_messages_total{outcome="accepted",stream="marketing"}'] == 1
    assert m['heed_messages_total{outcome="accepted",stream="transactional"}'] == 1
    assert m['heed_messages_total{outcome="tempfail",stream="transactional"}'] == 1
    assert m['heed_smtp_replies_total{class="2xx",phase="rcpt"}'] == 3
    assert m['heed_smtp_replies_total{class="5xx",phase="rcpt"}'] == 1
    assert m['heed_smtp_replies_total{class="2xx",phase="data"}'] == 2
    assert m['heed_smtp_replies_total{class="4xx",phase="data"}'] == 1
    assert m['heed_policy_reloads_total{result="ok"}'] == 1
    assert m['heed_policy_reloads_total{result="failed"}'] == 1
    # Three upstream transactions (the marketing copy, the receipt, the refused retry).
    assert m["heed_upstream_seconds_count"] == 3
    # The refusal at RCPT read state once, the DATA phase decided without a new read
    # (alice's decision came from RCPT): snapshots = 2 RCPTs; one intent per upstream
    # transaction; records = 1 rejection + 3 DATA (the tempfail takes its intent back).
    assert m['heed_redis_seconds_count{op="snapshot"}'] == before.get(
        'heed_redis_seconds_count{op="snapshot"}', 0) + 2
    assert m['heed_redis_seconds_count{op="intent"}'] == 3
    assert m['heed_redis_seconds_count{op="record"}'] == 4
    assert m["heed_decision_seconds_count"] == 3
    assert "heed_queue_depth" in m and "heed_queue_oldest_seconds" in m


def test_queue_gauges_show_held_mail_and_how_overdue(heed: HeedThread,
                                                    upstream: Upstream) -> None:
    grant(heed, "alice@example.org")
    assert heed.heed is not None and isinstance(heed.clock, ManualClock)
    heed.clock.set(NOON + 10 * 3600)  # 22:00 UTC: inside the policy's quiet hours
    assert send(heed, "offers@news.example.com", ["alice@example.org"])[1].startswith("250")
    heed.call(heed.heed.refresh_queue_gauges())  # (its connection is open from here on)
    stats = redis_sync.Redis.from_url(str(heed.settings.redis.url))
    reads = stats.info("stats")["total_reads_processed"]
    heed.call(heed.heed.refresh_queue_gauges())
    # One round trip for the gauges (and one for this INFO): they are read every 5 s.
    assert stats.info("stats")["total_reads_processed"] - reads == 2
    stats.close()
    m = scrape(heed)
    assert (m["heed_queue_depth"], m["heed_queue_oldest_seconds"]) == (1, 0)  # not due yet
    heed.clock.set(NOON + 20 * 3600 + 90)  # 08:01:30, not released yet: 90 s overdue
    heed.call(heed.heed.refresh_queue_gauges())
    m = scrape(heed)
    assert (m["heed_queue_depth"], m["heed_queue_oldest_seconds"]) == (1, 90)
    # Released into a permanent refusal: the end of the copy is a counted decision too.
    upstream.handler.reply = "550 5.1.1 no such user"
    heed.release_due()
    heed.call(heed.heed.refresh_queue_gauges())
    m = scrape(heed)
    assert m['heed_recipients_total{outcome="failed",reason="upstream",stream="marketing"}'] == 1


def test_page_requests_are_counted(heed: HeedThread) -> None:
    assert heed.settings.http.listen is not None
    host, port = heed.settings.http.listen
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://{host}:{port}/u/not-a-token", timeout=10)
    assert heed.heed is not None
    token = heed.heed.tokens.make("ana@example.org", "marketing")
    with urllib.request.urlopen(f"http://{host}:{port}/u/{token}", timeout=10) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://{host}:{port}/p/not-a-token", timeout=10)
    prefs = heed.heed.tokens.make("ana@example.org", "marketing", purpose=PREFERENCES)
    with urllib.request.urlopen(f"http://{host}:{port}/p/{prefs}", timeout=10) as r:
        assert r.status == 200
    m = scrape(heed)
    assert m['heed_http_requests_total{page="unsubscribe",result="bad"}'] == 1
    assert m['heed_http_requests_total{page="unsubscribe",result="shown"}'] == 1
    assert m['heed_http_requests_total{page="preferences",result="bad"}'] == 1
    assert m['heed_http_requests_total{page="preferences",result="shown"}'] == 1


def test_one_json_line_per_decision_shares_the_audit_correlation_id(
        heed: HeedThread, upstream: Upstream, redis_url: str, log_lines: io.StringIO) -> None:
    grant(heed, "alice@example.org", "carol@example.org")
    assert heed.heed is not None
    heed.call(heed.heed.state.refuse("bob@example.org", "unsubscribe", channel="test"))
    send(heed, "offers@news.example.com",
         ["alice@example.org", "bob@example.org", "carol@example.org"])
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    decisions = [line for line in lines if line["msg"] == "decision"]
    assert sorted(d["recipient"] for d in decisions) == [
        "alice@example.org", "bob@example.org", "carol@example.org"]
    heed.settle()
    r = redis_sync.Redis.from_url(redis_url)
    trail = [AuditEntry.from_fields(f) for _, f in r.xrange(Keys().audit)]
    audited = {(e.recipient, e.correlation_id, e.outcome) for e in trail if e.kind == "decision"}
    logged = {(d["recipient"], d["correlation_id"], d["outcome"]) for d in decisions}
    assert logged == audited
    # One SMTP transaction, one id: the RCPT rejection and the DATA decisions share it.
    assert len({cid for _, cid, _ in logged}) == 1 and re.fullmatch(r"[0-9a-f]{32}",
                                                                   decisions[0]["correlation_id"])
    # A delivered marketing copy records that it carried a DKIM-covered one-click.
    by = {e.recipient: e for e in trail if e.kind == "decision"}
    assert by["alice@example.org"].one_click == "signed"
    assert by["bob@example.org"].one_click == ""
    assert decisions[0]["reasons"] == [] or isinstance(decisions[0]["reasons"], list)


def test_json_line_is_what_plain_json_dumps_wrote() -> None:
    """The reused encoder and the once-a-second time stamp change no byte of a line."""
    formatter = JsonFormatter()
    lines = []
    for created in (1_800_000_000.25, 1_800_000_000.999, 1_800_000_001.0):
        record = logging.makeLogRecord({
            "name": "heed.mailpath", "levelname": "INFO", "levelno": logging.INFO,
            "msg": "decision %s", "args": ("x",), "created": created,
            "msecs": (created - int(created)) * 1000, "recipient": "ana@exämple.org",
            "reasons": ["a", "ไม่"], "path": Path("/tmp/x"), "_hidden": 1})
        lines.append(formatter.format(record))
        expected = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            + f".{int(record.msecs):03d}Z",
            "level": "info", "logger": "heed.mailpath", "msg": "decision x",
            "recipient": "ana@exämple.org", "reasons": ["a", "ไม่"], "path": Path("/tmp/x")}
        assert lines[-1] == json.dumps(expected, default=str, ensure_ascii=False)
    assert [json.loads(line)["ts"] for line in lines] == [
        "2027-01-15T08:00:00.250Z", "2027-01-15T08:00:00.999Z", "2027-01-15T08:00:01.000Z"]


@pytest.mark.parametrize("mode", ["hash", "domain"])
def test_log_addresses_keeps_addresses_out_of_decision_lines(
        mode: str, redis_url: str, upstream: Upstream, policies: Path,
        log_lines: io.StringIO) -> None:
    settings = replace(make_settings(redis_url=redis_url, upstream_port=upstream.port,
                                     policies=policies), log_addresses=mode)
    h = HeedThread(settings, ManualClock(NOON)).start()
    try:
        grant(h, "alice@example.org")
        send(h, "offers@news.example.com", ["alice@example.org", "Bob@Example.org"])
        send(h, "offers@news.example.com", ["bob@example.org"])
        h.settle()
    finally:
        h.stop()
    text = log_lines.getvalue()
    assert "alice@" not in text and "bob@" not in text.lower() and "offers@" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    shown = [(d["recipient"], d["sender"]) for d in lines if d["msg"] == "decision"]
    assert len(shown) == 3
    if mode == "domain":
        assert set(shown) == {("*@example.org", "*@news.example.com")}
    else:
        digest = LoggedAddress("hash", settings.unsubscribe.erase_secret)
        # One person, one digest, whatever the case: their lines can still be found.
        assert sorted(r for r, _ in shown) == sorted(
            [digest("alice@example.org"), digest("bob@example.org"), digest("BOB@example.org")])
        assert digest("bob@example.org") != digest("alice@example.org")
        assert all(r.startswith("h:") and len(r) == 18 for r, _ in shown)
    # The audit trail in Redis keeps the address (it is erased with the person).
    assert upstream.recipients() == ["alice@example.org"]


def test_log_addresses_is_checked() -> None:
    with pytest.raises(ConfigError, match="'log_addresses' must be full, hash or domain"):
        load_settings(None, env={"HEED_LOG_ADDRESSES": "partial"})
