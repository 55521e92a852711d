"""Clients outside the allowed networks relay only after STARTTLS and AUTH; sessions are capped."""

from __future__ import annotations

import datetime
import ipaddress
import smtplib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.clock import ManualClock
from proxy.smtp.access import Access, hash_password
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings

POLICY = """
default_stream: transactional
streams:
  transactional: {kind: transactional}
classify: []
"""


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "heed.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def heed(tmp_path: Path, redis_url: str, upstream: Upstream,
         clock: ManualClock) -> Iterator[HeedThread]:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "p.yaml").write_text(POLICY)
    cert, key = self_signed(tmp_path)
    settings = make_settings(
        redis_url=redis_url, upstream_port=upstream.port, policies=tmp_path / "p",
        smtp={"client_networks": ["192.0.2.0/24"], "tls_cert": str(cert), "tls_key": str(key),
              "users": {"tool": hash_password("correct horse")}, "max_sessions": 3})
    h = HeedThread(settings, clock).start()
    yield h
    h.stop()


def tls_client(h: HeedThread) -> smtplib.SMTP:
    c = h.smtp()
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    c.starttls(context=context)
    c.ehlo("tool.test")
    return c


def test_network_answers_are_remembered_and_stay_right() -> None:
    """Asked at every RCPT, answered from memory; the memory is bounded."""
    access = Access([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")],
                    {})
    for _ in range(2):
        assert access.network_allowed("10.1.2.3")
        assert access.network_allowed("::ffff:10.1.2.3")  # IPv4-mapped
        assert access.network_allowed("2001:db8::1%eth0")
        assert not access.network_allowed("192.0.2.1")
        assert not access.network_allowed("not an address")
    for n in range(5000):
        assert not access.network_allowed(f"192.0.{n // 256}.{n % 256}")
    assert len(access._allowed) <= 4096
    assert access.network_allowed("10.9.9.9") and not access.network_allowed("11.0.0.1")


def test_auth_after_starttls_relays(heed: HeedThread, upstream: Upstream) -> None:
    with heed.smtp() as c:
        assert not c.has_extn("auth")  # no AUTH in the clear
        code, _ = c.docmd("AUTH", "PLAIN AHRvb2wAY29ycmVjdCBob3JzZQ==")
        assert code >= 500
    with tls_client(heed) as c:
        assert "PLAIN" in c.esmtp_features["auth"] and "LOGIN" in c.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("tool", "wrong")
    with tls_client(heed) as c:
        c.login("tool", "correct horse")
        c.sendmail("receipts@shop.example.com", ["ann@example.org"], "Subject: r\r\n\r\nx\r\n")
    assert upstream.recipients() == ["ann@example.org"]


def test_sessions_over_the_limit_get_421(heed: HeedThread) -> None:
    held = [socket.create_connection(("127.0.0.1", heed.port)) for _ in range(3)]
    try:
        for s in held:
            assert s.recv(100).startswith(b"220")
        extra = socket.create_connection(("127.0.0.1", heed.port), timeout=5)
        assert extra.recv(100).startswith(b"421 4.3.2")
        extra.close()
    finally:
        for s in held:
            s.close()


def test_slow_client_closed_at_the_data_deadline(tmp_path: Path, redis_url: str,
                                                 upstream: Upstream, clock: ManualClock) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "p.yaml").write_text(POLICY)
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=tmp_path / "p", smtp={"data_timeout": "1s"})
    h = HeedThread(settings, clock).start()
    try:
        with socket.create_connection(("127.0.0.1", h.port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            for line in (b"HELO t\r\n", b"MAIL FROM:<r@shop.example.com>\r\n",
                         b"RCPT TO:<ann@example.org>\r\n", b"DATA\r\n"):
                s.sendall(line)
                f.readline()
            s.sendall(b"Subject: slow\r\n")  # ... and then nothing more for too long
            assert f.readline().startswith(b"421 4.4.2")
            assert f.readline() == b""  # closed
        assert upstream.received == []
    finally:
        h.stop()
