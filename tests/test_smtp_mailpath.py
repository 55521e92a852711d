"""The mail path end to end: smtplib as the tool, heed, a real aiosmtpd upstream, real Redis."""

from __future__ import annotations

import base64
import contextlib
import re
import smtplib
import socket
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.settings import DkimKey
from tests.conftest import Upstream
from tests.harness import TRANSACTIONAL, HeedThread, make_settings, marketing_policy, policy_dir

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

POLICY = marketing_policy(stream="""\
    kind: marketing
    drop: reject
    silence:
      lapsing: {sends: 3}
      inactive: {sends: 5}
""", rules="""\
      - {if: lifecycle, stage: inactive, then: discard}
      - {if: cap, stage: lapsing, per_week: 1, then: delay}
      - {if: cap, per_day: 2, then: delay}
      - {if: quiet_hours, start: "21:00", end: "08:00", zone: UTC, then: delay}
""", after=TRANSACTIONAL + """\
  - headers: {X-Campaign-Id: "*"}
    stream: marketing
""")

NOON = 1_800_000_000.0 - (1_800_000_000 % 86400) + 12 * 3600  # 12:00 UTC


def message(sender: str, to: str, *, extra: str = "") -> str:
    return (f"From: Shop <{sender}>\r\nTo: {to}\r\nSubject: Autumn sale\r\n"
            f"Date: Fri, 15 Jan 2027 12:00:00 +0000\r\nMessage-ID: <m1@shop.example.com>\r\n"
            f"{extra}\r\nHello!\r\n")


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return policy_dir(tmp_path, POLICY)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOON)


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, policies: Path,
         clock: ManualClock) -> Iterator[HeedThread]:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies)
    h = HeedThread(settings, clock).start()
    yield h
    h.stop()


def grant(h: HeedThread, *addresses: str, list_name: str = "marketing") -> None:
    assert h.heed is not None
    for a in addresses:
        h.call(h.heed.state.grant(a, list_name, source="test", ip="192.0.2.1", text="v1"))


def send(h: HeedThread, sender: str, rcpts: list[str], extra: str = "") -> tuple[dict, str]:
    """Send like a tool: returns (refused recipients, DATA reply)."""
    with h.smtp() as c:
        c.mail(sender)
        refused = {}
        for r in rcpts:
            code, msg = c.rcpt(r)
            if code != 250:
                refused[r] = (code, msg.decode())
        if len(refused) == len(rcpts):
            return refused, ""
        code, msg = c.data(message(sender, ", ".join(rcpts), extra=extra))
        return refused, f"{code} {msg.decode()}"


