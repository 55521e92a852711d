"""postmaster@ heed's own domains is accepted from anyone (RFC 5321 §4.5.1) and relayed; the
greeting says ESMTP (RFC 5321 §4.3.1)."""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from tests import test_smtp_mailpath as mailpath
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings

policies = mailpath.policies
clock = mailpath.clock
OPS = "ops@example.net"
NOTE = b"Subject: your mail bounced\r\nMessage-ID: <n1@example.com>\r\n\r\nhello\r\n"


def start(redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock,
          forward_to: str | None) -> HeedThread:
    # Loopback may not relay: the test client is a stranger, as a remote MTA would be.
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies,
                             smtp={"client_networks": ["192.0.2.0/24"], "postmaster": forward_to})
    return HeedThread(settings, clock).start()


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, policies: Path,
         clock: ManualClock) -> Iterator[HeedThread]:
    h = start(redis_url, upstream, policies, clock, OPS)
    yield h
    h.stop()


def test_greeting_says_esmtp(heed: HeedThread) -> None:
    s = smtplib.SMTP()
    code, greeting = s.connect("127.0.0.1", heed.settings.smtp.listen[1])
    s.close()
    assert code == 220 and greeting.split()[:2] == [b"heed.test", b"ESMTP"], greeting


@pytest.mark.parametrize("rcpt", ["postmaster@heed.test", "PostMaster@HEED.test", "postmaster"])
def test_postmaster_is_accepted_without_auth_and_relayed(heed: HeedThread, upstream: Upstream,
                                                         rcpt: str) -> None:
    with heed.smtp() as c:
        c.ehlo("mx.example.com")
        assert c.mail("someone@example.com")[0] == 250
        assert c.rcpt(rcpt)[0] == 250
        assert c.data(NOTE)[0] == 250
    [copy] = upstream.received
    assert (copy.sender, copy.recipients) == ("someone@example.com", [OPS])
    assert copy.data.endswith(b"hello\r\n")


def test_postmaster_elsewhere_is_still_no_relay(heed: HeedThread, upstream: Upstream) -> None:
    with heed.smtp() as c:
        c.ehlo("mx.example.com")
        c.mail("someone@example.com")
        assert c.rcpt("postmaster@example.org")[0] == 554
    assert upstream.received == []


def test_without_an_address_postmaster_mail_is_accepted_logged_and_kept(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock,
        caplog: pytest.LogCaptureFixture) -> None:
    h = start(redis_url, upstream, policies, clock, None)
    try:
        with caplog.at_level(logging.WARNING, logger="heed.inbound"), h.smtp() as c:
            c.ehlo("mx.example.com")
            c.mail("someone@example.com")
            assert c.rcpt("postmaster@heed.test")[0] == 250
            assert c.data(NOTE)[0] == 250
        # A 250 means kept (SPEC 5): the mail itself waits in `heed bounces unread`.
        assert h.heed is not None
        [kept] = h.call(h.heed.reports.unread.since(0))
    finally:
        h.stop()
    assert upstream.received == []
    [record] = [r for r in caplog.records if "postmaster" in r.getMessage()]
    assert record.subject == "your mail bounced" and record.sender == "someone@example.com"
    assert kept.data.endswith(b"hello\r\n") and kept.subject == "your mail bounced"
    assert "smtp.postmaster" in kept.why


def test_a_refused_relay_is_451_so_the_sender_keeps_it(
        heed: HeedThread, upstream: Upstream) -> None:
    upstream.handler.rcpt_reply[OPS] = "550 5.1.1 no such user"
    with heed.smtp() as c:
        c.ehlo("mx.example.com")
        c.mail("someone@example.com")
        assert c.rcpt("postmaster@heed.test")[0] == 250
        code, _ = c.data(NOTE)
    assert code == 451
