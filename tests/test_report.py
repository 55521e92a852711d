"""`heed report` over a history made of real mail through heed, real refusals and a moved clock."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from proxy.cli import main
from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.keys import Keys
from proxy.report.trail import CHUNK, pages
from proxy.settings import DkimKey
from tests.conftest import ROOT, Upstream
from tests.harness import HeedThread, make_settings, policy_dir
from tests.test_smtp_mailpath import send
from tests.unfaked import unfaked_env

HOUR = 3600.0
POLICY = """
version: report-test
default_stream: marketing
streams:
  marketing:
    kind: marketing
    drop: reject
    rules:
      - {if: refused, then: drop}
      - {if: no_consent, then: drop}
      - {if: domain_guard, complaints: 2, window: 1d, pause: 2d, then: delay}
  trial:
    kind: marketing
    list: trial
    shadow: true
    rules:
      - {if: refused, then: drop}
      - {if: no_consent, then: drop}
  legacy:
    kind: marketing
    consent: not_required
    unsubscribe: "off"
  transactional: {kind: transactional}
classify:
  - {sender: "*@news.example.com", stream: marketing}
  - {sender: "*@trial.example.com", stream: trial}
  - {sender: "*@legacy.example.com", stream: legacy}
  - {sender: "*@shop.example.com", stream: transactional}
"""


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    return policy_dir(tmp_path, POLICY)


def redis_now(redis_url: str) -> float:
    """Redis's own clock: audit stream ids carry it (the suite may run under faketime)."""
    with redis.Redis.from_url(redis_url) as r:
        seconds, micros = r.time()
    return seconds + micros / 1e6


@pytest.fixture
def start(redis_url: str) -> float:
    # The history starts ten days before Redis's now, whatever this process's clock says.
    return redis_now(redis_url) - 10 * 86400


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, policies: Path, tmp_path: Path,
         start: float) -> Iterator[HeedThread]:
    from proxy.dkim import generate_key

    key, _ = generate_key("news.example.com", "s1", tmp_path / "keys")
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port, policies=policies,
                             http={"listen": f"127.0.0.1:{free_port()}"})
    settings = replace(settings, dkim=tuple(DkimKey(d, "s1", key) for d in (
        "news.example.com", "trial.example.com", "legacy.example.com")))
    h = HeedThread(settings, ManualClock(start)).start()
    yield h
    h.stop()


def one_click(h: HeedThread, address: str, list_name: str, body: bytes = b"") -> None:
    assert h.heed is not None and h.settings.http.listen is not None
    host, port = h.settings.http.listen
    token = h.heed.tokens.make(address, list_name)
    request = urllib.request.Request(f"http://{host}:{port}/u/{token}", method="POST",
                                     data=b"List-Unsubscribe=One-Click" + body)
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200


def history(h: HeedThread, start: float) -> None:
    """Day 0 of the constructed history; times relative to ``start``."""
    assert h.heed is not None
    state, clock = h.heed.state, h.clock
    assert isinstance(clock, ManualClock)
    everyone = ["a@x.org", "b@x.org", "c@y.org", "d@y.org", "e@y.org", "f@z.org"]
    for a in everyone:
        h.call(state.grant(a, "marketing", source="test"))
    for a in ("a@x.org", "b@x.org", "h@x.org"):
        h.call(state.grant(a, "trial", source="test"))
    assert send(h, "offers@news.example.com", everyone)[0] == {}  # 6 delivered
    send(h, "old@legacy.example.com", ["f@z.org"])  # delivered without a one-click
    clock.set(start + 1 * HOUR)
    one_click(h, "b@x.org", "marketing")
    clock.set(start + 2 * HOUR)
    h.call(state.refuse("c@y.org", "complaint", channel="arf"))
    h.call(state.refuse("c@y.org", "complaint", channel="api"))  # the same person again
    clock.set(start + 2.5 * HOUR)
    assert send(h, "offers@news.example.com", ["e@y.org"])[0] == {}  # one complaint: not yet
    clock.set(start + 3 * HOUR)
    h.call(state.refuse("d@y.org", "complaint", channel="arf"))
    clock.set(start + 4 * HOUR)
    refused, reply = send(h, "offers@news.example.com", everyone)
    assert sorted(refused) == ["b@x.org", "c@y.org", "d@y.org"] and reply.startswith("250")
    clock.set(start + 4.5 * HOUR)
    h.call(state.refuse("h@x.org", "unsubscribe", list="trial", channel="mailto"))
    clock.set(start + 5 * HOUR)
    assert send(h, "try@trial.example.com", ["a@x.org", "g@x.org", "h@x.org"])[0] == {}
    clock.set(start + 5.5 * HOUR)
    one_click(h, "a@x.org", "trial", b"&via=page")  # the confirm page's button: 2 clicks