def test_consent_refusal_and_no_record(heed: HeedThread, upstream: Upstream) -> None:
    grant(heed, "alice@example.org", "bob@example.org")
    assert heed.heed is not None
    heed.call(heed.heed.state.refuse("bob@example.org", "unsubscribe", channel="test"))
    refused, reply = send(heed, "offers@news.example.com",
                          ["alice@example.org", "bob@example.org", "carol@example.org"])
    assert reply.startswith("250")
    # Decidable from the envelope: refused at RCPT with 550 5.7.1.
    assert refused["bob@example.org"][0] == 550 and "5.7.1" in refused["bob@example.org"][1]
    assert "refused" in refused["bob@example.org"][1]
    carol = refused["carol@example.org"]
    assert carol[0] == 550 and "no_consent" in carol[1]
    assert upstream.recipients() == ["alice@example.org"]
    msg = upstream.received[0].message
    assert msg["List-Unsubscribe"].startswith("<https://heed.test/u/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_decided_at_data_drops_without_consent(heed: HeedThread, upstream: Upstream) -> None:
    grant(heed, "alice@example.org")
    # Sender matches no envelope rule: the stream comes from a header at DATA.
    refused, reply = send(heed, "news@example.com", ["alice@example.org", "carol@example.org"],
                          extra="X-Campaign-Id: 42\r\n")
    assert refused == {} and reply.startswith("250")
    assert upstream.recipients() == ["alice@example.org"]
    assert heed.heed is not None
    entries = heed.call(heed.heed.audit.recent("carol@example.org"))
    assert entries and entries[0].reasons[0].startswith("no_consent")


def test_every_recipient_dropped_at_data_is_550(heed: HeedThread, upstream: Upstream) -> None:
    refused, reply = send(heed, "news@example.com", ["carol@example.org"],
                          extra="X-Campaign-Id: 42\r\n")
    assert reply.startswith("550 5.7.1")
    assert upstream.received == []


def test_transactional_needs_no_consent(heed: HeedThread, upstream: Upstream) -> None:
    refused, reply = send(heed, "receipts@shop.example.com", ["carol@example.org"])
    assert refused == {} and reply.startswith("250")
    assert upstream.recipients() == ["carol@example.org"]
    assert upstream.received[0].message["List-Unsubscribe"] is None


def test_silence_moves_to_lapsing_then_inactive(heed: HeedThread, upstream: Upstream,
                                                clock: ManualClock) -> None:
    grant(heed, "dora@example.org")
    for _ in range(3):  # active: delivered, one a day
        assert send(heed, "offers@news.example.com", ["dora@example.org"])[1].startswith("250")
        clock.advance(86400)
    assert len(upstream.received) == 3
    # 3 sends without engagement: lapsing, paced to one a week -> held.
    assert send(heed, "offers@news.example.com", ["dora@example.org"])[1].startswith("250")
    assert len(upstream.received) == 3
    assert heed.heed is not None
    assert heed.call(heed.heed.queue.depth()) == 1
    explained = heed.call(heed.heed.mailpath.state.snapshot("dora@example.org"))
    assert explained.sends_since_engagement == 3
    # A week later the held copy goes out (sends: 4), then two more sends -> inactive.
    clock.advance(7 * 86400)
    assert heed.release_due() == 1
    assert len(upstream.received) == 4
    clock.advance(7 * 86400)
    assert send(heed, "offers@news.example.com", ["dora@example.org"])[1].startswith("250")
    assert len(upstream.received) == 5
    clock.advance(7 * 86400)
    # 5 sends without engagement: inactive -> discarded (accepted, recorded, not sent).
    assert send(heed, "offers@news.example.com", ["dora@example.org"])[1].startswith("250")
    assert len(upstream.received) == 5
    # Engagement makes her active again.
    heed.call(heed.heed.state.engage("dora@example.org", kind="click"))
    assert send(heed, "offers@news.example.com", ["dora@example.org"])[1].startswith("250")
    assert len(upstream.received) == 6


def test_quiet_hours_delay_then_release(heed: HeedThread, upstream: Upstream,
                                        clock: ManualClock) -> None:
    grant(heed, "erin@example.org")
    clock.set(NOON + 10 * 3600)  # 22:00 UTC
    assert send(heed, "offers@news.example.com", ["erin@example.org"])[1].startswith("250")
    assert upstream.received == []
    assert heed.release_due() == 0  # not due before 08:00
    clock.set(NOON + 20 * 3600 + 60)  # 08:01 next day
    assert heed.release_due() == 1
    assert upstream.recipients() == ["erin@example.org"]
    assert upstream.received[0].message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_cap_delays_then_delivers(heed: HeedThread, upstream: Upstream,
                                  clock: ManualClock) -> None:
    grant(heed, "fay@example.org")
    for _ in range(3):
        assert send(heed, "offers@news.example.com", ["fay@example.org"])[1].startswith("250")
        clock.advance(60)
    assert len(upstream.received) == 2  # per_day: 2 -> the third is held
    clock.advance(86400)
    assert heed.release_due() == 1
    assert len(upstream.received) == 3


def test_refusal_while_held_wins_at_release(heed: HeedThread, upstream: Upstream,
                                            clock: ManualClock) -> None:
    grant(heed, "gus@example.org")
    clock.set(NOON + 10 * 3600)
    assert send(heed, "offers@news.example.com", ["gus@example.org"])[1].startswith("250")
    assert heed.heed is not None
    heed.call(heed.heed.state.refuse("gus@example.org", "unsubscribe", channel="test"))
    clock.set(NOON + 20 * 3600 + 60)
    assert heed.release_due() == 1
    assert upstream.received == []
    assert heed.call(heed.heed.queue.depth()) == 0


def test_upstream_down_is_451(redis_url: str, policies: Path, clock: ManualClock) -> None:
    settings = make_settings(redis_url=redis_url, upstream_port=free_port(), policies=policies)
    h = HeedThread(settings, clock).start()
    try:
        grant(h, "alice@example.org")
        refused, reply = send(h, "offers@news.example.com", ["alice@example.org"])
        assert reply.startswith("451 4.4.1")
        assert h.heed is not None and h.call(h.heed.queue.depth()) == 0  # nothing kept
    finally:
        h.stop()


def test_redis_down_is_451_and_nothing_delivered(upstream: Upstream, policies: Path,
                                                 clock: ManualClock) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                             upstream_port=upstream.port, policies=policies)
    h = HeedThread(settings, clock).start()
    try:
        with h.smtp() as c:
            c.mail("offers@news.example.com")
            code, msg = c.rcpt("alice@example.org")
            assert (code, msg.decode()[:5]) == (451, "4.3.0")
            assert b"127.0.0.1" not in msg and b"Error" not in msg
        # Decided at DATA: the same 451 after the data.
        with h.smtp() as c:
            c.mail("news@example.com")
            assert c.rcpt("alice@example.org")[0] == 250
            code, msg = c.data(message("news@example.com", "alice@example.org",
                                       extra="X-Campaign-Id: 1\r\n"))
            assert (code, msg.decode()[:5]) == (451, "4.3.0")
        assert upstream.received == []
    finally:
        h.stop()


