"""A private Postfix in a temp dir (own main.cf, master.cf, queue and log): the plain relay."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench.rig.procs import descendants, on_cleanup
from proxy.embedded_redis import free_port, wait_port


class PostfixUnavailable(Exception):
    pass


class PostfixRelay:
    """A private Postfix instance (own config, queue and log in a temp dir) relaying to the sink."""

    name = "plain relay (Postfix)"
    copies_per_recipient = False

    def __init__(self, base: Path, upstream_port: int, *, main_extra: str = "",
                 master_extra: str = "") -> None:
        """The ``*_extra`` texts are appended to main.cf and master.cf (tests/test_postfix.py)."""
        if not shutil.which("postfix") or not shutil.which("postconf"):
            raise PostfixUnavailable("postfix is not installed (Debian package postfix)")
        if os.geteuid() != 0:
            raise PostfixUnavailable("a private Postfix instance needs root (master runs as root)")
        self.base = base
        self.port = free_port()
        self.conf = base / "conf"
        queue, data = base / "queue", base / "data"
        for d in (self.conf, queue, data):
            d.mkdir(parents=True)
        # The postfix user must reach the queue: the temp dirs are 0700 by default.
        for d in (base.parent, base):
            d.chmod(0o755)
        shutil.chown(data, user="postfix")
        dirs = {k: subprocess.run(["postconf", "-d", "-h", k], capture_output=True, text=True,
                                  timeout=30).stdout.strip()
                for k in ("daemon_directory", "command_directory", "meta_directory",
                          "shlib_directory")}
        self.maillog = base / "maillog"
        (self.conf / "main.cf").write_text(f"""
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
daemon_directory = {dirs['daemon_directory']}
command_directory = {dirs['command_directory']}
meta_directory = {dirs['meta_directory']}
shlib_directory = {dirs['shlib_directory']}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relay.bench
mydomain = bench
myorigin = relay.bench
mydestination =
local_recipient_maps =
local_transport = error:no local delivery
alias_maps =
alias_database =
relayhost = [127.0.0.1]:{upstream_port}
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_tls_security_level = none
maillog_file_prefixes = {base}
maillog_file = {self.maillog}
syslog_name = postfix-bench
biff = no
{main_extra}
""")
        (self.conf / "master.cf").write_text(f"""
127.0.0.1:{self.port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
{master_extra}
""")
        self._stopped = False
        on_cleanup(self.stop)
        self._master: int | None = None
        out = self._postfix("start")
        try:
            wait_port(self.port, timeout=20)
            # Kept: `postfix stop` needs the config, which may go with the temp dir first.
            self._master = (self.pids() or [None])[0]
        except TimeoutError:
            log = self.maillog.read_text(errors="replace")[-800:] if self.maillog.exists() else ""
            self.stop()
            raise PostfixUnavailable(f"postfix did not start: {out.strip()} {log}") from None

    def _postfix(self, command: str) -> str:
        # `postfix` reports only to syslog/maillog unless stderr is a terminal: keep its output.
        r = subprocess.run(["postfix", "-c", str(self.conf), command], capture_output=True,
                           text=True, timeout=60)
        return r.stdout + r.stderr

    def version(self) -> str:
        return subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                              text=True, timeout=30).stdout.strip()

    def pids(self) -> list[int]:
        try:
            master = int((self.base / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        return [master, *descendants(master)]

    def sent(self) -> int:
        """Recipients Postfix logged as delivered to the sink."""
        if not self.maillog.exists():
            return 0
        return self.maillog.read_bytes().count(b"status=sent")

    def problems(self) -> list[str]:
        if not self.maillog.exists():
            return []
        return [line for line in self.maillog.read_text(errors="replace").splitlines()
                if re.search(r"status=(deferred|bounced)|fatal|panic|warning", line)][:5]

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        master = self._master
        if self.conf.exists():
            try:
                self._postfix("stop")
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 15
        while master and time.monotonic() < deadline:
            try:
                os.kill(master, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        if master:  # still running after `postfix stop` (or its config is gone already)
            try:
                os.killpg(master, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