def report(redis_url: str, policies: Path, fmt: str,
           capsys: pytest.CaptureFixture[str]) -> str:
    # `heed report` measures --since back from the system clock; run it on the clock
    # Redis keeps (outside libfaketime, when the suite runs under it).
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "report", "--redis", redis_url, "--policies",
         str(policies), "--since", "30d", "--format", fmt],
        env=dict(unfaked_env(), PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_report_figures_for_a_constructed_history(
        heed: HeedThread, upstream: Upstream, redis_url: str, policies: Path, start: float,
        capsys: pytest.CaptureFixture[str]) -> None:
    history(heed, start)
    # e@y.org was held by the domain guard; everything else that was allowed went out,
    # the shadow stream's would-drops (g: no consent, h: refused) included.
    assert sorted(upstream.recipients()).count("e@y.org") == 2
    assert {"g@x.org", "h@x.org"} <= set(upstream.recipients())
    data = json.loads(report(redis_url, policies, "json", capsys))
    refusals = data["refusals"]
    assert refusals["received"] == {"unsubscribe": 3, "complaint": 3}
    assert (refusals["tracked"], refusals["honoured"]) == (5, 4)
    [miss] = refusals["not_honoured"]
    assert (miss["address"], miss["scope"], miss["shadow"]) == ("h@x.org", "trial", True)
    # Mail went to h 30 minutes after the no (a shadow stream delivers: that is the point).
    assert refusals["time_to_effect_seconds"] == {"max": 1800.0, "p99": 1800.0}
    assert refusals["by_channel"] == {"one-click": 1, "arf": 2, "mailto": 1, "page": 1}
    assert refusals["later_mail_stopped"] == 3
    assert data["clicks_to_leave"] == {"1": 2, "2": 1}
    # 6 + 1 legacy + 1 + 2 + 3 trial delivered; only the legacy copy lacked a signed one-click.
    assert data["one_click"] == {"delivered_marketing": 13, "signed": 12,
                                 "share": round(12 / 13, 6)}
    complaints = data["complaints"]
    assert (complaints["total"], complaints["rate"]) == (2, round(2 / 13, 6))
    y = next(d for d in complaints["by_domain"] if d["domain"] == "y.org")
    assert (y["complaints"], y["delivered"], y["status"]) == (2, 4, "above 0.3 %")
    assert data["lifecycle"] == {"marketing": {"active": 3, "refused": 3},
                                 "trial": {"active": 1, "refused": 2},
                                 "legacy": {"active": 6, "refused": 2}}
    assert data["drops"] == {"marketing": {"refused": 3}}
    assert data["delays"] == {"marketing": {"domain_guard": 1}}
    assert data["shadow"] == {"trial": {"delivered": 2, "would": {
        "would drop: no_consent": 1, "would drop: refused": 1}}}
    assert data["domain_guard"] == {"y.org": {"held": 1, "complaints_on_record": 2}}

    text = report(redis_url, policies, "text", capsys)
    assert "Refusals honoured:            4 of 5" in text
    assert "Clicks to leave:              2 took 1 click, 1 took 2 clicks" in text
    assert "NOT honoured: h@x.org (trial)" in text and "in shadow mode" in text
    assert "y.org paused: held 1 (complaints on record: 2)" in text
    assert "trial            would drop: no_consent" in text


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.svgs: list[dict[str, str | None]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(str(a["id"]))
        if tag == "svg":
            self.svgs.append(a)
        if tag != "meta":  # the one void element the page uses
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pass  # <rect .../>: opened and closed at once

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> does not close an open tag"


def test_html_report_has_accessible_charts(heed: HeedThread, redis_url: str, policies: Path,
                                           start: float,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    history(heed, start)
    page = report(redis_url, policies, "html", capsys)
    tags = _Tags()
    tags.feed(page)
    assert tags.open == []  # every element closed: the page parses
    assert len(tags.svgs) >= 8 and "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    for s in tags.svgs:  # each chart names its title and its text alternative
        assert s["role"] == "img"
        assert set(str(s["aria-labelledby"]).split()) <= tags.ids
    for chunk in page.split("<svg")[1:]:  # and each chart is well-formed XML
        ET.fromstring("<svg" + chunk.split("</svg>")[0] + "</svg>")
    assert "Complaint rate per receiving domain" in page and "0.3 %" in page
    assert "y.org: 50.00 %" in page  # the chart's description carries its figures


async def test_the_trail_is_read_in_chunks_from_the_window_start(aredis: aioredis.Redis,
                                                                   keys: Keys) -> None:
    """2,345 entries in the window come back in order over three XRANGE pages of 1,000; an
    entry whose stream id is before the window is never read, one recorded too early is
    dropped."""
    from proxy.audit import Audit, AuditEntry

    seconds, micros = await aredis.time()
    now = seconds + micros / 1e6  # stream ids carry Redis's clock
    since = now - 86400
    audit = Audit(aredis, keys)
    old_id = f"{int((since - 2 * HOUR) * 1000)}-0"
    stale = AuditEntry(at=now - 60, kind="decision", recipient="old@x.org", outcome="delivered")
    await aredis.xadd(keys.audit, stale.to_fields(), id=old_id)  # type: ignore[arg-type]
    early = AuditEntry(at=since - 60, kind="decision", recipient="early@x.org",
                       outcome="delivered")
    entries = [AuditEntry(at=now - 30, kind="decision", recipient=f"p{i}@x.org",
                          outcome="delivered") for i in range(2345)]
    await audit.record([early, *entries])
    got = [page async for page in pages(aredis, keys, since, chunk=1000)]
    assert [len(page) for page in got] == [1000, 1000, 346]  # the early one is read...
    seen = [f[5].decode() for page in got for _id, f in page if since <= float(f[1]) <= now]
    assert seen == [e.recipient for e in entries]  # ...and left out by its time
    assert CHUNK >= 1000


def test_report_says_when_its_window_reaches_past_the_oldest_entry_kept(
        heed: HeedThread, redis_url: str, policies: Path, start: float,
        capsys: pytest.CaptureFixture[str]) -> None:
    history(heed, start)  # the trail starts ten days ago

    def run(since: str, fmt: str) -> str:
        capsys.readouterr()
        assert main(["report", "--redis", redis_url, "--policies", str(policies),
                     "--since", since, "--format", fmt]) == 0
        return capsys.readouterr().out

    text = run("30d", "text")
    assert "Note: The audit trail's oldest entry kept is from " in text
    assert "audit.max_entries / audit.max_age" in text
    assert "oldest entry kept is from" in run("30d", "html")
    window = json.loads(run("30d", "json"))["window"]
    assert window["covered_whole"] is False
    assert window["oldest_audit_entry_kept"] == time.strftime("%Y-%m-%d %H:%M UTC",
                                                              time.gmtime(start))
    assert "oldest entry kept" not in run("5d", "text")  # within what is kept: no note
    assert json.loads(run("5d", "json"))["window"]["covered_whole"] is True
