"""The MAIL FROM a marketing copy leaves with: the tool's, unless bounces.domain routes to heed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from tests import test_smtp_mailpath as mailpath
from tests.conftest import ROOT, Upstream
from tests.harness import HeedThread, make_settings
from tests.test_smtp_mailpath import grant, message

policies = mailpath.policies  # the mail path's test policy and clock (noon UTC)
clock = mailpath.clock
SENDER = "offers@news.example.com"


def sent_from(redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock,
              **bounces: object) -> str:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policies, bounces=bounces)
    h = HeedThread(settings, clock).start()
    try:
        grant(h, "alice@example.org")
        with h.smtp() as c:
            c.sendmail(SENDER, ["alice@example.org"], message(SENDER, "alice@example.org"))
    finally:
        h.stop()
    [copy] = upstream.received
    return copy.sender


def test_without_a_bounce_domain_the_tools_sender_is_kept(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock) -> None:
    # The shipped default: no bounces.domain, so bounces go back to the tool.
    assert sent_from(redis_url, upstream, policies, clock, domain=None) == SENDER


def test_with_verp_off_the_tools_sender_is_kept(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock) -> None:
    assert sent_from(redis_url, upstream, policies, clock, domain="b.example.com",
                     verp=False) == SENDER


def test_a_routed_bounce_domain_turns_verp_on(
        redis_url: str, upstream: Upstream, policies: Path, clock: ManualClock) -> None:
    sender = sent_from(redis_url, upstream, policies, clock, domain="b.example.com")
    local, _, domain = sender.partition("@")
    assert domain == "b.example.com" and local.startswith("bounce+") and len(local) == 27


@pytest.mark.parametrize(("env", "says"), [
    ({}, "bounces.domain is not set, so copies keep the tool's MAIL FROM and bounces go to "
         "the tool"),
    ({"HEED_BOUNCES__DOMAIN": "b.example.com", "HEED_BOUNCES__VERP": "false"},
     "bounces.verp is off, so copies keep the tool's MAIL FROM"),
    ({"HEED_BOUNCES__DOMAIN": "b.example.com"},
     "MAIL FROM bounce+TOKEN@b.example.com. Route b.example.com to heed"),
])
def test_check_says_where_bounces_go(tmp_path: Path, env: dict[str, str], says: str) -> None:
    child_env = dict(os.environ, PYTHONPATH=str(ROOT), **env)
    shutil.copytree(ROOT / "config", tmp_path / "config")
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    # The shipped config as the README has it after its first step (a DKIM key).
    key = subprocess.run([sys.executable, "-m", "proxy", "dkim", "keygen", "example.com",
                          "heed1"], cwd=tmp_path, env=child_env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    config = tmp_path / "config" / "heed.yaml"
    entry = key.strip().splitlines()[-1].strip()
    config.write_text(config.read_text().replace("\ndkim: []", f"\ndkim:\n  {entry}"))
    out = subprocess.run([sys.executable, "-m", "proxy", "check", "--config", str(config)],
                         cwd=tmp_path, env=child_env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert says in out.stdout, out.stdout
