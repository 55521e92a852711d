"""The simple targets: smtp-sink (the receiver and the ceiling) and the aiosmtpd pass-through."""

from __future__ import annotations

import getpass
import os
import re
import subprocess
import sys
from pathlib import Path

from bench.rig.procs import ROOT, spawn
from proxy.embedded_redis import free_port, wait_port


class Sink:
    """smtp-sink with its running counter (-c) going to a file we can read at any time."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.path = workdir / f"sink-{self.port}.out"
        # A file, not a pipe: a pipe nobody reads would fill and stall the sink.
        with open(self.path, "wb") as out:
            self.proc, self._stop = spawn(
                ["smtp-sink", "-c", "-u", getpass.getuser(), f"127.0.0.1:{self.port}", "1000"],
                stdout=out, stderr=subprocess.STDOUT)
        wait_port(self.port)

    def count(self) -> int:
        """Messages received so far ("." seen), from the last counter line."""
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 200))
            counts = re.findall(rb"mesg=(\d+)", f.read())
        return int(counts[-1]) if counts else 0

    def pids(self) -> list[int]:
        return [self.proc.pid]

    def stop(self) -> int:
        self._stop()
        return self.count()


class PlainRelay:
    """bench/plain_relay.py: aiosmtpd in, a pool of aiosmtplib connections out."""

    name = "plain relay (aiosmtpd)"
    module = "bench.plain_relay"
    copies_per_recipient = False

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc, self.stop = spawn([sys.executable, "-m", self.module, str(self.port),
                                     str(upstream_port)], env=env, cwd=ROOT)
        wait_port(self.port)

    def pids(self) -> list[int]:
        return [self.proc.pid]



class SigningRelay(PlainRelay):
    """bench/signing_relay.py: the floor under heed, one DKIM-signed copy per recipient."""

    name = "per-copy signing relay (aiosmtpd)"
    module = "bench.signing_relay"
    copies_per_recipient = True
