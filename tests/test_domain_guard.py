"""Domain guard: complaints from one receiving domain pause marketing to it, and only then."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from proxy.errors import PolicyError
from proxy.policy import load_policies
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings, policy_dir
from tests.test_smtp_mailpath import NOON, send

pytestmark = pytest.mark.cluster  # the guard's key lives in another slot than the person's
DAY = 86400.0
POLICY = """
version: guard-test
default_stream: marketing
streams:
  marketing:
    kind: marketing
    drop: reject
    rules:
      - {if: refused, then: drop}
      - {if: no_consent, then: drop}
      - if: domain_guard
        complaints: 3
        window: 1d
        pause: 2d
        then: {THEN}
    unsigned: allow  # relayed without a DKIM key
classify:
  - {sender: "*@news.example.com", stream: marketing}
"""
PEOPLE = ["p1@big.example", "p2@big.example", "p3@big.example", "p4@big.example",
          "q@other.example"]


def start(redis_url: str, upstream: Upstream, tmp_path: Path, then: str) -> HeedThread:
    d = policy_dir(tmp_path, POLICY.replace("{THEN}", then), f"policies-{then}")
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=d)
    h = HeedThread(settings, ManualClock(NOON)).start()
    assert h.heed is not None
    for a in PEOPLE:
        h.call(h.heed.state.grant(a, "marketing", source="test"))
    return h


@pytest.fixture
def delaying(redis_url: str, upstream: Upstream, tmp_path: Path) -> Iterator[HeedThread]:
    h = start(redis_url, upstream, tmp_path, "delay")
    yield h
    h.stop()


def complain(h: HeedThread, address: str) -> None:
    assert h.heed is not None
    h.call(h.heed.state.refuse(address, "complaint", channel="arf"))


def test_guard_pauses_a_domain_after_n_complaints_and_not_before(
        delaying: HeedThread, upstream: Upstream, redis_url: str) -> None:
    h = delaying
    assert isinstance(h.clock, ManualClock)
    complain(h, "c1@big.example")
    complain(h, "c2@big.example")
    complain(h, "c2@big.example")  # the same person twice is one complaint
    h.clock.advance(60)
    assert send(h, "offers@news.example.com", ["p1@big.example"])[0] == {}
    assert upstream.recipients() == ["p1@big.example"]  # two people: not yet

    complain(h, "c3@big.example")  # the third person within a day
    h.clock.advance(60)
    refused, reply = send(h, "offers@news.example.com", ["p2@big.example", "q@other.example"])
    assert refused == {} and reply.startswith("250")
    # Held, not sent; the other domain is untouched.
    assert upstream.recipients() == ["p1@big.example", "q@other.example"]
    assert h.heed is not None
    trail = h.call(h.heed.audit.recent("p2@big.example"))
    held = [e for e in trail if e.kind == "decision"]
    assert [(e.outcome, e.reasons[0].split(":")[0]) for e in held] == [("queued",
                                                                        "domain_guard")]
    assert "big.example" in held[0].reasons[0]

    # Once the pause is over, the held copy goes out when due, and new mail flows.
    h.clock.advance(2 * DAY)
    assert h.release_due() == 1
    assert send(h, "offers@news.example.com", ["p3@big.example"])[0] == {}
    assert upstream.recipients()[-2:] == ["p2@big.example", "p3@big.example"]


def test_guard_can_discard_and_old_complaints_fall_out_of_the_window(
        redis_url: str, upstream: Upstream, tmp_path: Path) -> None:
    h = start(redis_url, upstream, tmp_path, "discard")
    try:
        assert isinstance(h.clock, ManualClock)
        complain(h, "c1@big.example")
        h.clock.advance(DAY + 60)  # the first complaint leaves the one-day window
        complain(h, "c2@big.example")
        complain(h, "c3@big.example")
        send(h, "offers@news.example.com", ["p1@big.example"])
        assert upstream.recipients() == ["p1@big.example"]
        complain(h, "c4@big.example")
        send(h, "offers@news.example.com", ["p2@big.example"])
        assert upstream.recipients() == ["p1@big.example"]  # discarded: accepted, not sent
    finally:
        h.stop()


def test_guard_parameters_are_checked_with_file_and_line(tmp_path: Path) -> None:
    d = policy_dir(tmp_path, POLICY.replace("{THEN}", "delay")
                   .replace("window: 1d", "window: 40d")
                   .replace("complaints: 3", "complaints: 0"), "p")
    with pytest.raises(PolicyError) as err:
        load_policies(d)
    text = "\n".join(err.value.errors)
    assert f"{d / 'policy.yaml'}:12: domain_guard.complaints: expected a whole number" in text
    assert f"{d / 'policy.yaml'}:13: domain_guard.window: expected a duration between" in text
