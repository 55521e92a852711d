"""DKIM required for marketing: `heed check` refuses unsigned streams; run time holds or rejects."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from proxy.bulk.signing import sending_domains, signing_problems
from proxy.clock import ManualClock
from proxy.dkim import generate_key
from proxy.policy import load_policies
from proxy.settings import DkimKey
from tests.conftest import ROOT, Upstream
from tests.harness import TRANSACTIONAL, HeedThread, make_settings, policy_dir

NOON = 1_800_000_000.0 - (1_800_000_000 % 86400) + 12 * 3600

POLICY = """
version: bulk
default_stream: marketing
streams:
  marketing:
    kind: marketing
    consent: not_required
    unsubscribe: replace
    {extra}
""" + TRANSACTIONAL


def policy(parent: Path, extra: str = "") -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return policy_dir(parent, POLICY.replace("{extra}", extra))


def message(sender: str) -> bytes:
    return (f"From: Shop <{sender}>\r\nTo: alice@example.org\r\nSubject: Sale\r\n"
            f"Message-ID: <m1@example.com>\r\n\r\nHello! Unsubscribe: https://x.example/u\r\n"
            ).encode()


def test_stream_domains_come_from_classify_and_from_domains(tmp_path: Path) -> None:
    p = load_policies(policy(tmp_path, "from_domains: [offers.example.net]"))
    assert sending_domains(p)["marketing"] == ("offers.example.net", "news.example.com")
    problems = signing_problems(p, ["example.com"])
    assert [(x.stream, x.domain, x.error) for x in problems] == [
        ("marketing", "offers.example.net", True)]


def heed_cmd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=60)


def test_check_refuses_an_unsigned_marketing_stream(tmp_path: Path) -> None:
    pdir = policy(tmp_path)
    (tmp_path / "config").mkdir()
    cfg = tmp_path / "config" / "heed.yaml"
    cfg.write_text(f"policies: {pdir}\n")
    done = heed_cmd("check", "--config", str(cfg), cwd=tmp_path)
    assert done.returncode != 0
    assert "'marketing' sends From news.example.com but no DKIM key" in done.stderr
    assert "heed dkim keygen news.example.com" in done.stderr
    # A key for the organisational domain signs news.example.com (DMARC relaxed alignment).
    path, _ = generate_key("example.com", "s1", tmp_path / "keys")
    cfg.write_text(f"policies: {pdir}\ndkim:\n  - {{domain: example.com, selector: s1, "
                   f"key_file: {path}}}\n")
    done = heed_cmd("check", "--config", str(cfg), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # An explicit opt-out is allowed, and said out loud.
    cfg.write_text(f"policies: {policy(tmp_path / 'allow', 'unsigned: allow')}\n")
    assert heed_cmd("check", "--config", str(cfg), cwd=tmp_path).returncode == 0


def test_marketing_only_keys_on_a_transactional_stream_are_errors(tmp_path: Path) -> None:
    from proxy.errors import PolicyError

    text = POLICY.replace("{extra}", "").replace(
        "    kind: transactional\n", "    kind: transactional\n    unsigned: hold\n")
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir(tmp_path, text))
    assert "unsigned applies to marketing streams only" in str(err.value.errors)


@pytest.fixture
def heed_for(redis_url: str, upstream: Upstream, tmp_path: Path) -> Iterator:
    started: list[HeedThread] = []

    def start(extra: str = "", dkim: bool = False) -> HeedThread:
        settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                                 policies=policy(tmp_path / f"p{len(started)}", extra))
        if dkim:
            path, _ = generate_key("example.com", "s1", tmp_path / f"k{len(started)}")
            settings = replace(settings, dkim=(DkimKey("example.com", "s1", path),))
        h = HeedThread(settings, ManualClock(NOON)).start()
        started.append(h)
        return h

    yield start
    for h in started:
        h.stop()


def test_unsigned_marketing_is_held_by_default(heed_for, upstream: Upstream) -> None:  # noqa: ANN001
    h = heed_for()
    with h.smtp() as c:
        c.sendmail("offers@news.example.com", ["alice@example.org"], message(
            "offers@news.example.com"))
        # Transactional mail is never held back by marketing rules, key or not.
        c.sendmail("orders@shop.example.com", ["bob@example.org"], message(
            "orders@shop.example.com"))
    assert upstream.recipients() == ["bob@example.org"]
    assert h.heed is not None
    assert h.call(h.heed.queue.depth()) == 1
    entries = h.call(h.heed.audit.tail(10))
    held = [e for e in entries if e.recipient == "alice@example.org"]
    assert held and held[-1].outcome == "queued" and held[-1].reasons[0].startswith("unsigned:")


def test_unsigned_reject_refuses_the_message(heed_for, upstream: Upstream) -> None:  # noqa: ANN001
    import smtplib

    h = heed_for("unsigned: reject")
    with h.smtp() as c, pytest.raises(smtplib.SMTPDataError) as err:
        c.sendmail("offers@news.example.com", ["alice@example.org"], message(
            "offers@news.example.com"))
    assert err.value.smtp_code == 550
    assert upstream.recipients() == []


def test_signed_marketing_goes_out_signed(heed_for, upstream: Upstream) -> None:  # noqa: ANN001
    h = heed_for(dkim=True)
    with h.smtp() as c:
        c.sendmail("offers@news.example.com", ["alice@example.org"], message(
            "offers@news.example.com"))
    assert upstream.recipients() == ["alice@example.org"]
    assert b"DKIM-Signature:" in upstream.received[0].data
    assert b"d=example.com" in upstream.received[0].data.replace(b"\r\n", b"")


def test_policy_test_shows_the_hold(tmp_path: Path, redis_url: str) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(message("offers@news.example.com"))
    done = heed_cmd("policy", "test", str(eml), "--to", "alice@example.org", "--redis",
                    redis_url, "--policies", str(policy(tmp_path)), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "stream marketing: delay until" in done.stdout
    assert "because unsigned: no DKIM key signs mail From news.example.com" in done.stdout


def test_dkim_rotate_prints_the_dns_steps(tmp_path: Path) -> None:
    old, _ = generate_key("example.com", "s1", tmp_path / "keys")
    (tmp_path / "config").mkdir()
    cfg = tmp_path / "config" / "heed.yaml"
    cfg.write_text(f"policies: {policy(tmp_path)}\ndkim:\n  - {{domain: example.com, "
                   f"selector: s1, key_file: {old}}}\n")
    done = heed_cmd("dkim", "rotate", "example.com", "s2", "--dir", str(tmp_path / "keys"),
                    "--grace", "10d", "--config", str(cfg), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert (tmp_path / "keys" / "example.com.s2.rsa.pem").exists()
    assert 's2._domainkey.example.com. IN TXT "v=DKIM1; k=rsa; p=' in out
    assert "keep the old one published" in out and "s1._domainkey.example.com" in out
    assert "v=DKIM1; p=" in out and "selector: s2" in out
    again = heed_cmd("dkim", "rotate", "example.com", "s1", "--config", str(cfg), cwd=tmp_path)
    assert again.returncode != 0 and "already in use" in again.stderr


def test_dkim_rotate_with_a_bad_grace_is_a_usage_error_and_writes_no_key(tmp_path: Path) -> None:
    done = heed_cmd("dkim", "rotate", "example.com", "s2", "--dir", str(tmp_path / "keys"),
                    "--grace", "bad", cwd=tmp_path)
    assert done.returncode == 2
    assert "argument --grace: expected a duration" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "keys").exists()
