"""`heed doctor` against a real authoritative DNS server (nsd) and heed's own HTTPS one-click:
every check passes on the good zones and names each failure, with its fix, on the broken ones."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.clock import ManualClock
from proxy.dkim import generate_key
from proxy.doctor.run import diagnose, render_text
from proxy.embedded_redis import free_port
from proxy.policy import load_policies
from proxy.settings import DkimKey, Settings
from tests.conftest import ROOT, Upstream
from tests.dns_server import Nsd
from tests.harness import HeedThread, make_settings, policy_dir
from tests.test_dkim import txt_value

SOA = """$TTL 60
@ IN SOA ns1.{z}. hostmaster.{z}. 1 3600 600 86400 60
@ IN NS ns1.{z}.
ns1 IN A 127.0.0.1
"""
POLICY = """
version: doctor
default_stream: marketing
streams:
  marketing:
    kind: marketing
    from_domains: [{domain}]
"""


def zone(name: str, body: str) -> str:
    return f"$ORIGIN {name}.\n" + SOA.format(z=name) + body + "\n"


def txt(record: str) -> str:
    """A zone-file TXT value of at most 255-character strings."""
    value = txt_value(record)
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    work = tmp_path_factory.mktemp("doctor")
    good_key, good_rec = generate_key("good.test", "s1", work / "keys")
    bad_key, _ = generate_key("bad.test", "s1", work / "keys")
    _, other_rec = generate_key("bad.test", "old", work / "keys")  # published, not configured
    zones = {
        "good.test": zone("good.test", f"""
@ IN MX 10 mx.good.test.
mx IN A 127.0.0.5
out IN A 127.0.0.10
heed IN A 127.0.0.20
@ IN TXT "v=spf1 a:out.good.test include:_spf.good.test -all"
_spf IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc IN TXT "v=DMARC1; p=reject; adkim=r; rua=mailto:d@good.test"
s1._domainkey IN TXT {txt(good_rec)}
b IN MX 10 heed.good.test.
b IN TXT "v=spf1 include:good.test -all"
"""),
        "bad.test": zone("bad.test", f"""
@ IN TXT "v=spf1 ip4:192.0.2.1 -all"
s1._domainkey IN TXT {txt(other_rec)}
b IN MX 10 mx.bad.test.
"""),
        "0.0.127.in-addr.arpa": zone("0.0.127.in-addr.arpa", """
10 IN PTR out.good.test.
11 IN PTR nowhere.good.test.
"""),
    }
    server = Nsd.start(work / "nsd", zones)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "heed test CA")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (work / "ca.pem").write_bytes(ca.public_bytes(pem))
    (work / "cert.pem").write_bytes(cert.public_bytes(pem) + ca.public_bytes(pem))
    (work / "key.pem").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    yield {"nsd": server, "work": work, "good_key": good_key, "bad_key": bad_key}
    server.stop()


def settings_for(base: Settings, world: dict, domain: str, egress: str, bounce: str,
                 https: int) -> Settings:
    key = world["good_key"] if domain == "good.test" else world["bad_key"]
    return replace(
        base,
        dkim=(DkimKey(domain, "s1", key),),
        dns=replace(base.dns, nameservers=(world["nsd"].nameserver,), timeout=3.0),
        doctor=replace(base.doctor, egress=(egress,)),
        bounces=replace(base.bounces, domain=bounce),
        smtp=replace(base.smtp, hostname="heed.good.test"),
        http=replace(base.http, public_url=f"https://localhost:{https}"))


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, tmp_path: Path,
         world: dict) -> Iterator[tuple[HeedThread, int]]:
    """heed with its HTTP side also served over TLS (the test CA's certificate)."""
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policy_dir(tmp_path, POLICY.format(domain="good.test")),
                             http={"listen": f"127.0.0.1:{free_port()}"})
    h = HeedThread(settings, ManualClock(1_800_000_000.0)).start()
    assert h.heed is not None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(world["work"] / "cert.pem", world["work"] / "key.pem")
    port = free_port()
    h.call(web.TCPSite(h.heed._http, "127.0.0.1", port, ssl_context=ctx).start())  # noqa: SLF001
    yield h, port
    h.stop()


def trust(world: dict) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(world["work"] / "ca.pem"))


async def test_good_zones_pass_every_check(heed: tuple[HeedThread, int], world: dict,
                                           tmp_path: Path) -> None:
    h, port = heed
    settings = settings_for(h.settings, world, "good.test", "127.0.0.10", "b.good.test", port)
    policy = load_policies(settings.policies)
    assert h.heed is not None
    findings = await diagnose(settings, policy, h.heed.tokens, context=trust(world))
    text = render_text(findings)
    assert all(f.ok for f in findings), text
    assert {f.check for f in findings} == {"dkim", "dmarc", "spf", "mx", "ptr", "bounce",
                                           "unsubscribe"}
    # The dry-run token recorded nothing: nobody refused.
    assert h.call(h.heed.state.snapshot("heed-doctor@heed.invalid")).refusals == {}


