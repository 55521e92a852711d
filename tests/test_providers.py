"""Provider guard: codes from real DSNs (sisimai/set-of-emails) and upstream replies pause marketing
to that mailbox provider only; domains grouped by MX from a real DNS server (nsd)."""

from __future__ import annotations

import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.bounces import Finding, read_report
from proxy.clock import ManualClock
from proxy.providers.catalog import Catalog
from proxy.providers.lookup import ProviderLookup, make_resolver
from proxy.settings import DnsSettings
from tests.conftest import Upstream
from tests.dns_server import Nsd
from tests.harness import HeedThread, make_settings, policy_dir

CORPUS = Path(os.environ.get("HEED_SET_OF_EMAILS", "/work/.mirror/sisimai+set-of-emails/repo"))
NOON = 1_800_000_000.0 - (1_800_000_000 % 86400) + 12 * 3600
# (file in the corpus, provider, a word of the cause): each a real DSN with the code.
DSNS = [
    ("maildir/bsd/rhost-yahooinc-02.eml", "yahoo", "TSS04"),
    ("maildir/bsd/lhost-postfix-74.eml", "yahoo", "TSS04"),
    ("maildir/bsd/lhost-opensmtpd-13.eml", "yahoo", "TSS04"),
    ("maildir/bsd/rhost-microsoft-06.eml", "microsoft", "5.7.515"),
    ("maildir/bsd/rhost-google-03.eml", "google", "5.7.26"),
    ("maildir/bsd/lhost-postfix-70.eml", "google", "5.7.26"),
]
POLICY = """
version: providers
default_stream: marketing
streams:
  marketing:
    kind: marketing
    consent: not_required
    unsigned: allow
    rules:
      - {if: provider_guard, pause: 2h, max_pause: 1d, then: delay}
  transactional:
    kind: transactional
classify:
  - sender: "*@shop.example.com"
    stream: transactional
"""


def corpus(path: str) -> bytes:
    if not CORPUS.is_dir():
        pytest.skip(f"sisimai/set-of-emails corpus absent at {CORPUS} (set HEED_SET_OF_EMAILS "
                    "to its bare git repository)")
    return subprocess.run(["git", "--git-dir", str(CORPUS), "show", f"HEAD:{path}"],
                          capture_output=True, check=True).stdout


def message(sender: str, to: str) -> bytes:
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: Sale\r\nDate: Fri, 15 Jan 2027 12:00:00 "
            f"+0000\r\n\r\nHello. Unsubscribe: https://x.example/u\r\n").encode()


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, tmp_path: Path) -> Iterator[HeedThread]:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policy_dir(tmp_path, POLICY))
    h = HeedThread(settings, ManualClock(NOON)).start()
    yield h
    h.stop()


@pytest.mark.parametrize("path, provider, code", DSNS, ids=[d[0].rsplit("/")[-1] for d in DSNS])
def test_real_dsns_name_the_provider_and_its_code(heed: HeedThread, path: str, provider: str,
                                                  code: str) -> None:
    data = corpus(path)
    _, findings, _ = read_report(data)
    assert heed.heed is not None
    # As heed's bounce mailbox does: a report without RFC 3464 fields is read as prose.
    bounced = [f for f in findings if f.kind == "bounce"] or [Finding("bounce", None)]
    heard = [heed.call(heed.heed.providers.hear_dsn(f, data)) for f in bounced]
    found = [h for h in heard if h is not None]
    assert found, f"{path}: no provider code heard in {[f.detail for f in findings]}"
    assert found[0][0].name == provider and code in found[0][1]


def send(h: HeedThread, sender: str, to: list[str]) -> None:
    with h.smtp() as c:
        for r in to:
            c.sendmail(sender, [r], message(sender, r))


