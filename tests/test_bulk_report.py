"""`heed report` and `heed explain`: Gmail and Workspace shown blind, body-link share, pauses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.clock import ManualClock
from proxy.dkim import generate_key
from proxy.settings import DkimKey
from tests.conftest import Upstream
from tests.dns_server import Nsd
from tests.harness import HeedThread, make_settings, policy_dir
from tests.test_providers import ZONE

POLICY = """
version: bulk-report
default_stream: marketing
streams:
  marketing:
    kind: marketing
    consent: not_required
    body_unsubscribe: insert
    rules:
      - {if: provider_guard, pause: 1h, then: delay}
classify:
  - {sender: "*@news.example.com", stream: marketing}
"""
WITH_LINK = "Hello. Unsubscribe: https://news.example.com/leave\r\n"
WITHOUT = "Hello, no link here.\r\n"


@pytest.fixture
def nsd(tmp_path: Path) -> Iterator[Nsd]:
    server = Nsd.start(tmp_path / "nsd", {"workspace.test": ZONE.format(
        name="workspace.test", records="@ IN MX 1 aspmx.l.google.com.")})
    yield server
    server.stop()


@pytest.fixture
def heed(redis_url: str, upstream: Upstream, tmp_path: Path) -> Iterator[HeedThread]:
    key, _ = generate_key("example.com", "s1", tmp_path / "keys")
    settings = make_settings(redis_url=redis_url, upstream_port=upstream.port,
                             policies=policy_dir(tmp_path, POLICY))
    settings = replace(settings, dkim=(DkimKey("example.com", "s1", key),))
    h = HeedThread(settings, ManualClock(time.time() - 3600)).start()
    yield h
    h.stop()


def mail(h: HeedThread, to: str, body: str) -> None:
    with h.smtp() as c:
        c.sendmail("offers@news.example.com", [to],
                   f"From: offers@news.example.com\r\nTo: {to}\r\nSubject: News\r\nDate: Fri, "
                   f"15 Jan 2027 12:00:00 +0000\r\n\r\n{body}")


def test_report_shows_gmail_and_workspace_blind_and_the_body_link_share(
        heed: HeedThread, upstream: Upstream, nsd: Nsd, redis_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    mail(heed, "ann@gmail.com", WITH_LINK)
    mail(heed, "bo@workspace.test", WITHOUT)  # heed's footer goes in
    mail(heed, "cy@yahoo.com", WITH_LINK)
    assert len(upstream.received) == 3
    assert b"/u/" in upstream.received[1].data.split(b"\r\n\r\n", 1)[1]
    assert heed.heed is not None
    heed.call(heed.heed.providers.record(
        "yahoo", "Yahoo TSS04/TS0x: deferred for volume or complaints (DSN: 421 4.7.0 "
        "[TSS04])", heed.clock.now()))
    monkeypatch.setenv("HEED_DNS__NAMESERVERS", f"[\"{nsd.nameserver}\"]")
    policies = str(tmp_path / "policies")
    capsys.readouterr()
    assert main(["report", "--redis", redis_url, "--policies", policies, "--format",
                 "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_domain = {d["domain"]: d for d in data["complaints"]["by_domain"]}
    for blind in ("gmail.com", "workspace.test"):
        assert by_domain[blind]["status"].startswith("complaints not reported per message")
        assert by_domain[blind]["rate"] is None and not by_domain[blind]["per_message_feedback"]
    assert by_domain["yahoo.com"]["status"] == "below 0.1 %"
    assert data["body_link"] == {"delivered_marketing": 3, "yes": 2, "inserted": 1,
                                 "share": 1.0}
    assert [p["provider"] for p in data["provider_guard"]] == ["yahoo"]
    assert "TSS04" in data["provider_guard"][0]["cause"]
    assert main(["report", "--redis", redis_url, "--policies", policies]) == 0
    text = capsys.readouterr().out
    assert "gmail.com" in text and "complaints not reported per message" in text
    assert "0.00 %" not in next(line for line in text.splitlines() if "gmail.com" in line)
    assert "yahoo paused" in text and "Body unsubscribe link on delivered marketing: 3 of 3" \
        in text
    assert main(["report", "--redis", redis_url, "--policies", policies, "--format",
                 "html"]) == 0
    assert "complaints not reported per message" in capsys.readouterr().out
    assert main(["explain", "ann@gmail.com", "--redis", redis_url, "--policies",
                 policies]) == 0
    assert "complaints not reported per message" in capsys.readouterr().out
    assert main(["explain", "cy@yahoo.com", "--redis", redis_url, "--policies",
                 policies]) == 0
    assert "complaints reported per message" in capsys.readouterr().out
