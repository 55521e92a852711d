"""A real authoritative DNS server (Debian's nsd) on loopback, serving the zones a test writes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from proxy.embedded_redis import free_port

NSD = shutil.which("nsd") or "/usr/sbin/nsd"


class Nsd:
    """``Nsd.start(dir, {"example.test": "zone text"})``; ``stop()`` ends it."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, work: Path) -> None:
        self.proc = proc
        self.port = port
        self.work = work

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    @classmethod
    def start(cls, work: Path, zones: dict[str, str]) -> Nsd:
        work.mkdir(parents=True, exist_ok=True)
        port = free_port()  # TCP; nsd takes the UDP port of the same number too
        conf = [
            "server:", f"  ip-address: 127.0.0.1@{port}", f"  port: {port}",
            '  username: ""', f'  zonesdir: "{work}"', f'  pidfile: "{work}/nsd.pid"',
            '  database: ""', f'  xfrdfile: "{work}/xfrd.state"',
            f'  zonelistfile: "{work}/zone.list"', f'  xfrdir: "{work}"',
            f'  logfile: "{work}/nsd.log"', "  server-count: 1", "  verbosity: 1",
            "remote-control:", "  control-enable: no",
        ]
        for name, text in zones.items():
            (work / f"{name}.zone").write_text(text)
            conf += ["zone:", f"  name: {name}", f"  zonefile: {name}.zone"]
        (work / "nsd.conf").write_text("\n".join(conf) + "\n")
        check = subprocess.run(["nsd-checkconf", str(work / "nsd.conf")], capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"nsd.conf: {check.stderr.decode()}")
        # Its log goes to nsd.log (logfile above): no pipe left open behind it.
        proc = subprocess.Popen([NSD, "-d", "-c", str(work / "nsd.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = cls(proc, port, work)
        server._wait(next(iter(zones)))
        return server

    def _wait(self, zone: str, timeout: float = 20.0) -> None:
        """Until nsd answers SOA for ``zone`` over UDP (it has read its zones)."""
        query = (b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
                 + b"".join(bytes((len(p),)) + p.encode() for p in zone.split(".")) + b"\x00"
                 + b"\x00\x06\x00\x01")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.work / "nsd.log"
                raise RuntimeError(f"nsd exited: {log.read_text() if log.exists() else ''}")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.3)
                try:
                    s.sendto(query, ("127.0.0.1", self.port))
                    reply = s.recv(512)
                    if reply[:2] == b"\x12\x34" and reply[3] & 0x0F == 0 and reply[7] > 0:
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"nsd did not answer for {zone} within {timeout:g}s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
