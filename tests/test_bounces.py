"""DSN bounces and ARF complaints mailed to heed over real SMTP; VERP on delivered marketing."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.keys import Keys
from proxy.signals.bounce_reasons import classify, hard
from proxy.tokens import BOUNCE
from proxy.types import PersonState
from tests import test_smtp_mailpath as mailpath
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings
from tests.test_smtp_mailpath import grant, message

DATA = Path(__file__).parent / "data" / "reports"
# The mail-path tests' policy (marketing + transactional) and noon clock, as fixtures.
policies = mailpath.policies
clock = mailpath.clock
ANA = "ana@example.org"


def start(redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock,
          **sections: dict) -> HeedThread:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policies, **sections)
    return HeedThread(settings, clock).start()


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, policies: Path,
         clock: ManualClock) -> Iterator[HeedThread]:
    # Loopback may not relay here: reports reach heed's own addresses like any stranger's.
    h = start(redis_url, upstream, policies, clock, smtp={"client_networks": ["192.0.2.0/24"]},
              bounces={"verp_max_local": 200})
    yield h
    h.stop()


def sample(name: str, **subs: str) -> bytes:
    text = (DATA / name).read_text()
    for key, value in {"ADDRESS": ANA, "RCPT": "bounce@heed.test", **subs}.items():
        text = text.replace("{{" + key + "}}", value)
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def deliver(h: HeedThread, rcpt: str, data: bytes) -> tuple[int, bytes]:
    """A reporting MTA: null sender (RFC 3464 §2.1), one recipient of heed's."""
    with h.smtp() as c:
        code, _ = c.mail("<>")
        assert code == 250
        code, msg = c.rcpt(rcpt)
        if code != 250:
            return code, msg
        return c.data(data)


def person(h: HeedThread, address: str = ANA) -> PersonState:
    assert h.heed is not None
    return h.call(h.heed.state.snapshot(address))


def token(h: HeedThread, address: str = ANA, purpose: str = "u") -> str:
    assert h.heed is not None
    return h.heed.tokens.make(address, "marketing", purpose)


@pytest.mark.parametrize(("text", "status", "reason", "refuses"), [
    ("550 5.1.1 <ana@example.org>... User unknown", "5.1.1", "no-such-user", True),
    ("Host or domain name not found. Name service error for name=x type=A", "5.4.4",
     "no-such-domain", True),
    ("The email account that you tried to reach is disabled.", "5.2.1", "disabled", True),
    ("550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found", "5.1.10",
     "no-such-user", True),
    ("552 5.2.2 Over quota", "5.1.1", "mailbox-full", False),  # the words win over 5.1.1
    ("550 Ip frequency limited", "", "rate-limited", False),
    ("552 Too many recipients", "5.5.3", "rate-limited", False),
    ("554 Service currently unavailable", "5.0.0", "remote-fault", False),
    ("550 5.4.312 Message expired", "5.4.312", "expired", False),
    ("552 5.2.3 message too big", "5.2.3", "too-big", False),
    ("550 5.7.1 Unauthenticated email is not accepted: DMARC policy", "5.7.1", "policy", False),
    ("554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org", "5.7.1",
     "blocked", False),
    ("450 4.1.1 <ana@example.org>: Recipient address rejected: User unknown", "4.1.1",
     "no-such-user", False),  # a try-again, even for a reason of the recipient's
])
def test_reasons_and_which_refuse(text: str, status: str, reason: str, refuses: bool) -> None:
    found = classify(text, status)
    assert found.name == reason
    assert hard(found, status, text) is refuses


def test_verp_return_path_and_a_bounce_to_it_stops_the_next_message(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock,
        aredis_sync: redis_sync.Redis) -> None:
    h = start(redis_url, upstream, policies, clock)  # defaults: verp_max_local 64
    try:
        grant(h, ANA)
        with h.smtp() as c:
            c.sendmail("offers@news.example.com", [ANA], message("offers@news.example.com", ANA))
            c.sendmail("orders@shop.example.com", [ANA], message("orders@shop.example.com", ANA))
        marketing, transactional = upstream.received
        local, _, domain = marketing.sender.rpartition("@")
        assert domain == "heed.test" and local.startswith("bounce+")
        assert h.heed is not None
        verp = local[len("bounce+"):]
        assert verp == h.heed.tokens.verp(ANA, "marketing")  # deterministic
        # Written with the sends and audit after delivery, with a TTL (30 days).
        h.settle()
        stored = aredis_sync.get(Keys().verp(verp))
        assert stored == f"{ANA}\nmarketing\noffers@news.example.com".encode()
        assert 29 * 86400 < aredis_sync.ttl(Keys().verp(verp)) <= 30 * 86400
        assert transactional.sender == "orders@shop.example.com"  # not marketing: kept
        # A bounce that says little, but to the VERP address: it names Ana.
        code, _ = deliver(h, marketing.sender, sample("bounce-unhelpful.eml",
                                                      RCPT=marketing.sender))
        assert code == 250
        refusal = person(h).refusals["*"]
        assert (refusal.kind, refusal.channel) == ("bounce", "dsn")
        with h.smtp() as c:
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                c.sendmail("offers@news.example.com", [ANA],
                           message("offers@news.example.com", ANA))
        assert refused.value.recipients[ANA][0] == 550
        assert len(upstream.received) == 2
    finally:
        h.stop()


