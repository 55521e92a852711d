"""DKIM test keys and independent verifiers: keys in a module's tmp dir, their DNS zone, dkimpy
with a local DNS function, and OpenDKIM's opendkim-testmsg in namespaces (fixtures via conftest)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from proxy.dkim import generate_key
from proxy.settings import DkimKey


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dkim")


@pytest.fixture(scope="module")
def rsa_key(keydir: Path) -> tuple[DkimKey, str]:
    path, record = generate_key("example.com", "s2048", keydir)
    return DkimKey("example.com", "s2048", path), record


@pytest.fixture(scope="module")
def ed_key(keydir: Path) -> tuple[DkimKey, str]:
    path, record = generate_key("example.com", "ed1", keydir, algorithm="ed25519")
    return DkimKey("example.com", "ed1", path, "ed25519-sha256"), record


def txt_value(record: str) -> str:
    """The TXT data a resolver hands back: the quoted strings joined."""
    return "".join(part.strip('"') for part in record.split(" IN TXT ", 1)[1].split('" "'))


@pytest.fixture(scope="module")
def zone(rsa_key: tuple[DkimKey, str], ed_key: tuple[DkimKey, str]) -> dict[str, str]:
    return {
        f"{key.selector}._domainkey.{key.domain}": txt_value(record)
        for key, record in (rsa_key, ed_key)
    }


def dkimpy_verify(message: bytes, zone: dict[str, str], idx: int = 0) -> bool:
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = zone.get(name.decode().rstrip("."))
        return value.encode() if value else None

    try:
        return bool(dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:  # what dkim.verify() does, for any signature index
        return False



# OpenDKIM resolves keys through the C library resolver, which only reads
# /etc/resolv.conf and only talks to port 53. So the check runs opendkim-testmsg
# in its own user, network and mount namespaces (unshare): there /etc/resolv.conf
# is bind-mounted to point at 127.0.0.1 and this tiny DNS server answers the TXT
# queries from the test zone. Nothing outside the namespaces changes.
Verifier = Callable[[bytes], tuple[int, str]]
DNS_AND_VERIFY = r'''
import fcntl, json, socket, struct, subprocess, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bring lo up (SIOCGIFFLAGS/SIOCSIFFLAGS)
ifreq = fcntl.ioctl(s, 0x8913, struct.pack("16sH14s", b"lo", 0, bytes(14)))
flags = struct.unpack("16sH", ifreq[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 1, bytes(14)))
zone = json.load(open(sys.argv[1]))
def answer(q):
    qid, qflags = struct.unpack(">HH", q[:4])
    i, labels = 12, []
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode()); i += 1 + q[i]
    qtype, question = struct.unpack(">H", q[i + 1:i + 3])[0], q[12:i + 5]
    txt = zone.get(".".join(labels).lower())
    rd = qflags & 0x0100
    if txt is None or qtype != 16:
        rcode = 3 if txt is None else 0  # NXDOMAIN, or no data of that type
        return struct.pack(">6H", qid, 0x8400 | rd | rcode, 1, 0, 0, 0) + question
    data = txt.encode()
    chunks = [data[j:j + 255] for j in range(0, len(data), 255)]
    rdata = b"".join(bytes((len(c),)) + c for c in chunks)
    rr = struct.pack(">HHHIH", 0xC00C, 16, 1, 60, len(rdata)) + rdata
    return struct.pack(">6H", qid, 0x8400 | rd, 1, 1, 0, 0) + question + rr
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 53))
def serve():
    while True:
        q, peer = sock.recvfrom(4096)
        sock.sendto(answer(q), peer)
threading.Thread(target=serve, daemon=True).start()
with open(sys.argv[2], "rb") as message:
    done = subprocess.run(["opendkim-testmsg"], stdin=message, capture_output=True, timeout=30)
sys.stdout.write(done.stdout.decode() + done.stderr.decode())
sys.exit(done.returncode)
'''


@pytest.fixture(scope="module")
def opendkim(tmp_path_factory: pytest.TempPathFactory, zone: dict) -> Verifier:
    """A function message -> (exit code, output) from opendkim-testmsg against the test zone."""
    if not (shutil.which("opendkim-testmsg") and shutil.which("unshare")):
        pytest.skip("opendkim-testmsg (Debian opendkim-tools) or unshare is not installed")
    work = tmp_path_factory.mktemp("opendkim")
    (work / "zone.json").write_text(json.dumps(zone))
    (work / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (work / "verify.py").write_text(DNS_AND_VERIFY)
    probe = subprocess.run(["unshare", "-r", "-n", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot create user/network/mount namespaces here, and opendkim-testmsg "
                    f"only asks the resolver of /etc/resolv.conf: {probe.stderr.decode().strip()}")

    def run(message: bytes) -> tuple[int, str]:
        (work / "message.eml").write_bytes(message)
        script = (f"mount --bind {work}/resolv.conf /etc/resolv.conf && exec {sys.executable} "
                  f"{work}/verify.py {work}/zone.json {work}/message.eml")
        done = subprocess.run(["unshare", "-r", "-n", "-m", "sh", "-c", script],
                              capture_output=True, timeout=60)
        return done.returncode, (done.stdout + done.stderr).decode()

    return run
