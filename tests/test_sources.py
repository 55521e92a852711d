"""Telling silence from deafness: `heed check` warns and `heed explain` says so per stream."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis

from proxy.audit import Audit
from proxy.clock import ManualClock
from proxy.explain import explain
from proxy.keys import Keys
from proxy.policy import load_policies
from proxy.settings import load_settings
from proxy.signals.sources import NO_SOURCE, deaf_streams, sources
from proxy.state import State
from tests.conftest import ROOT
from tests.harness import policy_dir

POLICY = """
version: test
default_stream: promo
streams:
  promo:
    list: promo
    silence:
      inactive: {sends: 3}
    rules:
      - {if: no_consent, then: drop}
  digest:
    list: digest
    track_clicks: true
    silence:
      inactive: {sends: 3}
  plain:
    list: plain
"""


def test_check_names_the_deaf_stream(tmp_path: Path) -> None:
    policy = load_policies(policy_dir(tmp_path, POLICY))
    bare = load_settings(None, env={})
    warnings = deaf_streams(bare, policy)
    assert len(warnings) == 1 and warnings[0].startswith(f"stream 'promo' has silence "
                                                         f"thresholds but {NO_SOURCE}")
    assert sources(bare, policy.streams["digest"]) == ["tracked clicks"]
    for heard in ({"api": {"tokens": ["a-long-enough-api-token"]}},
                  {"replies": {"address": "replies"}},
                  {"webhooks": {"mailgun_signing_key": "key-0123456789"}}):
        assert deaf_streams(load_settings(None, env={}, overrides=heard), policy) == []


def test_the_check_command_warns(tmp_path: Path) -> None:
    policies = policy_dir(tmp_path, POLICY)
    done = subprocess.run([sys.executable, "-m", "proxy", "check", "--policies", str(policies)],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"warning: stream 'promo' has silence thresholds but {NO_SOURCE}" in done.stderr
    assert "stream 'digest' has silence" not in done.stderr
    assert "stream 'plain' has silence" not in done.stderr


async def test_explain_says_there_is_no_source(tmp_path: Path, aredis: aioredis.Redis,
                                               keys: Keys, clock: ManualClock) -> None:
    policy = load_policies(policy_dir(tmp_path, POLICY))
    state = State(aredis, keys, clock)
    await state.grant("ana@example.org", "promo")
    bare = load_settings(None, env={})
    text = await explain(state, Audit(aredis, keys), "ana@example.org", now=clock.now(),
                         policy=policy, sources=lambda s: sources(bare, s))
    assert f"  promo: {NO_SOURCE}" in text
    assert "  digest: active: 0 sends since engagement" in text
    assert "    heard through: tracked clicks" in text