def test_unauthorised_client_cannot_relay(redis_url: str, upstream: Upstream, policies: Path,
                                          clock: ManualClock) -> None:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policies, smtp={"client_networks": ["192.0.2.0/24"]})
    h = HeedThread(settings, clock).start()
    try:
        with h.smtp() as c:
            c.mail("offers@news.example.com")
            for rcpt in ("alice@example.org", "relaytest%example.org@[127.0.0.1]",
                         '"alice@example.org"', "alice@example.org@heed.test"):
                code, msg = c.rcpt(rcpt)
                assert 550 <= code < 560, (rcpt, code, msg)  # 554 5.7.1, or 553 malformed
            # AUTH is not offered before STARTTLS: no password in the clear.
            assert not c.has_extn("auth")
        assert upstream.received == []
    finally:
        h.stop()


def test_mailto_unsubscribe_from_anyone(redis_url: str, upstream: Upstream, policies: Path,
                                        clock: ManualClock) -> None:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policies, smtp={"client_networks": ["192.0.2.0/24"]})
    h = HeedThread(settings, clock).start()
    try:
        assert h.heed is not None
        token = h.heed.tokens.make("hana@example.org", "marketing")
        with h.smtp() as c:
            c.sendmail("hana@example.org", [f"unsubscribe+{token}@heed.test"],
                       "Subject: unsubscribe\r\n\r\n")
            forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
            c.mail("x@example.org")
            assert c.rcpt(f"unsubscribe+{forged}@heed.test")[0] == 554
        snap = h.call(h.heed.state.snapshot("hana@example.org"))
        assert snap.refusals["marketing"].channel == "mailto"
        assert upstream.received == []
    finally:
        h.stop()


@contextlib.contextmanager
def raw_session(heed: HeedThread) -> Iterator[Callable[[bytes], bytes]]:
    """A socket session past the greeting: ``cmd(bytes)`` sends them and reads one reply."""
    with socket.create_connection(("127.0.0.1", heed.port), timeout=10) as s:
        f = s.makefile("rb")

        def cmd(line: bytes) -> bytes:
            s.sendall(line)
            reply = f.readline()
            while reply[3:4] == b"-":
                reply = f.readline()
            return reply

        f.readline()  # greeting
        yield cmd


def test_bad_arguments_and_smuggling(heed: HeedThread, upstream: Upstream) -> None:
    grant(heed, "alice@example.org")
    with raw_session(heed) as cmd:
        assert cmd(b"EHLO tool.test\r\n").startswith(b"250")
        assert cmd(b"MAIL FROM:<a\rb@news.example.com>\r\n").startswith(b"501")
        assert cmd(b"MAIL FROM:<offers@news.example.com>\r\n").startswith(b"250")
        assert cmd(b"RCPT TO:<alice@example.org\x00>\r\n").startswith(b"501")
        assert cmd(b"RCPT TO:<alice@example.org>\r\n").startswith(b"250")
        assert cmd(b"DATA\r\n").startswith(b"354")
        smuggled = (b"From: offers@news.example.com\r\nSubject: hi\r\n\r\nbody\n.\n"
                    b"MAIL FROM:<evil@news.example.com>\nRCPT TO:<carol@example.org>\nDATA\n"
                    b"Subject: smuggled\n\nevil\n.\n")
        assert cmd(smuggled + b"\r\n.\r\n").startswith(b"250")
        cmd(b"QUIT\r\n")
    assert upstream.recipients() == ["alice@example.org"]  # one transaction, no carol
    assert len(upstream.received) == 1
    data = upstream.received[0].data
    # Every line ending is CRLF now; the smuggled "." line reached the upstream as
    # text (dot-stuffed on the wire, RFC 5321 §4.5.2), inside the one message.
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert b"\r\n.\r\nMAIL FROM:<evil@news.example.com>\r\n" in data


