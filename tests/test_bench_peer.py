"""bench/compare.py's peer, for real: Postfix + OpenDKIM milter + postfwd policy service.

A smoke test of the assembled peer the benchmark measures heed against (bench/rig/peer.py):
it starts from a temp dir, a message with three recipients arrives at the upstream
signed (dkimpy verifies it with the key), postfwd was asked once per recipient (its own
counter), and nothing of it runs after stop(). About 10 s: one Postfix start and stop.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.rig.load import SENDER
from bench.rig.peer import Peer
from bench.rig.procs import descendants
from tests.conftest import Upstream

TOOLS = ("postfix", "opendkim", "opendkim-genkey", "postfwd2", "perl")


@pytest.fixture
def base() -> Iterator[Path]:
    # Not under pytest's tmp_path: Postfix's, OpenDKIM's and postfwd's users must reach
    # their folders, and pytest's are 0700 root.
    folder = Path(tempfile.mkdtemp(prefix="heed-peer-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_peer_signs_asks_postfwd_per_recipient_and_stops(upstream: Upstream,
                                                         base: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root (its master runs as root)")
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian postfix, opendkim, "
                    "opendkim-tools, postfwd; .ci/run installs them)")
    peer = Peer(base / "peer", upstream.port)
    try:
        pids = peer.pids()
        assert "DKIM verified" in peer.verify()  # through the capture server
        rcpts = [f"r{n}@example.org" for n in range(3)]
        msg = (f"From: <{SENDER}>\r\nTo: <r0@example.org>\r\nSubject: smoke\r\n"
               "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <smoke@bench>\r\n\r\n"
               "hello\r\n").encode()
        with smtplib.SMTP("127.0.0.1", peer.port, timeout=30) as s:
            s.sendmail(SENDER, rcpts, msg)
        deadline = time.monotonic() + 30
        while not upstream.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert upstream.received, f"nothing arrived: {peer.problems()}"
        got = upstream.received[0]
        assert sorted(got.recipients) == rcpts  # one transaction, one signature for all
        verdict = peer.check_signature(got.data)
        assert "c=relaxed/simple" in verdict and "a=rsa-sha256" in verdict
    finally:
        peer.stop()
    assert peer.policy_requests() == 1 + len(rcpts)  # verify()'s and one per RCPT
    alive = [p for p in [*pids, *descendants(pids[0])] if _running(p)]
    assert not alive, f"still running after stop(): {alive}"


def _running(pid: int) -> bool:
    """Alive and not a zombie (the file closed at once: a ResourceWarning is an error here)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone meanwhile
        return False
