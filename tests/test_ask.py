"""The re-permission message asks: the block in the person's language, /r/ yes, /u/ no, report."""

from __future__ import annotations

import http.client
import re
import smtplib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.report.compute import build_report
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings, marketing_policy, policy_dir

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

POLICY = marketing_policy(stream="""\
    silence:
      inactive: {sends: 2}
    repermission_text:
      en: "We have not heard from you. Still want our offers?"
""", rules="""\
      - {if: lifecycle, stage: inactive, repermission: true, then: discard}
""")
SENDER = "offers@news.example.com"
ASK = {"vi": "Bạn có còn muốn nhận không?",
       "en": "We have not heard from you. Still want our offers?"}


def message(to: str, n: int, lang: str) -> str:
    return (f"From: Shop <{SENDER}>\r\nTo: {to}\r\nSubject: Offer {n}\r\n"
            f"Message-ID: <o{n}-{to}@news.example.com>\r\nMIME-Version: 1.0\r\n"
            f"Content-Language: {lang}\r\n"
            "Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            "Ưu đãi https://shop.example/\r\n--b\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n"
            "<html><body><p>Ưu đãi</p></body></html>\r\n--b--\r\n")


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, tmp_path: Path,
         clock: ManualClock) -> Iterator[HeedThread]:
    port = free_port()
    settings = make_settings(
        redis_url=redis_url, upstream_port=upstream.port, policies=policy_dir(tmp_path, POLICY),
        http={"listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}"})
    h = HeedThread(settings, clock).start()
    yield h
    h.stop()


def send(h: HeedThread, upstream: Upstream, to: str, n: int, lang: str = "vi") -> str | None:
    before = len(upstream.received)
    with h.smtp() as c:
        c.sendmail(SENDER, [to], message(to, n, lang).encode())
    h.settle()
    got = upstream.received[before:]
    if not got:
        return None
    return "\n".join(str(p.get_content()) for p in got[0].message.walk()
                     if p.get_content_maintype() == "text")


def request(h: HeedThread, method: str, url: str, body: str = "") -> tuple[int, str]:
    listen = h.settings.http.listen
    assert listen is not None
    conn = http.client.HTTPConnection(*listen, timeout=10)
    conn.request(method, urlsplit(url).path, body=body or None,
                 headers={"Content-Type": "application/x-www-form-urlencoded"} if body else {})
    resp = conn.getresponse()
    text = resp.read().decode()
    conn.close()
    h.settle()
    return resp.status, text


def test_the_one_message_asks_and_the_answers_are_heard(heed: HeedThread, upstream: Upstream,
                                                        clock: ManualClock) -> None:
    h = heed.heed
    assert h is not None
    people = {"yes@example.org": "vi", "no@example.org": "en", "quiet@example.org": "en"}
    asks: dict[str, str] = {}
    for who, lang in people.items():
        heed.call(h.state.grant(who, "marketing"))
        for n in (1, 2):
            text = send(heed, upstream, who, n, lang)
            assert text is not None and ASK[lang] not in text
            clock.advance(60)
        asked = send(heed, upstream, who, 3, lang)
        assert asked is not None and asked.count(ASK[lang]) == 2  # text and HTML parts
        asks[who] = asked
        assert send(heed, upstream, who, 4, lang) is None  # only one re-ask
    yes = re.search(r"http://[^\s\"]+/r/[A-Za-z0-9_-]+", asks["yes@example.org"])
    no = re.search(r"http://[^\s\"]+/u/[A-Za-z0-9_-]+", asks["no@example.org"])
    assert yes and no
    # GET changes nothing (link scanners fetch every link).
    status, page = request(heed, "GET", yes.group())
    assert status == 200 and page.count("<button") == 1 and "Yes, keep sending" in page
    assert request(heed, "GET", no.group())[0] == 200
    snap = heed.call(h.state.snapshot("yes@example.org"))
    assert "repermission-yes" not in snap.engagement
    assert send(heed, upstream, "yes@example.org", 5) is None
    # The button's POST: active again, and mail flows.
    clock.advance(3600)
    status, page = request(heed, "POST", yes.group())
    assert status == 200 and "keep writing" in page
    assert send(heed, upstream, "yes@example.org", 6) is not None
    # "No, stop" is the one-click unsubscribe.
    assert request(heed, "POST", no.group(), "List-Unsubscribe=One-Click")[0] == 200
    with pytest.raises(smtplib.SMTPRecipientsRefused):  # 550 at RCPT: the tool cleans its list
        send(heed, upstream, "no@example.org", 7)
    # since=0: stream ids carry the real clock, entries the test clock (2027).
    report = heed.call(build_report(h.state, h.policies.current, since=0,
                                    now=clock.now(), lookback=86400))
    assert dict(report.asked["marketing"]) == {"asked": 3, "yes": 1, "no": 1, "no answer": 1}
    assert report.heard["re-permission yes"] == 1


def test_bad_token_on_the_yes_page(heed: HeedThread) -> None:
    listen = heed.settings.http.listen
    assert listen is not None
    assert request(heed, "GET", "/r/AAAA")[0] == 400
    assert request(heed, "POST", "/r/AAAA")[0] == 400