LONG = "a" * 60 + "@" + "mail." + "long-subdomain-" * 6 + "example.org"


def test_verp_fits_64_octets_for_a_long_address_and_names_it_over_a_forwarder(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock) -> None:
    h = start(redis_url, upstream, policies, clock)  # verp_max_local: 64 (RFC 5321)
    try:
        grant(h, LONG, ANA)
        with h.smtp() as c:
            c.sendmail("offers@news.example.com", [LONG, ANA],
                       message("offers@news.example.com", ANA))
        senders = {m.recipients[0]: m.sender for m in upstream.received}
        for r in (LONG, ANA):
            local, _, domain = senders[r].rpartition("@")
            assert local.startswith("bounce+") and domain == "heed.test"
            assert len(local.encode()) <= 64
        assert senders[LONG] != senders[ANA]
        # The DSN names only the forwarding address the copy ended up at.
        code, _ = deliver(h, senders[LONG], sample(
            "dsn-postfix-hard.eml", RCPT=senders[LONG], ADDRESS="fwd@forwarder.example",
            TOKEN="x"))
        assert code == 250
        assert person(h, LONG).refusals["*"].kind == "bounce"
        assert not person(h, "fwd@forwarder.example").refusals
        assert not person(h).refusals
    finally:
        h.stop()


def test_forged_or_unknown_verp_token_names_nobody(
        heed: HeedThread, aredis_sync: redis_sync.Redis) -> None:
    assert heed.heed is not None
    real = heed.heed.tokens.verp(ANA, "marketing")
    # Right key and shape, wrong MAC: no mapping exists, so it is a plain bounce@ report.
    forged = real[:4] + ("a" if real[4] != "a" else "b") + real[5:]
    # A mapping someone planted for another address does not pass the MAC either.
    aredis_sync.set(Keys().verp(forged), f"{ANA}\nmarketing")
    code, _ = deliver(heed, f"bounce+{forged}@heed.test", sample(
        "bounce-unhelpful.eml", RCPT=f"bounce+{forged}@heed.test"))
    assert code == 250
    assert not person(heed).refusals
    # An unknown key id is not one of heed's addresses at all.
    code, _ = deliver(heed, "bounce+zzzz" + real[4:] + "@heed.test",
                      sample("bounce-unhelpful.eml"))
    assert code == 554
    assert not person(heed).refusals


def test_expired_mapping_falls_back_to_the_reports_own_fields(
        heed: HeedThread) -> None:
    assert heed.heed is not None
    verp = heed.heed.tokens.verp(ANA, "marketing")  # sent long ago: no mapping any more
    code, _ = deliver(heed, f"bounce+{verp}@heed.test", sample(
        "dsn-postfix-hard.eml", RCPT=f"bounce+{verp}@heed.test", TOKEN="x"))
    assert code == 250
    assert person(heed).refusals["*"].kind == "bounce"  # Final-Recipient: Ana


@pytest.mark.parametrize("with_token", [True, False])
def test_postfix_hard_bounce_refuses_all_marketing(heed: HeedThread, with_token: bool) -> None:
    code, _ = deliver(heed, "bounce@heed.test", sample(
        "dsn-postfix-hard.eml", TOKEN=token(heed) if with_token else "none"))
    assert code == 250
    refusal = person(heed).refusals["*"]
    assert (refusal.kind, refusal.channel) == ("bounce", "dsn")
    assert heed.heed is not None
    events = [e for e in heed.call(heed.heed.audit.recent(ANA)) if e.kind == "event"]
    assert events[0].outcome == "bounce"
    assert "channel dsn; hard" in events[0].detail and "5.1.1" in events[0].detail
    assert heed.heed.metrics.events.labels("dsn", "bounce", "refused")._value.get() == 1