def test_cr_lf_or_nul_inside_a_command_line_refuses_the_whole_line(
        heed: HeedThread, upstream: Upstream) -> None:
    """RFC 5321 §2.3.8: only CRLF ends a command line; a bare LF must not make two commands."""
    grant(heed, "alice@example.org", "bob@example.org")
    with raw_session(heed) as cmd:
        assert cmd(b"EHLO tool.test\r\n").startswith(b"250")
        assert cmd(b"MAIL FROM:<offers@news.example.com>\r\n").startswith(b"250")
        for line in (b"RCPT TO:<alice@example.org>\nRCPT TO:<bob@example.org>\r\n",
                     b"RCPT TO:<alice@example.org>\rRCPT TO:<bob@example.org>\r\n",
                     b"NOOP\nRCPT TO:<bob@example.org>\r\n", b"RSET\x00\r\n"):
            assert cmd(line).startswith(b"501 5.5.4"), line  # one reply for the whole line
        # The envelope is as it was: no recipient yet, and the session goes on.
        assert cmd(b"DATA\r\n").startswith(b"503")
        assert cmd(b"RCPT TO:<alice@example.org\r\n").startswith(b"501")
        assert cmd(b"RCPT TO:<alice@example.org>\r\n").startswith(b"250")
        assert cmd(b"DATA\r\n").startswith(b"354")
        assert cmd(b"Subject: hi\r\n\r\nbody\r\n.\r\n").startswith(b"250")
        cmd(b"QUIT\r\n")
    assert upstream.recipients() == ["alice@example.org"]


def test_mail_from_without_closing_bracket_is_501(heed: HeedThread) -> None:
    with heed.smtp() as c:
        assert c.docmd("MAIL FROM:<a@b.example")[0] == 501
        assert c.docmd("MAIL FROM:<a@b.example>")[0] == 250


def test_limits(redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock) -> None:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies,
                             smtp={"max_message_size": 10_000, "max_recipients": 100})
    h = HeedThread(settings, clock).start()
    try:
        grant(h, *(f"p{i}@example.org" for i in range(101)))
        with h.smtp() as c:
            assert c.has_extn("size") and c.esmtp_features["size"] == "10000"
            c.mail("offers@news.example.com")
            codes = [c.rcpt(f"p{i}@example.org")[0] for i in range(101)]
            assert codes[:100] == [250] * 100 and codes[100] == 452
            c.rset()
            c.mail("offers@news.example.com")
            c.rcpt("p1@example.org")
            code, _ = c.data("Subject: big\r\n\r\n" + "x" * 10_001 + "\r\n")
            assert code == 552
        assert upstream.received == []
    finally:
        h.stop()


def test_internal_error_is_generic_451(redis_url: str, upstream: Upstream, policies: Path,
                                       clock: ManualClock) -> None:
    class Broken:
        def prepare(self, message):  # noqa: ANN001, ANN202
            raise RuntimeError("secret internal detail at 10.1.2.3:6379")

    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies)
    h = HeedThread(settings, clock, finisher=Broken()).start()
    try:
        grant(h, "alice@example.org")
        with h.smtp() as c:
            c.mail("offers@news.example.com")
            c.rcpt("alice@example.org")
            code, msg = c.data(message("offers@news.example.com", "alice@example.org"))
        assert code == 451 and msg.startswith(b"4.3.0")
        assert b"secret" not in msg and b"RuntimeError" not in msg
    finally:
        h.stop()


def test_smtplib_error_type_on_refusal(heed: HeedThread) -> None:
    with heed.smtp() as c, pytest.raises(smtplib.SMTPRecipientsRefused):
        c.sendmail("offers@news.example.com", ["nobody@example.org"], "Subject: x\r\n\r\nx\r\n")


def test_each_copy_signed_with_its_own_token(redis_url: str, upstream: Upstream,
                                             policies: Path, clock: ManualClock,
                                             tmp_path: Path) -> None:
    import time

    import dkim

    from proxy.dkim import generate_key

    # dkimpy checks t= against the real time (no more than 10 h ahead): sign at the last
    # noon UTC that has passed, outside the policy's quiet hours whatever the hour now.
    noon = time.time() - time.time() % 86400 + 12 * 3600
    clock.set(noon if noon <= time.time() else noon - 86400)
    key_file, record = generate_key("news.example.com", "s1", tmp_path / "keys")
    txt = "".join(p.strip('"') for p in record.split(" IN TXT ", 1)[1].split('" "'))
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies)
    settings = replace(settings, dkim=(DkimKey("news.example.com", "s1", key_file),))
    h = HeedThread(settings, clock).start()
    try:
        grant(h, "alice@example.org", "bob@example.org")
        with h.smtp() as c:
            c.sendmail("offers@news.example.com", ["alice@example.org", "bob@example.org"],
                       message("offers@news.example.com", "list@news.example.com"))
    finally:
        h.stop()
    assert sorted(upstream.recipients()) == ["alice@example.org", "bob@example.org"]
    links = set()
    for copy in upstream.received:
        assert len(copy.recipients) == 1  # split at DATA: one copy, one token
        verified = dkim.DKIM(copy.data).verify(
            dnsfunc=lambda name, timeout=5: txt.encode()
            if name.decode().rstrip(".") == "s1._domainkey.news.example.com" else None)
        assert verified
        sig = copy.message["DKIM-Signature"].replace(" ", "").replace("\t", "")
        h_tag = next(p for p in sig.split(";") if p.startswith("h="))[2:].lower().split(":")
        assert h_tag.count("list-unsubscribe") == 2 and h_tag.count("list-unsubscribe-post") == 2
        links.add(copy.message["List-Unsubscribe"])
    assert len(links) == 2


