"""Preference-centre changes reach mail: held copies re-checked at release, erasure at RCPT."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.tokens import PREFERENCES
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings

POLICY = """
version: test
default_stream: marketing
streams:
  marketing:
    kind: marketing
    unsigned: allow  # relayed without a DKIM key
    list: marketing
    drop: reject
    rules:
      - {if: refused, then: drop}
      - {if: opted_out, then: drop}
      - {if: no_consent, then: drop}
      - {if: paused, then: discard}
      - {if: cap, per_day: 5, then: delay}
      - {if: quiet_hours, start: "21:00", end: "08:00", zone: UTC, then: delay}
  transactional:
    kind: transactional
classify:
  - sender: "*@shop.example.com"
    stream: transactional
"""
NOON = 1_800_000_000.0 - (1_800_000_000 % 86400) + 12 * 3600  # 12:00 UTC
SENDER = "offers@news.example.com"


@pytest.fixture
def heed(tmp_path: Path, redis_url: str, upstream: Upstream) -> Iterator[HeedThread]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=tmp_path,
                             http={"listen": f"127.0.0.1:{free_port()}"})
    h = HeedThread(settings, ManualClock(NOON)).start()
    yield h
    h.stop()


def send(h: HeedThread, rcpt: str) -> tuple[int, str]:
    """One marketing message as a tool sends it: the RCPT reply, or the DATA reply."""
    with h.smtp() as c:
        c.mail(SENDER)
        code, msg = c.rcpt(rcpt)
        if code != 250:
            return code, msg.decode()
        code, msg = c.data(f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: Sale\r\n"
                           "Message-ID: <e2e@news.example.com>\r\n\r\nHello\r\n")
        return code, msg.decode()


def press(h: HeedThread, address: str, action: str) -> str:
    """Open the person's preference centre over HTTP and submit one form, like a browser."""
    assert h.heed is not None and h.settings.http.listen is not None
    host, port = h.settings.http.listen
    token = h.heed.tokens.make(address, "marketing", purpose=PREFERENCES)
    url = f"http://{host}:{port}/p/{token}"
    with urllib.request.urlopen(url, timeout=10) as r:
        nonce = re.search(r'name="nonce" value="([^"]+)"', r.read().decode())
    assert nonce
    body = urllib.parse.urlencode({"nonce": nonce.group(1), "action": action}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
        return r.read().decode()  # urllib follows the 303 back to the page


def grant(h: HeedThread, address: str) -> None:
    assert h.heed is not None
    h.call(h.heed.state.grant(address, "marketing", source="test", ip="192.0.2.1", text="v1"))


def test_pause_reaches_mail_already_held(heed: HeedThread, upstream: Upstream) -> None:
    assert heed.heed is not None
    clock = heed.clock
    assert isinstance(clock, ManualClock)
    grant(heed, "hal@example.org")
    clock.set(NOON + 10 * 3600)  # 22:00 UTC: quiet hours hold the copy
    assert send(heed, "hal@example.org")[0] == 250
    assert heed.call(heed.heed.queue.depth()) == 1 and upstream.received == []
    assert "Paused until" in press(heed, "hal@example.org", "pause30")
    clock.set(NOON + 20 * 3600 + 60)  # 08:01: the copy is due
    assert heed.release_due() == 1
    assert upstream.received == []  # re-checked at release: the pause won
    assert heed.call(heed.heed.queue.depth()) == 0
    trail = heed.call(heed.heed.audit.recent("hal@example.org", 5))
    assert trail[0].outcome == "dropped-at-release" and "paused" in trail[0].reasons[0]
    # Resume: the next message goes out.
    assert 'value="pause30"' in press(heed, "hal@example.org", "resume")
    assert send(heed, "hal@example.org")[0] == 250
    assert upstream.recipients() == ["hal@example.org"]


def test_erased_address_is_refused_at_rcpt_even_with_new_consent(
        heed: HeedThread, upstream: Upstream) -> None:
    grant(heed, "ida@example.org")
    assert send(heed, "ida@example.org")[0] == 250
    assert upstream.recipients() == ["ida@example.org"]
    assert heed.heed is not None and heed.settings.http.listen is not None
    host, port = heed.settings.http.listen
    token = heed.heed.tokens.make("ida@example.org", "marketing", purpose=PREFERENCES)
    url = f"http://{host}:{port}/p/{token}"
    page = press(heed, "ida@example.org", "erase")
    assert 'value="erase-confirm"' in page
    nonce = re.search(r'name="nonce" value="([^"]+)"', page)
    assert nonce
    body = urllib.parse.urlencode({"nonce": nonce.group(1), "action": "erase-confirm"}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as r:
        assert "Your data has been erased" in r.read().decode()
    grant(heed, "Ida@Example.org")  # a stale import writes the consent back
    code, reply = send(heed, "ida@example.org")
    assert code == 550 and "5.7.1" in reply
    assert len(upstream.received) == 1  # nothing more went out
    with pytest.raises(urllib.error.HTTPError) as bad:  # and the old unsubscribe link
        urllib.request.urlopen(f"http://{host}:{port}/p/{token}x", timeout=10)
    assert bad.value.code == 400
    bad.value.close()