async def test_broken_zones_name_each_failure_with_its_fix(heed: tuple[HeedThread, int],
                                                          world: dict, tmp_path: Path) -> None:
    h, port = heed
    settings = settings_for(h.settings, world, "bad.test", "127.0.0.11", "b.bad.test", port)
    settings = replace(settings, doctor=replace(settings.doctor, reply_to=("good.test",
                                                                           "b.bad.test")))
    policy = load_policies(policy_dir(tmp_path, POLICY.format(domain="bad.test"), "bad"))
    assert h.heed is not None
    findings = await diagnose(settings, policy, h.heed.tokens)  # the system's trust: no CA
    failed = {f.check: f for f in reversed(findings) if not f.ok}  # the first of each check
    assert "b.bad.test has no SPF record" in render_text(findings)  # the VERP domain's
    assert set(failed) == {"dkim", "dmarc", "spf", "mx", "ptr", "bounce", "unsubscribe"}
    assert "not the configured key" in failed["dkim"].said
    assert "no DMARC record" in failed["dmarc"].said and "_dmarc.bad.test" in failed["dmarc"].fix
    assert "does not pass" in failed["spf"].said and "127.0.0.11" in failed["spf"].fix
    assert "no MX" in failed["mx"].said
    assert "does not resolve back" in failed["ptr"].said
    assert "not heed" in failed["bounce"].said and "heed.good.test" in failed["bounce"].fix
    assert "certificate is not valid" in failed["unsubscribe"].said
    assert all(f.fix for f in failed.values())
    # Reply-To domains are checked for an MX only: good.test has one, b.bad.test too.
    assert [f.ok for f in findings if f.check == "mx" and f.subject != "bad.test"] == [True, True]
    # --domain keeps one domain's checks (the shared ones still run).
    one = await diagnose(settings, policy, h.heed.tokens, only="good.test")
    assert {f.subject for f in one if f.check == "dkim"} == {"good.test"}


def test_cli_exits_non_zero_on_failure_and_zero_when_all_pass(
        heed: tuple[HeedThread, int], world: dict, tmp_path: Path) -> None:
    h, port = heed
    (tmp_path / "config").mkdir()
    cfg = tmp_path / "config" / "heed.yaml"

    def run(domain: str, egress: str, bounce: str) -> subprocess.CompletedProcess[str]:
        key = world["good_key"] if domain == "good.test" else world["bad_key"]
        pdir = tmp_path / f"p-{domain}"
        if not pdir.exists():
            policy_dir(tmp_path, POLICY.format(domain=domain), f"p-{domain}")
        cfg.write_text(json.dumps({
            "smtp": {"hostname": "heed.good.test"},
            "http": {"public_url": f"https://localhost:{port}"},
            "unsubscribe": {"keys": [{"id": "t1", "secret": "test-secret-0123456789abcdef"}]},
            "redis": {"url": "redis://127.0.0.1:1/0"},  # the doctor needs no Redis
            "bounces": {"domain": bounce},
            "dns": {"nameservers": [world["nsd"].nameserver]},
            "doctor": {"egress": [egress]},
            "dkim": [{"domain": domain, "selector": "s1", "key_file": str(key)}],
            "policies": str(pdir)}))
        # A fresh process trusts the test CA the way any program trusts a CA: SSL_CERT_FILE.
        env = dict(os.environ, PYTHONPATH=str(ROOT), SSL_CERT_FILE=str(world["work"] / "ca.pem"))
        return subprocess.run([sys.executable, "-m", "proxy", "doctor", "--config", str(cfg),
                               "--format", "json"], capture_output=True, text=True, env=env,
                              timeout=120, cwd=tmp_path)

    good = run("good.test", "127.0.0.10", "b.good.test")
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["ok"] is True
    bad = run("bad.test", "127.0.0.11", "b.bad.test")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False and all(c["fix"] for c in report["checks"] if not c["ok"])


async def test_a_nameserver_that_never_answers_is_a_finding_not_a_crash(
        redis_url: str, tmp_path: Path) -> None:
    # The doctor is run when mail fails, DNS included: an egress host name that cannot
    # be resolved (the nameserver is silent) is reported like every other DNS trouble.
    settings = make_settings(redis_url=redis_url, upstream_port=9,
                             policies=policy_dir(tmp_path, POLICY.format(domain="good.test")),
                             http={"public_url": "http://heed.test"},
                             dns={"nameservers": [f"127.0.0.1:{free_port()}"],
                                  "timeout": "1s"},
                             doctor={"egress": ["mta.good.test"]})
    from proxy.tokens import TokenSigner

    tokens = TokenSigner(list(settings.unsubscribe.keys), ManualClock(1_800_000_000.0), 9e6)
    findings = await diagnose(settings, load_policies(settings.policies), tokens)
    egress = [f for f in findings if f.subject == "mta.good.test"]
    assert egress and not egress[0].ok and "DNS did not answer" in egress[0].said
    assert not any("no egress configured" in f.said for f in findings)