def test_unsigned_reports_can_be_distrusted(redis_url: str, upstream: Upstream,
                                            policies: Path, clock: ManualClock,
                                            aredis_sync: redis_sync.Redis) -> None:
    h = start(redis_url, upstream, policies, clock, bounces={"trust_unsigned": False})
    try:
        for rcpt, name in (("bounce@heed.test", "dsn-postfix-hard.eml"),
                           ("fbl@heed.test", "arf-rfc5965.eml")):
            assert deliver(h, rcpt, sample(name, TOKEN="none"))[0] == 250
        # Nobody named by a token: nothing done, both kept for `heed bounces unread`.
        assert recorded(aredis_sync) == []
        assert aredis_sync.xlen(Keys().unread) == 2
        assert deliver(h, "bounce@heed.test",
                       sample("dsn-postfix-hard.eml", TOKEN=token(h)))[0] == 250
        assert person(h).refusals["*"].kind == "bounce"
    finally:
        h.stop()


def test_delayed_and_policy_bounces_only_count(heed: HeedThread, aredis_sync: redis_sync.Redis,
                                               ) -> None:
    for name in ("dsn-rfc3464-delayed.eml", "dsn-gmail-policy.eml"):
        code, _ = deliver(heed, "bounce@heed.test", sample(name))
        assert code == 250
    assert person(heed).refusals == {}
    assert aredis_sync.zcard(Keys().soft_bounces(ANA)) == 2
    assert heed.heed is not None
    counted = {(s.labels["reason"], s.labels["severity"]): s.value
               for m in heed.heed.metrics.reports.collect() for s in m.samples
               if s.name == "heed_reports_total"}
    assert counted == {("filtered", "soft"): 1, ("spam", "soft"): 1}  # heed_reports_total


def test_arf_complaint_refuses_all_marketing(heed: HeedThread) -> None:
    code, _ = deliver(heed, "fbl@heed.test", sample("arf-rfc5965.eml", RCPT="fbl@heed.test"))
    assert code == 250
    refusal = person(heed).refusals["*"]
    assert (refusal.kind, refusal.channel) == ("complaint", "arf")


@pytest.mark.parametrize("via", ["list-unsubscribe", "return-path", "compact-return-path"])
def test_redacted_arf_names_the_person_by_heeds_token(heed: HeedThread, via: str,
                                                      aredis_sync: redis_sync.Redis) -> None:
    assert heed.heed is not None
    verp = f"<bounce+{token(heed, purpose=BOUNCE)}@heed.test>"  # long: sent by earlier heeds
    if via == "compact-return-path":
        compact = heed.heed.tokens.verp(ANA, "marketing")
        aredis_sync.set(Keys().verp(compact), f"{ANA}\nmarketing")  # as written when sent
        verp = f"<bounce+{compact}@heed.test>"
    subs = ({"TOKEN": token(heed), "RETURN_PATH": "<offers@news.example.com>"}
            if via == "list-unsubscribe" else {"TOKEN": "forged", "RETURN_PATH": verp})
    code, _ = deliver(heed, "fbl@heed.test", sample("arf-redacted.eml", RCPT="fbl@heed.test",
                                                    **subs))
    assert code == 250
    assert person(heed).refusals["*"].kind == "complaint"


def test_not_spam_records_nothing_and_broken_mime_what_can_be_read(
        heed: HeedThread, aredis_sync: redis_sync.Redis) -> None:
    code, _ = deliver(heed, "fbl@heed.test", sample("arf-not-spam.eml"))
    assert code == 250
    assert recorded(aredis_sync) == []
    code, _ = deliver(heed, "bounce@heed.test", sample("broken-mime.eml"))
    assert code == 250  # accepted: a 5xx to a DSN only makes a double bounce
    # Its boundary is lost, but its RFC 3464 fields are still there to read.
    assert person(heed).refusals["*"].kind == "bounce"
    aredis_sync.flushdb()
    # A forged VERP address does not exist (and loopback may not relay here).
    code, _ = deliver(heed, "bounce+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA@heed.test",
                      sample("dsn-postfix-hard.eml", TOKEN="x"))
    assert code == 554
    assert recorded(aredis_sync) == []


def recorded(client: redis_sync.Redis) -> list[bytes]:
    """Every key but the reports kept unread."""
    return [k for k in client.keys() if k != Keys().unread.encode()]


@pytest.fixture
def aredis_sync(redis_url: str) -> Iterator[redis_sync.Redis]:
    client = redis_sync.Redis.from_url(redis_url)
    yield client
    client.close()