def test_upstream_4xx_with_queue_mode_holds_then_delivers(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock) -> None:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies,
                             upstream={"on_failure": "queue"})
    h = HeedThread(settings, clock).start()
    try:
        grant(h, "alice@example.org")
        upstream.handler.reply = "451 4.3.0 busy"
        assert send(h, "offers@news.example.com", ["alice@example.org"])[1].startswith("250")
        assert h.heed is not None and h.call(h.heed.queue.depth()) == 1
        clock.advance(61)
        assert h.release_due() == 1  # still failing: retried later with backoff
        assert h.call(h.heed.queue.depth()) == 1 and upstream.received == []
        upstream.handler.reply = None  # the upstream is back
        clock.advance(301)
        assert h.release_due() == 1
        assert upstream.recipients() == ["alice@example.org"]
        assert h.call(h.heed.queue.depth()) == 0
    finally:
        h.stop()


def test_upstream_5xx_is_passed_on(heed: HeedThread, upstream: Upstream) -> None:
    grant(heed, "alice@example.org")
    upstream.handler.reply = "554 5.7.1 policy rejection"
    _, reply = send(heed, "offers@news.example.com", ["alice@example.org"])
    assert reply.startswith("554") and "policy rejection" in reply


def test_paused_redis_answers_451_quickly_enough(upstream: Upstream, policies: Path,
                                                 clock: ManualClock, tmp_path: Path) -> None:
    import os
    import signal

    from proxy.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(tmp_path / "r", durable=False)
    url = server.start()
    settings = make_settings(redis_url=url, upstream_port=upstream.port, policies=policies)
    h = HeedThread(settings, clock).start()
    try:
        grant(h, "alice@example.org")
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            with h.smtp() as c:
                c.mail("offers@news.example.com")
                code, msg = c.rcpt("alice@example.org")
            assert (code, msg[:5]) == (451, b"4.3.0")
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert upstream.received == []
    finally:
        h.stop()
        server.stop()


def test_utf8_addresses_and_8bit_body_pass_untouched(heed: HeedThread,
                                                     upstream: Upstream) -> None:
    body = "From: Bäckerei <angebote@news.example.com>\r\nTo: jürgen@example.org\r\n" \
           "Subject: Brötchen\r\n\r\nGrüße aus der Bäckerei\r\n"
    with heed.smtp() as c:
        c.sendmail("receipts@shop.example.com", ["jürgen@example.org"], body.encode(),
                   mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert "jürgen@example.org" in upstream.recipients()
    assert "Grüße aus der Bäckerei".encode() in upstream.received[-1].data


def test_no_link_in_the_mail_carries_the_address_in_a_decodable_form(
        heed: HeedThread, upstream: Upstream) -> None:
    """Every heed token of a delivered copy (https, mailto) decodes to neither the address
    nor the list, and still names both to heed itself."""
    grant(heed, "someone.long@example.org")
    assert send(heed, "offers@news.example.com", ["someone.long@example.org"])[1][:3] == "250"
    header = str(upstream.received[0].message["List-Unsubscribe"])
    https = re.search(r"<https://heed\.test/u/([A-Za-z0-9_-]+)>", header)
    mailto = re.search(r"<mailto:unsubscribe\+([A-Za-z0-9_-]+)@", header)
    assert https and mailto
    assert heed.heed is not None
    for token in (https.group(1), mailto.group(1)):
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        for secret in (b"someone.long", b"example.org", b"marketing"):
            assert secret not in raw and secret.decode() not in token
        claims = heed.heed.tokens.verify(token)
        assert (claims.address, claims.list) == ("someone.long@example.org", "marketing")
