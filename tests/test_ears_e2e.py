"""The issue's "done when": an unchanged tool (smtplib), heed with the shipped policy and a
capture sink, twelve weekly messages. A clicker stays active; a person whose mail only a
security gateway scans goes lapsing, then inactive, gets the one message that asks, then
nothing; a reply counts and an out-of-office does not. The clock is moved, never waited on."""

from __future__ import annotations

import dataclasses
import http.client
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from proxy.clock import ManualClock
from proxy.dkim import generate_key
from proxy.embedded_redis import free_port
from proxy.explain import explain
from proxy.settings import DkimKey
from proxy.signals.sources import sources
from tests.conftest import ROOT, Upstream
from tests.harness import HeedThread, make_settings

CLICKER, SCANNED, REPLIER, AWAY = ("cara@example.org", "sam@example.org", "rui@example.org",
                                   "ola@example.org")
PEOPLE = (CLICKER, SCANNED, REPLIER, AWAY)
# A week and ten minutes: the weekly caps see one mail a week, and 2027-01-15 08:00 UTC
# plus twelve of these stays in Berlin's daytime (quiet hours are 21:00-08:00).
WEEK = 7 * 86400 + 600
TRACKED = re.compile(r"http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_-]+")


def offer(n: int) -> bytes:
    return (f"From: Shop <offers@news.example.com>\r\nTo: customers@example.com\r\n"
            f"Subject: Offer {n}\r\nMessage-ID: <offer-{n}@news.example.com>\r\n"
            "Date: Fri, 15 Jan 2027 08:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
            f'<html><body><p>Offer {n}: <a href="https://shop.example/sale/{n}">the sale</a>'
            ' and <a href="https://shop.example/new">what is new</a></p></body></html>\r\n'
            ).encode()


class World:
    def __init__(self, heed: HeedThread, upstream: Upstream, clock: ManualClock) -> None:
        self.heed, self.upstream, self.clock = heed, upstream, clock

    def week(self, n: int) -> dict[str, str]:
        """The tool sends offer ``n`` to everyone; each person's delivered HTML, if any."""
        before = len(self.upstream.received)
        with self.heed.smtp() as c:
            c.sendmail("offers@news.example.com", list(PEOPLE), offer(n))
        self.heed.settle()
        out = {}
        for got in self.upstream.received[before:]:
            part = next(p for p in got.message.walk() if p.get_content_type() == "text/html")
            out[got.recipients[0]] = str(part.get_content())
        return out

    def get(self, url: str, method: str = "GET") -> int:
        listen = self.heed.settings.http.listen
        assert listen is not None
        conn = http.client.HTTPConnection(*listen, timeout=10)
        conn.request(method, urlsplit(url).path, headers={"User-Agent": "Mozilla/5.0"})
        status = conn.getresponse().status
        conn.close()
        self.heed.settle()
        return status

    def reply(self, who: str, n: int, auto: bool) -> None:
        head = (f"From: {who}\r\nTo: offers@news.example.com\r\nSubject: "
                f"{'Automatic reply: ' if auto else 'Re: '}Offer {n}\r\n"
                f"In-Reply-To: <offer-{n}@news.example.com>\r\n")
        if auto:
            head += "Auto-Submitted: auto-replied\r\n"
        with self.heed.smtp() as c:
            c.sendmail("" if auto else who, ["replies@heed.test"],
                       head + "\r\nThanks, interested!\r\n")
        self.heed.settle()

    def explain(self, who: str) -> str:
        h = self.heed.heed
        assert h is not None
        return self.heed.call(explain(h.state, h.audit, who, now=self.clock.now(),
                                      policy=h.policies.current,
                                      sources=lambda s: sources(self.heed.settings, s)))


@pytest.fixture
def world(redis_url: str, upstream: Upstream, tmp_path: Path,
          clock: ManualClock) -> Iterator[World]:
    port = free_port()
    # The shipped policy holds unsigned marketing: the tool's domain gets its DKIM key.
    key, _ = generate_key("news.example.com", "s1", tmp_path)
    settings = dataclasses.replace(make_settings(
        redis_url=redis_url, upstream_port=upstream.port, policies=ROOT / "policies",
        http={"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"},
        replies={"address": "replies"}), dkim=(DkimKey("news.example.com", "s1", key),))
    heed = HeedThread(settings, clock).start()
    for who in PEOPLE:
        assert heed.heed is not None
        heed.call(heed.heed.state.grant(who, "marketing"))
    yield World(heed, upstream, clock)
    heed.stop()


def test_heed_hears_with_an_unchanged_tool(world: World) -> None:
    for n in range(1, 13):
        got = world.week(n)
        if SCANNED in got:
            # The recipient's security gateway checks every link the moment it arrives.
            links = TRACKED.findall(got[SCANNED])
            assert world.get(links[1], "HEAD") == 302
            for url in links:
                world.get(url)
        if n == 6:  # the clicker opens the sixth offer an hour later and clicks once
            world.clock.advance(3600)
            assert world.get(TRACKED.findall(got[CLICKER])[1]) == 302
        if n == 2:
            world.reply(REPLIER, n, auto=False)
            world.reply(AWAY, n, auto=True)
        if n == 5:
            assert "marketing: lapsing: 5 sends since engagement, never engaged" in \
                world.explain(SCANNED)
        if n == 10:
            assert "marketing: inactive: 10 sends since engagement, never engaged" in \
                world.explain(SCANNED)
            # One click in ten messages: still active (lapsing takes 5 unanswered).
            assert re.search(r"marketing: (active|loyal): 4 sends since engagement, last "
                             r"engaged", world.explain(CLICKER))
        if n == 11:
            assert "Do you still want them?" in got[SCANNED]  # the one message that asks
        if n == 12:
            assert SCANNED not in got  # then nothing: silence was the answer
        assert CLICKER in got, n  # the clicker keeps getting every offer
        if n > 1:
            assert "Do you still want them?" not in got[CLICKER]
        world.clock.advance(WEEK)
    cara = world.explain(CLICKER)
    assert "heard through: tracked clicks, replies to replies@heed.test" in cara
    sam = world.explain(SCANNED)
    assert "machine-click via tracked link" in sam and "engaged: click via" not in sam
    assert "by kind (latest of each): machine-click" in sam
    assert "reply" in world.explain(REPLIER).split("by kind")[1].split("\n")[0]
    assert "by kind" not in world.explain(AWAY)
