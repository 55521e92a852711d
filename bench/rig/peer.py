"""What a sysadmin would build instead of heed: Postfix + the OpenDKIM milter + a postfwd policy.

A private Postfix (bench/rig/postfix.py) with Debian's ``opendkim`` as its milter
(RSA-2048, relaxed/simple, signing ``news.example.com``) and Debian's ``postfwd2`` as
its ``check_policy_service``, asked once per RCPT, with one rate rule per sender that
never fires. Everything lives in one temp dir (Postfix's queue and log, the milter's
key, config and pid, postfwd's rules, sockets and saved counters) and is stopped on
exit, Ctrl-C or SIGTERM. ``verify()`` proves the parts work: a message routed to a
capture server arrives with a signature that dkimpy verifies against the key; after
``stop()``, ``policy_requests()`` is postfwd's own rate counter (one per request).
"""

from __future__ import annotations

import email
import email.utils
import os
import shutil
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import dkim
from aiosmtpd.controller import Controller

from bench.rig.load import SENDER
from bench.rig.postfix import PostfixRelay, PostfixUnavailable
from bench.rig.procs import descendants, on_cleanup, spawn
from proxy.embedded_redis import free_port, wait_port

DOMAIN, SELECTOR = "news.example.com", "s1"
VERIFY_DOMAIN = "verify.bench"  # routed by transport_maps to the capture server, not the sink
# The one rule: a per-sender rate limit far above anything a run sends, so postfwd
# counts every request and answers DUNNO (RFC-less Postfix policy protocol).
RULE = "id=RATE01; action=rate(sender/100000000/3600/450 4.7.1 sender rate exceeded)\n"


class _Capture:
    """aiosmtpd handler keeping the raw bytes of every message it is given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(envelope.original_content or envelope.content)
        self.arrived.set()
        return "250 OK"


class Peer:
    """Postfix + OpenDKIM milter + postfwd policy service, relaying to the sink."""

    name = "peer: Postfix+OpenDKIM+postfwd"
    copies_per_recipient = False

    def __init__(self, base: Path, upstream_port: int) -> None:
        for tool in ("opendkim", "opendkim-genkey", "postfwd2"):
            if not shutil.which(tool):
                raise PostfixUnavailable(f"{tool} is not installed (Debian packages opendkim, "
                                         "opendkim-tools, postfwd)")
        self.base = base
        base.mkdir(parents=True)
        base.parent.chmod(0o755)  # Postfix's and postfwd's users must reach their dirs
        self._capture = _Capture()
        self._controller = Controller(self._capture, hostname="127.0.0.1", port=free_port())
        self._controller.start()
        on_cleanup(self._controller_stop)
        self.dns_txt = self._dkim_key()
        self._opendkim_stop: Any = lambda: None
        try:
            self._start_opendkim()
            self._start_postfwd()
            self._start_postfix(upstream_port)
        except BaseException:
            self.stop()
            raise
        self.port = self.postfix.port

    def _start_postfix(self, upstream_port: int) -> None:
        self.postfix = PostfixRelay(self.base / "postfix", upstream_port, main_extra=f"""
smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:{self.policy_port}
smtpd_milters = inet:127.0.0.1:{self.milter_port}
non_smtpd_milters = $smtpd_milters
milter_default_action = tempfail
transport_maps = inline:{{{VERIFY_DOMAIN}=relay:[127.0.0.1]:{self._controller.port}}}
""")

    # ----- the parts

    def _dkim_key(self) -> bytes:
        """An RSA-2048 key made by opendkim-genkey; returns its DNS TXT record's text."""
        keys = self.base / "keys"
        keys.mkdir()
        subprocess.run(["opendkim-genkey", "-b", "2048", "-d", DOMAIN, "-s", SELECTOR,
                        "-D", str(keys)], check=True, capture_output=True, timeout=60)
        # opendkim refuses a key others can read, or one its user cannot.
        for p in (keys, keys / f"{SELECTOR}.private"):
            shutil.chown(p, user="opendkim", group="opendkim")
        keys.chmod(0o700)
        txt = (keys / f"{SELECTOR}.txt").read_text()
        return "".join(txt[txt.index("(") + 1:txt.rindex(")")].split('"')[1::2]).encode()

    def _start_opendkim(self) -> None:
        self.milter_port = free_port()
        conf = self.base / "opendkim.conf"
        # Debian's /etc/opendkim.conf, signing only, with its socket, key and pid here.
        # RequireSafeKeys no: the key is 0600 and opendkim's own, but its path is under
        # /tmp, which others may write (sticky), and opendkim refuses any such path.
        conf.write_text(f"""Syslog no
Canonicalization relaxed/simple
OversignHeaders From
SignatureAlgorithm rsa-sha256
UserID opendkim
UMask 007
Mode s
Domain {DOMAIN}
Selector {SELECTOR}
KeyFile {self.base / 'keys' / f'{SELECTOR}.private'}
Socket inet:{self.milter_port}@127.0.0.1
PidFile {self.base / 'opendkim.pid'}
RequireSafeKeys no
""")
        with open(self.base / "opendkim.log", "wb") as log:
            self._opendkim, self._opendkim_stop = spawn(
                ["opendkim", "-f", "-x", str(conf)], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.milter_port, timeout=20)
        except TimeoutError:
            self._opendkim_stop()
            raise PostfixUnavailable("opendkim did not start: " + (
                self.base / "opendkim.log").read_text(errors="replace")[-500:]) from None

    def _start_postfwd(self) -> None:
        self.policy_port = free_port()
        d = self.base / "postfwd"
        d.mkdir()
        shutil.chown(d, user="nobody")  # postfwd2 drops to nobody, then writes here
        (d / "rules.cf").write_text(RULE)
        self._postfwd_pid = d / "postfwd.pid"
        self._rates = d / "rates"
        on_cleanup(self._postfwd_stop)
        # postfwd2 always daemonizes (its --nodaemon is a one-shot filter): the master
        # leads its own session, so stopping it means its process group, by its pid file.
        r = subprocess.run(["postfwd2", "-f", str(d / "rules.cf"), "-i", "127.0.0.1",
                            "-p", str(self.policy_port), "--cache_port", str(d / "cache.sock"),
                            "--pidfile", str(self._postfwd_pid), "-u", "nobody",
                            "-g", "nogroup", "-n", "--noidlestats",
                            "--save_rates", str(self._rates)],
                           capture_output=True, text=True, timeout=30)
        try:
            wait_port(self.policy_port, timeout=20)
        except TimeoutError:
            raise PostfixUnavailable(f"postfwd2 did not start: {r.stdout}{r.stderr}") from None
        # Read now: the pid file goes with the temp dir, perhaps before the cleanup runs.
        self._postfwd_master_pid = self._postfwd_master()

    def _postfwd_master(self) -> int | None:
        if getattr(self, "_postfwd_master_pid", None):
            return self._postfwd_master_pid
        if not hasattr(self, "_postfwd_pid"):
            return None
        try:
            return int(self._postfwd_pid.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _postfwd_stop(self) -> None:
        pid = self._postfwd_master()
        if pid is None:
            return
        self._postfwd_master_pid = None
        self._postfwd_pid = Path("/nonexistent")  # stopped: stop once
        try:  # TERM to the master: it saves its rate counters (--save_rates) and ends
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        try:  # children left behind
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _controller_stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None  # type: ignore[assignment]

    # ----- what the bench reads

    def verify(self, timeout: float = 20.0) -> str:
        """Send one message through the peer to the capture server and verify its DKIM
        signature with dkimpy against the key's TXT record. Raises if unsigned or bad."""
        n = len(self._capture.messages)
        self._capture.arrived.clear()
        msg = (f"From: <{SENDER}>\r\nTo: <check@{VERIFY_DOMAIN}>\r\nSubject: peer check\r\n"
               f"Date: {email.utils.formatdate()}\r\nMessage-ID: {email.utils.make_msgid()}"
               f"\r\n\r\nsigned by the milter?\r\n").encode()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=timeout) as s:
            s.sendmail(SENDER, [f"check@{VERIFY_DOMAIN}"], msg)
        deadline = time.monotonic() + timeout
        while len(self._capture.messages) <= n and time.monotonic() < deadline:
            self._capture.arrived.wait(0.2)
        if len(self._capture.messages) <= n:
            raise RuntimeError("peer check: nothing arrived at the capture server; "
                               + " | ".join(self.postfix.problems()))
        return self.check_signature(self._capture.messages[-1])

    def check_signature(self, data: bytes) -> str:
        """dkimpy's verdict on a message the peer signed, with the key's TXT record as DNS
        would give it; what it found, or RuntimeError."""
        sig = email.message_from_bytes(data).get("DKIM-Signature")
        if not sig:
            raise RuntimeError("peer check: the message arrived without a DKIM-Signature")

        def dns(name: bytes, timeout: int = 5) -> bytes:
            return self.dns_txt if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else b""

        if not dkim.verify(data, dnsfunc=dns):
            raise RuntimeError(f"peer check: dkimpy did not verify {sig[:200]}")
        tags = dict(t.strip().split("=", 1) for t in "".join(str(sig).split()).split(";")
                    if "=" in t)
        return (f"DKIM verified by dkimpy (d={tags.get('d')}, s={tags.get('s')}, "
                f"a={tags.get('a')}, c={tags.get('c')}, RSA-2048)")

    def policy_requests(self) -> int:
        """postfwd's request count for the bench sender, from the counters it saved on stop."""
        if not self._rates.exists():
            return 0
        out = subprocess.run(
            ["perl", "-MStorable", "-e", 'my $r = retrieve($ARGV[0]); my $n = 0; '
             'for my $item (values %$r) { for my $rule (@{$item->{list} || []}) '
             '{ $n += $item->{$rule}{count}[0] } } print $n', str(self._rates)],
            capture_output=True, text=True, timeout=30)
        return int(out.stdout or 0)

    def pids(self) -> list[int]:
        master = self._postfwd_master()
        fwd = [master, *descendants(master)] if master else []
        return [*self.postfix.pids(), self._opendkim.pid, *fwd]

    def sent(self) -> int:
        return self.postfix.sent()

    def problems(self) -> list[str]:
        return self.postfix.problems()

    def version(self) -> str:
        def first(cmd: list[str]) -> str:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]
        return (f"opendkim {first(['dpkg-query', '-W', '-f', '${Version}', 'opendkim'])}, "
                f"postfwd {first(['dpkg-query', '-W', '-f', '${Version}', 'postfwd'])}")

    def stop(self) -> None:
        if hasattr(self, "postfix"):
            self.postfix.stop()
        self._opendkim_stop()
        self._postfwd_stop()
        self._controller_stop()