def test_tss04_dsn_pauses_marketing_to_yahoo_and_aol_only(heed: HeedThread,
                                                          upstream: Upstream) -> None:
    dsn = corpus("maildir/bsd/rhost-yahooinc-02.eml")
    with heed.smtp() as c:
        c.sendmail("", ["bounce@heed.test"], dsn)  # a DSN reaches heed's bounce address
    send(heed, "offers@news.example.com", ["ann@yahoo.com", "bo@aol.com", "cy@gmail.com",
                                            "di@example.org"])
    send(heed, "orders@shop.example.com", ["ed@yahoo.com"])  # transactional: never held
    assert sorted(upstream.recipients()) == ["cy@gmail.com", "di@example.org", "ed@yahoo.com"]
    assert heed.heed is not None
    entries = heed.call(heed.heed.audit.tail(50))
    held = {e.recipient: e for e in entries if e.outcome == "queued"}
    assert set(held) == {"ann@yahoo.com", "bo@aol.com"}
    assert "provider_guard" in held["ann@yahoo.com"].reasons[0]
    assert "TSS04" in held["bo@aol.com"].reasons[0]
    # Held copies go when the pause is over (2 h), re-checked then.
    assert isinstance(heed.clock, ManualClock)
    heed.clock.advance(2 * 3600 + 1)
    heed.release_due()
    assert {"ann@yahoo.com", "bo@aol.com"} <= set(upstream.recipients())


def test_upstream_reply_with_outlook_code_pauses_microsoft_with_backoff(
        heed: HeedThread, upstream: Upstream) -> None:
    upstream.handler.rcpt_reply["ann@outlook.com"] = (
        "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your "
        "Internet service provider. (S843) [AM0PR.eurprd07.prod.outlook.com]")
    with pytest.raises(smtplib.SMTPDataError):
        send(heed, "offers@news.example.com", ["ann@outlook.com"])
    send(heed, "offers@news.example.com", ["bo@hotmail.com", "cy@yahoo.com"])
    assert upstream.recipients() == ["cy@yahoo.com"]
    assert heed.heed is not None
    first = heed.call(heed.heed.state.snapshot("x@hotmail.com"))
    throttles = heed.call(heed.heed.providers.throttles())
    assert list(throttles) == ["microsoft"] and "S843" in throttles["microsoft"][0][1]
    assert first.address == "x@hotmail.com"
    # A second push-back after the first pause ended doubles the pause (2 h, then 4 h).
    assert isinstance(heed.clock, ManualClock)
    heed.clock.advance(2 * 3600 + 1)
    heed.release_due()
    assert "bo@hotmail.com" in upstream.recipients()
    with pytest.raises(smtplib.SMTPDataError):
        send(heed, "offers@news.example.com", ["ann@outlook.com"])
    send(heed, "offers@news.example.com", ["fi@live.com"])
    heed.clock.advance(3 * 3600)
    heed.release_due()
    assert "fi@live.com" not in upstream.recipients()  # still paused: 4 h this time
    heed.clock.advance(3600 + 1)
    heed.release_due()
    assert "fi@live.com" in upstream.recipients()


ZONE = """$ORIGIN {name}.
$TTL 60
@ IN SOA ns1.{name}. hostmaster.{name}. 1 3600 600 86400 60
@ IN NS ns1.{name}.
ns1 IN A 127.0.0.1
{records}
"""


@pytest.fixture
def nsd(tmp_path: Path) -> Iterator[Nsd]:
    zones = {
        "workspace.test": ZONE.format(name="workspace.test", records=(
            "@ IN MX 1 aspmx.l.google.com.\n@ IN MX 5 alt1.aspmx.l.google.com.")),
        "m365.test": ZONE.format(name="m365.test", records=(
            "@ IN MX 0 m365-test.mail.protection.outlook.com.")),
        "own.test": ZONE.format(name="own.test", records="@ IN MX 10 mx.own.test.\n"
                                                         "mx IN A 192.0.2.10"),
    }
    server = Nsd.start(tmp_path / "nsd", zones)
    yield server
    server.stop()


async def test_business_domains_are_grouped_by_their_mx(nsd: Nsd) -> None:
    lookup = ProviderLookup(Catalog(), make_resolver(DnsSettings((nsd.nameserver,), 2.0)),
                            ManualClock(NOON))
    found = await lookup.providers_of(["workspace.test", "m365.test", "own.test", "gmail.com",
                                       "nowhere.test"])
    assert {d: p.name if p else None for d, p in found.items()} == {
        "workspace.test": "google", "m365.test": "microsoft", "own.test": None,
        "gmail.com": "google", "nowhere.test": None}
    assert not found["workspace.test"].per_message_feedback  # type: ignore[union-attr]
