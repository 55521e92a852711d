"""docs/postfix.md layout 2, for real: a private Postfix sends marketing senders through heed.

Postfix listens for applications, hands mail from marketing senders to heed
(check_sender_access FILTER), takes heed's mail back on a second smtpd with no
filter, and relays everything to the capture upstream. Proves the routing, the
refusal as a bounce, and that nothing loops.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.compare import PostfixRelay, PostfixUnavailable
from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.settings import DkimKey
from tests.conftest import Received, Upstream
from tests.dkim_keys import Verifier, dkimpy_verify
from tests.harness import CONSENT_POLICY, HeedThread, make_settings


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under pytest's tmp_path: Postfix's own user must reach its queue, and
    # pytest's folders are 0700 root.
    folder = Path(tempfile.mkdtemp(prefix="heed-postfix-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def wait_for(upstream: Upstream, count: int) -> list[Received]:
    deadline = time.monotonic() + 60
    while len(upstream.received) < count:
        assert time.monotonic() < deadline, f"only {len(upstream.received)} of {count} arrived"
        time.sleep(0.1)
    return upstream.received


def test_postfix_routes_marketing_senders_through_heed(
        redis_url: str, upstream: Upstream, base: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master runs as root)")
    assert shutil.which("postfix"), "Postfix is installed by .ci/run"
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "policy.yaml").write_text(CONSENT_POLICY)
    back = free_port()  # where heed hands mail back to Postfix
    settings = make_settings(redis_url=redis_url, upstream_port=back, policies=tmp_path / "p")
    heed = HeedThread(settings, ManualClock(time.time())).start()
    senders = base / "heed_senders"
    senders.write_text(f"news.example.com FILTER heed:[127.0.0.1]:{heed.port}\n")
    senders.chmod(0o644)
    # The entries of docs/postfix.md, ports changed.
    main_extra = f"smtpd_sender_restrictions = check_sender_access texthash:{senders}\n"
    master_extra = f"""
heed      unix  -       -       n       -       20      smtp
  -o syslog_name=postfix/to-heed
  -o smtp_tls_security_level=none
  -o disable_mime_output_conversion=yes
127.0.0.1:{back} inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/from-heed
  -o content_filter=
  -o smtpd_sender_restrictions=
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_recipient_restrictions=permit_mynetworks,reject
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks
"""
    try:
        postfix = PostfixRelay(base / "pf", upstream.port, main_extra=main_extra,
                               master_extra=master_extra)
    except PostfixUnavailable as exc:
        heed.stop()
        pytest.fail(str(exc))
    try:
        assert heed.heed is not None
        heed.call(heed.heed.state.grant("alice@example.org", "marketing", source="form"))
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as app:
            app.sendmail("offers@news.example.com", ["alice@example.org", "carol@example.org"],
                         "From: offers@news.example.com\r\nSubject: Sale\r\n\r\nHello\r\n")
            app.sendmail("receipts@shop.example.com", ["carol@example.org"],
                         "From: receipts@shop.example.com\r\nSubject: Receipt\r\n\r\nPaid\r\n")
        got = wait_for(upstream, 3)  # alice's sale, carol's receipt, the bounce for carol
        time.sleep(2)  # a loop would bring more copies in the meantime
    finally:
        postfix.stop()
        heed.stop()
    by_subject = {m.message["Subject"]: m for m in got if m.message["Subject"]}
    sale = by_subject["Sale"]
    assert sale.recipients == ["alice@example.org"]  # carol never agreed: heed said 550
    assert sale.message["List-Unsubscribe"].startswith("<https://heed.test/u/")  # through heed
    receipt = by_subject["Receipt"]
    assert receipt.recipients == ["carol@example.org"]  # other senders go around heed
    assert receipt.message["List-Unsubscribe"] is None
    bounces = [m for m in got if m.sender == "<>" or m.sender == ""]
    assert len(bounces) == 1 and bounces[0].recipients == ["offers@news.example.com"]
    assert b"no_consent" in bounces[0].data  # the tool learns why, from Postfix's DSN
    assert len(got) == 3  # each once: heed's mail was not routed back to heed


def test_a_5000_octet_line_keeps_its_signature_through_a_stock_postfix(
        redis_url: str, upstream: Upstream, base: Path, tmp_path: Path,
        rsa_key: tuple[DkimKey, str], zone: dict[str, str], opendkim: Verifier) -> None:
    """heed -> Postfix (default smtp_line_length_limit 998) -> sink: the copy heed signed,
    with a 5,000-octet HTML line, still verifies (dkimpy and opendkim-testmsg)."""
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master runs as root)")
    try:
        postfix = PostfixRelay(base / "pf", upstream.port)  # Postfix's defaults otherwise
    except PostfixUnavailable as exc:
        pytest.fail(str(exc))
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "policy.yaml").write_text(CONSENT_POLICY)
    settings = replace(make_settings(redis_url=redis_url, upstream_port=postfix.port,
                                     policies=tmp_path / "p"), dkim=(rsa_key[0],))
    html = "<p>" + "Autumn sale, every shoe half price! " * 139 + "\u20ac</p>"
    assert len(html.encode()) >= 5000
    heed = HeedThread(settings, ManualClock(time.time())).start()  # dkimpy checks t= now
    try:
        assert heed.heed is not None
        heed.call(heed.heed.state.grant("alice@example.org", "marketing", source="form"))
        with smtplib.SMTP("127.0.0.1", heed.port, timeout=30) as tool:
            tool.sendmail("news@example.com", ["alice@example.org"], (
                "From: News <news@example.com>\r\nTo: alice@example.org\r\nSubject: Sale\r\n"
                "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Transfer-Encoding: 8bit\r\n\r\n{html}\r\n").encode())
        [copy] = wait_for(upstream, 1)
    finally:
        postfix.stop()
        heed.stop()
    assert b"DKIM-Signature:" in copy.data and b"Received: from" in copy.data  # via Postfix
    assert max(len(line) for line in copy.data.split(b"\r\n")) <= 998
    assert dkimpy_verify(copy.data, zone)
    assert opendkim(copy.data) == (0, "")
    assert copy.message.get_content().strip() == html  # the same page, quoted-printable