def test_redis_down_is_451_so_the_reporting_mta_retries(upstream: Upstream, policies: Path,
                                                        clock: ManualClock) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                             upstream_port=upstream.port, policies=policies)
    h = HeedThread(settings, clock).start()
    try:
        code, msg = deliver(h, "bounce@heed.test", sample("dsn-postfix-hard.eml", TOKEN="x"))
        assert (code, msg[:5]) == (451, b"4.3.0")
        assert b"127.0.0.1" not in msg
    finally:
        h.stop()


@pytest.mark.parametrize(("feedback", "refuses"), [
    ("abuse", True), ("fraud", True), ("opt-out", True), ("virus", False),
    ("auth-failure", False)])
def test_every_feedback_type(heed: HeedThread, feedback: str, refuses: bool) -> None:
    data = sample("arf-rfc5965.eml", RCPT="fbl@heed.test").replace(
        b"Feedback-Type: abuse", b"Feedback-Type: " + feedback.encode())
    assert deliver(heed, "fbl@heed.test", data)[0] == 250
    assert heed.heed is not None
    entries = [e for e in heed.call(heed.heed.audit.recent(ANA)) if e.kind == "event"]
    if refuses:
        assert person(heed).refusals["*"].kind == "complaint"
    else:  # recorded, not a refusal
        assert not person(heed).refusals
        assert entries[0].outcome == "feedback" and feedback in entries[0].detail


def test_forwarded_abuse_mail_without_a_report_part_refuses_by_token(heed: HeedThread) -> None:
    forwarded = (
        "From: abuse@isp.example\r\nTo: fbl@heed.test\r\nSubject: Fwd: spam\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nSpam from your network.\r\n"
        "--b\r\nContent-Type: message/rfc822\r\n\r\n"
        "X-HmXmrOriginalRecipient: <someone-else@example.net>\r\n"
        f"List-Unsubscribe: <https://heed.test/u/{token(heed)}>\r\n"
        "From: offers@news.example.com\r\nSubject: Sale\r\n\r\nHello\r\n--b--\r\n")
    assert deliver(heed, "fbl@heed.test", forwarded.encode())[0] == 250
    assert person(heed).refusals["*"].kind == "complaint"  # the token, not the quoted header
    assert not person(heed, "someone-else@example.net").refusals


def test_a_prose_bounce_sent_to_the_complaints_address_is_no_complaint(
        heed: HeedThread) -> None:
    bounce = (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\nTo: fbl@heed.test\r\n"
        "Subject: Mail delivery failed: returning message to sender\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        "Content-Type: text/plain\r\n\r\nThe following address failed:\r\n\r\n"
        f"  {ANA}\r\n    host mx.example.org: 452 4.2.2 mailbox full\r\n"
        "--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: offers@news.example.com\r\n"
        f"To: {ANA}\r\nSubject: Sale\r\n\r\nHello\r\n--b--\r\n")
    assert deliver(heed, "fbl@heed.test", bounce.encode())[0] == 250
    assert not person(heed).refusals  # a full mailbox, counted; not a complaint


def test_a_report_is_never_refused_for_its_form(heed: HeedThread) -> None:
    # A NUL byte, a 2000-octet line (RFC 5321 §4.5.3.1.6 says 1000) and 8-bit headers.
    data = sample("dsn-postfix-hard.eml", TOKEN="x").replace(
        b"\r\n\r\n", b"\r\nX-Note: caf\xc3\xa9 \x00 " + b"y" * 2000 + b"\r\n\r\n", 1)
    code, _ = deliver(heed, "bounce@heed.test", data)
    assert code == 250
    assert person(heed).refusals["*"].kind == "bounce"


def test_a_report_to_a_verp_address_is_passed_on_to_the_tools_return_path(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock) -> None:
    h = start(redis_url, upstream, policies, clock)  # loopback may relay: it is the tool here
    try:
        _passed_on(h, upstream)
    finally:
        h.stop()


