"""Delivery status notifications for held mail given up: real SMTP in, real upstream out."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from proxy.dsn import DSN_STREAM, build, status_of
from proxy.queue import HeldMail
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings, policy_dir
from tests.test_smtp_mailpath import NOON, POLICY, grant, message

LATE = NOON + 10 * 3600  # 22:00 UTC: quiet hours hold marketing until 08:00
MORNING = NOON + 20 * 3600 + 60


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return policy_dir(tmp_path, POLICY)


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, policies: Path) -> Iterator[HeedThread]:
    clock = ManualClock(LATE)
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies,
                             queue={"max_hold": "1d"})
    h = HeedThread(settings, clock).start()
    yield h
    h.stop()


def hold(h: HeedThread, sender: str, rcpt: str) -> None:
    """Send at 22:00 so quiet hours hold the copy."""
    with h.smtp() as c:
        c.sendmail(sender, [rcpt], message("offers@news.example.com", rcpt,
                                           extra="X-Campaign-Id: autumn\r\n"))
    assert h.heed is not None and h.call(h.heed.queue.depth()) == 1


def bounces(upstream: Upstream) -> list:
    return [m for m in upstream.received if m.sender in ("", "<>")]


def test_permanent_refusal_at_release_sends_exactly_one_dsn(heed: HeedThread,
                                                            upstream: Upstream) -> None:
    grant(heed, "alice@example.org")
    hold(heed, "offers@news.example.com", "alice@example.org")
    upstream.handler.rcpt_reply["alice@example.org"] = "550 5.1.1 mailbox unknown"
    assert isinstance(heed.clock, ManualClock)
    heed.clock.set(MORNING)
    assert heed.release_due() == 1  # refused for good: the copy ends, a notice is queued
    assert heed.release_due() == 1  # the notice goes out
    for _ in range(3):
        heed.clock.advance(3600)
        assert heed.release_due() == 0
    assert heed.heed is not None and heed.call(heed.heed.queue.depth()) == 0

    [dsn] = bounces(upstream)
    assert dsn.recipients == ["offers@news.example.com"]
    assert len(upstream.received) == 1  # nothing reached alice
    msg = dsn.message
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    human, status, headers = msg.get_payload()
    assert human.get_content_type() == "text/plain"
    assert "alice@example.org" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, per_recipient = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; heed.test"
    assert per_recipient["Final-Recipient"] == "rfc822; alice@example.org"
    assert per_recipient["Action"] == "failed"
    assert per_recipient["Status"] == "5.1.1"
    assert per_recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 mailbox unknown"
    assert headers.get_content_type() == "text/rfc822-headers"
    assert b"Subject: Autumn sale" in dsn.data and b"Hello!" not in dsn.data


def test_null_sender_gets_no_dsn(heed: HeedThread, upstream: Upstream) -> None:
    grant(heed, "alice@example.org")
    hold(heed, "", "alice@example.org")
    upstream.handler.rcpt_reply["alice@example.org"] = "550 5.1.1 mailbox unknown"
    assert isinstance(heed.clock, ManualClock)
    heed.clock.set(MORNING)
    assert heed.release_due() == 1
    heed.clock.advance(60)
    assert heed.release_due() == 0
    assert upstream.received == []
    assert heed.heed is not None and heed.call(heed.heed.queue.depth()) == 0


def test_expiry_sends_one_dsn_with_delivery_time_expired(heed: HeedThread,
                                                        upstream: Upstream) -> None:
    grant(heed, "bob@example.org")
    hold(heed, "offers@news.example.com", "bob@example.org")
    upstream.handler.rcpt_reply["bob@example.org"] = "451 4.2.1 try later"
    assert isinstance(heed.clock, ManualClock)
    heed.clock.set(MORNING)
    rounds = 0
    while not bounces(upstream) and rounds < 20:
        heed.release_due()
        heed.clock.advance(4 * 3600)
        rounds += 1
    [dsn] = bounces(upstream)
    _, status, _ = dsn.message.get_payload()
    per_recipient = status.get_payload()[1]
    assert per_recipient["Status"] == "5.4.7"
    assert "451 4.2.1 try later" in per_recipient["Diagnostic-Code"]
    heed.clock.advance(86400)
    assert heed.release_due() == 0
    assert len(bounces(upstream)) == 1


def test_giving_up_twice_queues_one_notice(heed: HeedThread, upstream: Upstream) -> None:
    """A crash between the hook and the end of the copy must not make a second notice."""
    grant(heed, "carol@example.org")
    hold(heed, "offers@news.example.com", "carol@example.org")
    h = heed.heed
    assert h is not None
    [item] = heed.call(h.queue.items_for("carol@example.org"))
    assert heed.call(h.bounces.give_up(item, "550 5.1.1 gone", expired=False)) is True
    assert heed.call(h.bounces.give_up(item, "550 5.1.1 gone", expired=False)) is False
    assert heed.call(h.queue.depth()) == 1
    [notice] = heed.call(h.queue.items_for("offers@news.example.com"))
    assert notice.stream == DSN_STREAM and notice.sender == ""


def test_a_notice_refused_for_good_is_not_bounced(heed: HeedThread, upstream: Upstream) -> None:
    grant(heed, "dan@example.org")
    hold(heed, "offers@news.example.com", "dan@example.org")
    upstream.handler.rcpt_reply["dan@example.org"] = "550 5.1.1 gone"
    upstream.handler.rcpt_reply["offers@news.example.com"] = "550 5.1.1 no such sender"
    assert isinstance(heed.clock, ManualClock)
    heed.clock.set(MORNING)
    assert heed.release_due() == 1
    assert heed.release_due() == 1
    heed.clock.advance(3600)
    assert heed.release_due() == 0
    assert upstream.received == []
    assert heed.heed is not None and heed.call(heed.heed.queue.depth()) == 0


def test_status_and_utf8_recipient() -> None:
    assert status_of("550 5.7.1 spam", expired=False) == "5.7.1"
    assert status_of("554 rejected", expired=False) == "5.0.0"
    assert status_of("451 4.4.1 later", expired=True) == "5.4.7"
    item = HeldMail(id="x", sender="s@example.com", recipient="jürgen@example.org",
                    stream="marketing", data=b"Subject: a\r\n\r\nbody\r\n", due=0.0,
                    first_queued=0.0)
    raw = build(item, "550 5.1.1 \x00bad\r\nInjected: yes", reporting_mta="heed.test",
                now=0.0, expired=False, dsn_id="1")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    per_recipient = msg.get_payload()[1].get_payload()[1]
    assert per_recipient["Final-Recipient"] == "utf-8; jürgen@example.org"
    assert per_recipient["Injected"] is None  # the diagnostic cannot add fields
    assert b"body" not in raw
