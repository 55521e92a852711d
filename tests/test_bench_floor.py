"""bench/compare.py's floor, for real: bench/signing_relay.py as a process.

The per-copy signing relay is what heed would be with its checks and records free;
the benchmark's argument rests on it doing the per-recipient work for real: one copy
per recipient, each with its own one-click URI, each DKIM signature verifying
(dkimpy, with the relay's own new key), the one-click fields signed.
"""

from __future__ import annotations

import base64
import os
import smtplib
import sys
import time
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization

from bench.rig.load import SENDER
from bench.rig.procs import ROOT, spawn
from proxy.embedded_redis import free_port, wait_port
from tests.conftest import Upstream


def test_floor_signs_one_copy_per_recipient(upstream: Upstream, tmp_path: Path) -> None:
    port = free_port()
    proc, stop = spawn([sys.executable, "-m", "bench.signing_relay", str(port),
                        str(upstream.port), "--key-dir", str(tmp_path)],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    try:
        wait_port(port)
        rcpts = [f"r{n}@example.org" for n in range(3)]
        msg = (f"From: <{SENDER}>\r\nTo: <r0@example.org>\r\nSubject: floor\r\n"
               "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <floor@bench>\r\n\r\n"
               "hello\r\n.leading dot\r\n").encode()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail(SENDER, rcpts, msg)
        deadline = time.monotonic() + 30
        while len(upstream.received) < len(rcpts) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop()
    assert sorted(r for m in upstream.received for r in m.recipients) == rcpts
    assert all(len(m.recipients) == 1 for m in upstream.received)  # a copy each
    (key_file,) = tmp_path.glob("*.pem")
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    uris = set()
    for m in upstream.received:
        assert dkim.verify(m.data, dnsfunc=lambda name, timeout=5: record), m.data[:400]
        head = m.data.split(b"\r\n\r\n", 1)[0]
        sig = head.split(b"DKIM-Signature:", 1)[1].split(b"\r\nList-", 1)[0]
        assert b"list-unsubscribe : list-unsubscribe-post" in sig.replace(b"\r\n\t", b"")
        uris.add(next(line for line in head.split(b"\r\n")
                      if line.startswith(b"List-Unsubscribe:")))
        assert b"\r\n\r\nhello\r\n.leading dot\r\n" in m.data
    assert len(uris) == len(rcpts)  # each copy its own token
    assert proc.wait(timeout=10) is not None