def _passed_on(heed: HeedThread, upstream: Upstream) -> None:
    grant(heed, ANA)
    with heed.smtp() as c:
        c.sendmail("offers@news.example.com", [ANA], message("offers@news.example.com", ANA))
    (copy,) = upstream.received
    heed.settle()
    report = sample("dsn-postfix-hard.eml", RCPT=copy.sender, TOKEN="x")
    assert deliver(heed, copy.sender, report)[0] == 250
    assert person(heed).refusals["*"].kind == "bounce"  # heed's own record...
    assert heed.release_due() == 1  # ...and, queued durably, the tool's
    assert heed.heed is not None and heed.heed.metrics.forwarded._value.get() == 1
    forwarded = upstream.received[1]
    assert (forwarded.sender, forwarded.recipients) == ("<>", ["offers@news.example.com"])
    assert forwarded.data.replace(b"\r\n", b"\n") == report.replace(b"\r\n", b"\n")
    # A forwarded report the tool's MTA refuses for good is dropped, with an audit
    # record, and never bounced (that would loop).
    upstream.handler.rcpt_reply["offers@news.example.com"] = "550 5.1.1 no such user"
    assert deliver(heed, copy.sender, report)[0] == 250
    assert heed.release_due() == 1
    assert len(upstream.received) == 2
    assert heed.release_due() == 0  # nothing left: no notification of the failed one
    assert heed.heed is not None
    ends = [e for e in heed.call(heed.heed.audit.recent("offers@news.example.com"))
            if e.outcome == "failed"]
    assert ends and "550" in " ".join(ends[0].reasons)


def test_reports_are_not_passed_on_when_forward_is_off_or_would_loop(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock,
        aredis_sync: redis_sync.Redis) -> None:
    h = start(redis_url, upstream, policies, clock, smtp={"client_networks": ["192.0.2.0/24"]},
              bounces={"forward": False, "verp_max_local": 200})
    try:
        assert h.heed is not None
        for sender in ("offers@news.example.com", "bounce@heed.test"):
            token = h.heed.tokens.verp(ANA, "marketing")
            aredis_sync.set(Keys().verp(token), f"{ANA}\nmarketing\n{sender}")
            rcpt = f"bounce+{token}@heed.test"
            assert deliver(h, rcpt, sample("dsn-postfix-hard.eml", RCPT=rcpt, TOKEN="x"))[0] == 250
        assert h.release_due() == 0
    finally:
        h.stop()
    h = start(redis_url, upstream, policies, clock, smtp={"client_networks": ["192.0.2.0/24"]},
              bounces={"verp_max_local": 200})
    try:
        assert deliver(h, rcpt, sample("dsn-postfix-hard.eml", RCPT=rcpt, TOKEN="x"))[0] == 250
        assert h.release_due() == 0  # its return path is heed's own: it would loop
        assert upstream.received == []
    finally:
        h.stop()


def test_reports_that_make_no_event_are_kept_for_heed_bounces_unread(
        heed: HeedThread, redis_url: str, aredis_sync: redis_sync.Redis,
        capsys: pytest.CaptureFixture[str]) -> None:
    from proxy.cli import main

    nobody = (b"From: postmaster@far.example\r\nTo: bounce@heed.test\r\nSubject: Hm\r\n\r\n"
              b"Something went wrong somewhere.\r\n")
    assert deliver(heed, "bounce@heed.test", nobody)[0] == 250
    assert deliver(heed, "bounce@heed.test", sample("dsn-postfix-hard.eml", TOKEN="x"))[0] == 250
    (kept,) = aredis_sync.xrange(Keys().unread)  # the one with an event is not kept
    assert kept[1][b"data"] == nobody
    # The CLI's clock is the wall clock; the test's is far ahead: look back far enough.
    assert main(["bounces", "unread", "--redis", redis_url, "--since", "3650d"]) == 0
    out = capsys.readouterr().out
    assert "to bounce@heed.test" in out and "'Hm'" in out and "1 unread report(s)" in out
    assert main(["bounces", "unread", "--redis", redis_url, "--show", kept[0].decode()]) == 0
    assert "Something went wrong somewhere." in capsys.readouterr().out
    assert main(["bounces", "unread", "--redis", redis_url, "--since", "soon"]) == 2
    # A mistyped id is "no such report", not Redis's "Invalid stream ID" traceback.
    assert main(["bounces", "unread", "--redis", redis_url, "--show", "17999x-0"]) == 1
    assert "no kept report 17999x-0" in capsys.readouterr().err


def test_a_bounce_built_to_make_the_readers_rescan_is_read_in_linear_time() -> None:
    # Anyone can mail bounce@: a 1 MB line the address and host patterns rescanned from
    # each character took ~10 minutes of the event loop (all mail stalled). Read in a
    # child process, so a regression fails at the time limit instead of hanging the run.
    import subprocess
    import sys

    script = """
from proxy.providers.catalog import Catalog
from proxy.signals.bounces import read_report
head = b"From: MAILER-DAEMON@mx.example\\r\\nSubject: Undelivered Mail\\r\\n\\r\\n"
for body in (b"a" * 1_000_000, b"a.a@" * 250_000, b"x@" + b"a-" * 500_000):
    read_report(head + body)
    Catalog().in_text("4.7.28 " + body.decode())
print("read")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip() == "read"
