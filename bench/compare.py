"""heed side by side with plain relays and the smtp-sink ceiling, in one run.

    python bench/compare.py [--messages 5000] [--sessions 20] [--size 4096] [--rcpts 1,5]
                            [--rate 200] [--seconds 10] [--workers 1] [--quick]

(``python -m bench.compare`` works too.)

Load: Postfix's smtp-source (``-d -N``: persistent sessions, one distinct recipient
address per recipient). Receiver: Postfix's smtp-sink; its own running counter
(``-c``, written to a file) gives the messages that arrived, and the rate is the
tool's messages divided by the time from the first connection to the last arrival.
Targets, each fed the same load into a fresh sink:

1. smtp-sink direct (the ceiling);
2. plain relays: a minimal aiosmtpd pass-through (bench/plain_relay.py, 250 only
   after the sink accepted) and, when Postfix is installed and we are root, a
   private Postfix instance in a temp dir (relayhost = the sink, 250 once queued);
3. heed with everything on (see ``Heed``).

Then the latency each adds at a fixed offered rate, measured by a small aiosmtplib
client (one message per transaction over persistent sessions, timed from the
moment it was due to the DATA reply). Everything binds to 127.0.0.1; every wait is
bounded; every child process is stopped on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import dataclasses
import getpass
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/compare.py` as well as `python -m bench.compare`
    sys.path.insert(0, str(ROOT))

import aiosmtplib  # noqa: E402
import redis  # noqa: E402
import yaml  # noqa: E402

from proxy.embedded_redis import free_port, wait_port  # noqa: E402

SENDER = "offers@news.example.com"  # *@news.example.com: the shipped policy's marketing sender
HUGE = 1_000_000  # cap limits in the bench policy: looked up, never reached

# ---------------------------------------------------------------------------
# child processes: every one is registered and stopped on any exit

_cleanups: list[Callable[[], None]] = []


def on_cleanup(fn: Callable[[], None]) -> Callable[[], None]:
    _cleanups.append(fn)
    return fn


def cleanup_all() -> None:
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - keep cleaning up the rest
            print(f"cleanup: {exc!r}", file=sys.stderr)


def _stop_group(proc: subprocess.Popen[Any], grace: float = 15.0) -> None:
    """SIGTERM the child (its own process group), then SIGKILL the whole group."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:  # anything the child left behind in its group (heed workers, its redis-server)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def spawn(args: list[str], **kw: Any) -> tuple[subprocess.Popen[Any], Callable[[], None]]:
    proc = subprocess.Popen(args, start_new_session=True, **kw)
    done = False

    def stop() -> None:
        nonlocal done
        if not done:
            done = True
            _stop_group(proc)
            if stop in _cleanups:
                _cleanups.remove(stop)

    on_cleanup(stop)
    return proc, stop


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------
# processes under test


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
    copies_per_recipient = False

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc, self.stop = spawn([sys.executable, "-m", "bench.plain_relay", str(self.port),
                                     str(upstream_port)], env=env, cwd=ROOT)
        wait_port(self.port)

    def pids(self) -> list[int]:
        return [self.proc.pid]


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
        out = self._postfix("start")
        try:
            wait_port(self.port, timeout=20)
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
        try:
            self._postfix("stop")
        except subprocess.TimeoutExpired:
            pass
        pid_file = self.base / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + 15
        while pid_file.exists() and time.monotonic() < deadline:
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 0)
            except (ValueError, IndexError, ProcessLookupError, FileNotFoundError):
                break
            time.sleep(0.1)
        else:
            if pid_file.exists():  # still running after `postfix stop`
                try:
                    self._postfix("abort")
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
                except (ValueError, IndexError, OSError, subprocess.TimeoutExpired):
                    pass


def bench_policies(src: Path, dst: Path) -> list[str]:
    """The shipped policy files with every marketing rule kept, but none holding bench mail back.

    Caps keep their place and are looked up, with limits no run reaches; quiet hours
    keep their place, zone and recipient_zone, with a window that starts 6 hours
    from now. Returns what was changed, for the output.
    """
    dst.mkdir()
    changes: list[str] = []
    for f in sorted(src.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        for sname, stream in (doc.get("streams") or {}).items():
            for rule in stream.get("rules") or []:
                kind = rule.get("if")
                if kind == "cap":
                    for k in [k for k in rule if k.startswith("per_")]:
                        changes.append(f"{sname} cap {k}: {rule[k]} -> {HUGE}")
                        rule[k] = HUGE
                elif kind == "quiet_hours":
                    now = datetime.now(ZoneInfo(rule.get("zone", "UTC")))
                    new = ((now + timedelta(hours=6)).strftime("%H:%M"),
                           (now + timedelta(hours=7)).strftime("%H:%M"))
                    changes.append(f"{sname} quiet_hours {rule['start']}-{rule['end']} -> "
                                   f"{new[0]}-{new[1]} {rule.get('zone', 'UTC')}")
                    rule["start"], rule["end"] = new
        (dst / f.name).write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return changes


class Heed:
    """`heed serve` in a temp site: embedded Redis (appendfsync always), the shipped
    policies made bench-safe, consent imported for every address, an RSA-2048 DKIM key."""

    name = "heed, everything on"
    copies_per_recipient = True  # one copy per recipient (its own token and signature)

    def __init__(self, site: Path, upstream_port: int, addresses: list[str],
                 workers: int = 1, smtp_options: str = "", redis_options: str = "") -> None:
        self.site = site
        self.port = free_port()
        site.mkdir()
        self.policy_changes = bench_policies(ROOT / "policies", site / "policies")
        (site / "config").mkdir()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        heed = [sys.executable, "-m", "proxy"]
        # Every From domain of the shipped marketing streams gets a key (heed check wants one).
        for domain in ("news.example.com", "weekly.example.com"):
            keygen = subprocess.run(heed + ["dkim", "keygen", domain, "s1", "--dir", "keys"],
                                    cwd=site, env=env, capture_output=True, text=True,
                                    timeout=60)
            if keygen.returncode != 0:
                raise RuntimeError(f"heed dkim keygen failed: {keygen.stderr[-500:]}")
        keys = ", ".join(f"{{domain: {p.name.split('.s1.')[0]}, selector: s1, key_file: {p}}}"
                         for p in sorted((site / "keys").glob("*.pem")))
        (site / "config" / "heed.yaml").write_text(f"""
smtp: {{listen: "127.0.0.1:{self.port}", max_sessions: 2000{smtp_options}}}
upstream: {{host: 127.0.0.1, port: {upstream_port}, pool_size: 32}}
redis: {{data_dir: var/redis{redis_options}}}
http: {{listen: "127.0.0.1:{free_port()}", public_url: "https://heed.bench"}}
unsubscribe: {{mailto_domain: heed.bench}}
dkim: [{keys}]
policies: policies
""")
        check = subprocess.run(heed + ["check"], cwd=site, env=env, capture_output=True,
                               text=True, timeout=60)
        if check.returncode != 0:
            raise RuntimeError(f"heed check failed: {check.stdout}{check.stderr}")
        csv = site / "consent.csv"
        csv.write_text("email,list,granted_at,source,ip,text\n" + "".join(
            f"{a},marketing,,bench,127.0.0.1,bench-v1\n" for a in addresses))
        # heed's embedded Redis is started for the import and stopped again.
        imp = subprocess.run(heed + ["consent", "import", str(csv)], cwd=site, env=env,
                             capture_output=True, text=True, timeout=600)
        if imp.returncode != 0:
            raise RuntimeError(f"heed consent import failed: {imp.stderr[-800:]}")
        self.imported = imp.stdout.strip()
        self.log_path = site / "heed.log"
        with open(self.log_path, "wb") as log:
            self.proc, self._stop = spawn(heed + ["serve", "--workers", str(workers)], cwd=site,
                                          env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, timeout=60)
            # Every worker has its own SO_REUSEPORT socket: a session opened before the
            # last one listens stays with the others, and smtp-source -d keeps its 20
            # sessions for the whole run, so the load starts once all are listening.
            deadline = time.monotonic() + 60
            while self.log_path.read_bytes().count(b"heed listening for SMTP") < workers:
                if time.monotonic() > deadline:
                    raise TimeoutError
                time.sleep(0.05)
        except TimeoutError:
            self._stop()
            raise RuntimeError(f"heed did not listen: {self.log_tail()}") from None
        self.redis = redis.Redis(unix_socket_path=str(site / "var" / "redis" / "redis.sock"))
        # Redis's own latency monitor: how long its fsync (appendfsync always) blocked it.
        self.redis.config_set("latency-monitor-threshold", 5)

    def redis_stalls(self) -> str:
        """Redis latency events (>= 5 ms) since the last call, e.g. AOF fsync, then reset."""
        events = self.redis.execute_command("LATENCY", "LATEST") or []
        self.redis.execute_command("LATENCY", "RESET")
        return ", ".join(f"{e[0].decode() if isinstance(e[0], bytes) else e[0]} max {e[3]} ms"
                         for e in events) or "none >= 5 ms"

    def redis_stats(self) -> tuple[dict[str, int], int]:
        """Calls per command, and Redis's count of read events (≈ client round trips)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.info("commandstats")
        pipe.info("stats")
        cmds, stats = pipe.execute()
        return ({k.removeprefix("cmdstat_"): v["calls"] for k, v in cmds.items()},
                int(stats.get("total_reads_processed", 0)))

    def redis_version(self) -> str:
        return str(self.redis.info("server").get("redis_version", "?"))

    def pids(self) -> list[int]:
        return [self.proc.pid, *descendants(self.proc.pid)]

    def log_tail(self, n: int = 8) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        bad = [ln for ln in lines if re.search(r'"level": "(warning|error|critical)"|Traceback',
                                                ln)]
        return "\n".join((bad or lines)[-n:])

    def stop(self) -> None:
        self.redis.close()
        self._stop()


# ---------------------------------------------------------------------------
# measuring


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def watch(*targets: Any) -> Callable[[], list[int]]:
    """The processes whose CPU time a run reports, looked up at its start and at its end."""
    return lambda: [pid for t in targets for pid in t.pids()]


def cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds (user+system) so far, summed by command name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def machine_cpu() -> list[int]:
    """The all-CPU line of /proc/stat: user nice system idle iowait irq softirq steal."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]


def machine_busy(before: list[int], after: list[int]) -> str:
    """Whole-machine CPU use between two samples (everything, ours or not), and VM steal."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    busy = total - d[3] - d[4]
    return (f"machine busy {busy / total * 100:.0f}% of {os.cpu_count()} cpus, "
            f"steal {d[7] / total * 100:.1f}%")


@dataclasses.dataclass
class Result:
    name: str
    messages: int
    rcpts: int
    expected: int  # arrivals at the sink when everything got through
    arrived: int = 0
    secs: float = 0.0  # start of the load to the last arrival
    source_rc: int | None = None
    source_err: str = ""
    note: str = ""
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    machine: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.secs if self.secs else 0.0

    @property
    def ok(self) -> bool:
        return self.arrived >= self.expected and self.source_rc == 0


def run_load(port: int, sink: Sink, result: Result, sessions: int, size: int, workdir: Path,
             watch: Callable[[], list[int]] | None = None) -> Result:
    """smtp-source at full speed into `port`; time until the sink has every expected message.

    Bounded: the whole run by a deadline scaled to the work, and the wait for
    stragglers by 10 s without a new arrival once the source is done.
    """
    m, r = result.messages, result.rcpts
    deadline_s = 120 + 0.05 * m * r
    base = sink.count()
    err_path = workdir / f"source-{port}.err"
    cpu0 = cpu_seconds(watch() if watch else [])
    m0 = machine_cpu()
    with open(err_path, "wb") as err:
        start = time.monotonic()
        src, stop_src = spawn(["smtp-source", "-d", "-N", "-s", str(sessions), "-m", str(m),
                               "-l", str(size), "-r", str(r), "-f", SENDER,
                               "-t", "user@example.org", "-M", "bench.client",
                               f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=err)
    last_n, last_change, reached = base, start, None
    src_done: float | None = None
    while True:
        now = time.monotonic()
        n = sink.count() - base
        if n != last_n:
            last_n, last_change = n, now
        if reached is None and n >= result.expected:
            reached = now
        if src_done is None and src.poll() is not None:
            src_done = now
        if src_done is not None and (reached is not None or now - last_change > 10):
            break
        if now - start > deadline_s:
            result.note = f"gave up after {deadline_s:.0f} s"
            break
        time.sleep(0.005)
    stop_src()
    # Processes started during the run (Postfix's smtpd, cleanup, smtp) count from zero.
    cpu1 = cpu_seconds(watch() if watch else [])
    result.cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    result.machine = machine_busy(m0, machine_cpu())
    result.arrived = sink.count() - base
    result.secs = (reached or last_change) - start
    result.source_rc = src.returncode
    result.source_err = err_path.read_text(errors="replace").strip()
    return result


async def latencies(port: int, rate: float, seconds: float, sessions: int = 20,
                    prefix: str = "lat") -> tuple[list[float], list[str]]:
    """Per-message time at a fixed offered rate: from when the message was due (so a wait
    for a free session counts) to the DATA reply. One recipient, one message per
    transaction, `sessions` persistent sessions."""
    body = (f"From: <{SENDER}>\r\nTo: <x@example.org>\r\nSubject: bench\r\n"
            f"Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\n" + ("x" * 76 + "\r\n") * 52).encode()
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
               for _ in range(sessions)]
    for c in clients:
        await c.connect()
    free: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for c in clients:
        free.put_nowait(c)
    results: list[float] = []
    errors: list[str] = []

    async def one(n: int, due: float) -> None:
        c = await free.get()
        try:
            await asyncio.wait_for(c.sendmail(SENDER, [f"{prefix}{n}@example.org"], body), 30)
            results.append(time.perf_counter() - due)
        except (aiosmtplib.SMTPException, TimeoutError, OSError) as exc:
            errors.append(repr(exc)[:200])
            try:
                await c.rset()
            except (aiosmtplib.SMTPException, TimeoutError, OSError):
                c = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
                await c.connect()
        finally:
            free.put_nowait(c)

    tasks = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 120)
    while not free.empty():
        c = free.get_nowait()
        try:
            await asyncio.wait_for(c.quit(), 10)
        except (aiosmtplib.SMTPException, TimeoutError, OSError):
            c.close()
    return results, errors


def heed_latency(tmp: Path, rate: float, seconds: float, workers: int,
                 appendfsync: str | None = None
                 ) -> tuple[tuple[list[float], list[str], str], str, str]:
    """heed's latency run into a fresh sink: (timings, Redis stalls, heed's log tail).

    ``appendfsync`` changes the embedded Redis's setting for the run (CONFIG SET), to
    show what the fsync of every write costs; heed's default stays ``always``.
    """
    sink = Sink(tmp)
    heed = Heed(tmp / f"heed-lat-{appendfsync or 'always'}", sink.port,
                [f"lat{n}@example.org" for n in range(int(rate * seconds))], workers)
    try:
        if appendfsync:
            heed.redis.config_set("appendfsync", appendfsync)
        heed.redis_stalls()
        _cmds, reads0 = heed.redis_stats()
        run = timed(latencies(heed.port, rate, seconds))
        _cmds, reads1 = heed.redis_stats()
        trips = (f"{(reads1 - reads0 - 1) / max(len(run[0]), 1):.2f} read events (≈ round "
                 f"trips) per recipient; ")
        return run, trips + heed.redis_stalls(), heed.log_tail()
    finally:
        heed.stop()
        sink.stop()


def timed(coro: Any) -> tuple[list[float], list[str], str]:
    m0 = machine_cpu()
    values, errors = asyncio.run(coro)
    return values, errors, machine_busy(m0, machine_cpu())


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] * 1000 if len(values) > 1 else float("nan")


def versions(redis_version: str, postfix: str) -> str:
    def first_line(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    import aiosmtpd

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    postfix = postfix or first_line(["dpkg-query", "-W", "-f", "${Version}", "postfix"])
    return (f"machine: nproc {first_line(['nproc'])} ({os.cpu_count()} cpus), {cpu}, "
            f"{platform.system()} {platform.release()}\n"
            f"versions: python {platform.python_version()}, aiosmtpd {aiosmtpd.__version__}, "
            f"aiosmtplib {aiosmtplib.__version__}, redis-server {redis_version} "
            f"({first_line(['redis-server', '--version'])}), postfix {postfix}")


def cpu_line(res: Result) -> str:
    if not res.cpu or not res.secs:
        return ""
    parts = sorted(res.cpu.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v / res.secs * 100:.0f}%" for k, v in parts if v > 0.05)


# ---------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rcpts", default="1,5")
    p.add_argument("--rate", type=float, default=200.0, help="latency run: messages/s offered")
    p.add_argument("--seconds", type=float, default=None,
                   help="latency run: duration (10 s; 3 s with --quick)")
    p.add_argument("--workers", type=int, default=1, help="heed serve --workers N")
    p.add_argument("--no-postfix", action="store_true", help="skip the Postfix relay")
    p.add_argument("--quick", action="store_true", help="smoke run: 500 messages, 3 s latency")
    a = p.parse_args()
    if a.quick:
        a.messages = 500
    if a.seconds is None:
        a.seconds = 3.0 if a.quick else 10.0
    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install postfix (bash .ci/run does)")
    rcpt_counts = [int(x) for x in a.rcpts.split(",")]

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    atexit.register(cleanup_all)

    blocks: list[str] = []
    failures: list[str] = []
    postfix_why = "" if not a.no_postfix else "skipped (--no-postfix)"
    postfix_version = ""
    redis_version = "?"
    policy_changes: list[str] = []
    redis_lines: list[str] = []
    lat: dict[str, tuple[list[float], list[str], str]] = {}
    lat_redis = ""
    stalls: list[str] = []
    started = time.monotonic()

    with tempfile.TemporaryDirectory(prefix="heed-bench-") as tmp_s:
        tmp = Path(tmp_s)
        for r in rcpt_counts:
            # smtp-source -N numbers recipients 1, 2, 3, … across the whole run.
            addresses = [f"{n}user@example.org" for n in range(1, a.messages * r + 1)]
            results: list[Result] = []

            sink = Sink(tmp)
            res = run_load(sink.port, sink, Result("smtp-sink direct", a.messages, r, a.messages),
                           a.sessions, a.size, tmp, watch(sink))
            sink.stop()
            results.append(res)

            sink = Sink(tmp)
            relay = PlainRelay(sink.port)
            try:
                res = run_load(relay.port, sink,
                               Result(relay.name, a.messages, r, a.messages), a.sessions,
                               a.size, tmp, watch(relay, sink))
            finally:
                relay.stop()
                sink.stop()
            results.append(res)

            if not postfix_why:
                sink = Sink(tmp)
                try:
                    pf = PostfixRelay(tmp / f"postfix-{r}", sink.port)
                except PostfixUnavailable as exc:
                    postfix_why = str(exc)
                    sink.stop()
                else:
                    try:
                        postfix_version = pf.version()
                        res = run_load(pf.port, sink, Result(pf.name, a.messages, r, a.messages),
                                       a.sessions, a.size, tmp,
                                       watch(sink, pf))
                        # Postfix sends all recipients of a message in one transaction:
                        # its log says how many recipients were delivered.
                        deadline = time.monotonic() + 10
                        while pf.sent() < a.messages * r and time.monotonic() < deadline:
                            time.sleep(0.2)
                        sent = pf.sent()
                        res.note = f"{sent} recipients logged status=sent"
                        if sent < a.messages * r:
                            res.note += "; " + " | ".join(pf.problems())
                            res.source_rc = res.source_rc or -1
                    finally:
                        pf.stop()
                        sink.stop()
                    results.append(res)

            sink = Sink(tmp)
            heed = Heed(tmp / f"heed-{r}", sink.port, addresses, a.workers)
            policy_changes = heed.policy_changes
            try:
                redis_version = heed.redis_version()
                cmds0, reads0 = heed.redis_stats()
                heed.redis_stalls()
                res = run_load(heed.port, sink,
                               Result(heed.name, a.messages, r, a.messages * r), a.sessions,
                               a.size, tmp, watch(sink, heed))
                cmds1, reads1 = heed.redis_stats()
                stalls.append(f"{r} rcpt/msg: {heed.redis_stalls()}")
                if not res.ok:
                    res.note = f"heed log:\n{heed.log_tail()}"
            finally:
                heed.stop()
                sink.stop()
            results.append(res)

            delivered = max(res.arrived, 1)  # heed: one arrival per recipient copy
            deltas = {k: v - cmds0.get(k, 0) for k, v in cmds1.items()
                      if not k.startswith(("info", "latency", "config"))  # ours
                      and v - cmds0.get(k, 0) > 0}
            total = sum(deltas.values())
            per_cmd = ", ".join(f"{k} {v / delivered:.2f}" for k, v in
                                sorted(deltas.items(), key=lambda kv: -kv[1]))
            redis_lines.append(
                f"{r} rcpt/msg: {total / delivered:.2f} commands and "
                f"{(reads1 - reads0 - 1) / delivered:.2f} read events (≈ round trips) per "
                f"recipient delivered ({delivered}); per command: {per_cmd}")

            lines = [f"{r} recipient(s)/message, {a.messages} messages "
                     f"({a.messages * r} recipients):",
                     f"  {'target':27s} {'arrivals':>9s} {'seconds':>8s} {'messages/s':>11s} "
                     f"{'recipients/s':>13s}  CPU (% of one core)"]
            for res in results:
                lines.append(f"  {res.name:27s} {res.arrived:9d} {res.secs:8.2f} "
                             f"{res.rate:11.1f} {res.rate * r:13.1f}  {cpu_line(res)}")
                extra = f"; {res.note}" if res.ok and res.note else ""
                lines.append(f"  {'':27s} ({res.machine}{extra})")
                if not res.ok:
                    failures.append(
                        f"{res.name}, {r} rcpt/msg: {res.arrived} of {res.expected} arrived; "
                        f"smtp-source exit {res.source_rc}: {res.source_err[-600:]} {res.note}")
            by = {res.name: res for res in results}
            h = by[Heed.name]
            for relay_name in (PlainRelay.name, PostfixRelay.name):
                if relay_name in by and by[relay_name].rate:
                    lines.append(f"  heed / {relay_name}: {h.rate / by[relay_name].rate:.2f}x")
            lines.append(f"  heed / smtp-sink direct: "
                         f"{h.rate / by['smtp-sink direct'].rate:.2f}x")
            blocks.append("\n".join(lines))

        # Latency each adds at a fixed offered rate, 1 recipient per message.
        sink = Sink(tmp)
        try:
            lat["smtp-sink direct"] = timed(latencies(sink.port, a.rate, a.seconds))
        finally:
            sink.stop()
        sink = Sink(tmp)
        relay = PlainRelay(sink.port)
        try:
            lat[PlainRelay.name] = timed(latencies(relay.port, a.rate, a.seconds))
        finally:
            relay.stop()
            sink.stop()
        if not postfix_why:
            sink = Sink(tmp)
            try:
                pf = PostfixRelay(tmp / "postfix-lat", sink.port)
                try:
                    lat[PostfixRelay.name] = timed(latencies(pf.port, a.rate, a.seconds))
                finally:
                    pf.stop()
            except PostfixUnavailable as exc:
                postfix_why = str(exc)
            finally:
                sink.stop()
        lat[Heed.name], lat_redis, heed_log = heed_latency(tmp, a.rate, a.seconds, a.workers)
        if lat[Heed.name][1]:
            failures.append(f"heed latency run: {len(lat[Heed.name][1])} errors, first: "
                            f"{lat[Heed.name][1][0]}\nheed log:\n{heed_log}")

    # ----- the report
    print(versions(redis_version, postfix_version))
    print(f"heed workers: {a.workers}; load: smtp-source -d -N, {a.sessions} sessions, "
          f"{a.messages} messages of {a.size} bytes, every recipient address distinct; "
          "counted at smtp-sink (its -c counter); rate = messages / (start of load to last "
          "arrival)")
    print("plain relays: aiosmtpd pass-through (bench/plain_relay.py: aiosmtplib pool of 16 "
          "to the sink, 250 only after the sink accepted; one transaction per message)")
    if postfix_why:
        print(f"  Postfix relay: not run: {postfix_why}")
    else:
        print("  and a private Postfix instance (temp config/queue dir, relayhost = the sink, "
              "default concurrency; 250 once queued on disk; one transaction per message)")
    print("heed: embedded Redis (AOF, appendfsync always); shipped policies with consent, "
          "refusal, opt-out, pause, silence (lifecycle), cap and quiet-hours rules evaluated for "
          "every recipient; every recipient granted consent beforehand (heed consent import); "
          "one copy per recipient with its own one-click List-Unsubscribe token, RSA-2048 DKIM "
          "signature on every copy. Changed from the shipped policy so bench mail is "
          "delivered, not held (the rules still run):")
    for c in policy_changes:
        print(f"  - {c}")
    print()
    for b in blocks:
        print(b)
        print()
    print("Redis per recipient for heed (INFO commandstats / total_reads_processed deltas):")
    for line in redis_lines:
        print(f"  {line}")
    print("Redis latency monitor during the heed runs (stalls of Redis itself, e.g. AOF fsync):")
    for line in stalls + [f"latency run: {lat_redis}"]:
        print(f"  {line}")
    print()
    print(f"latency at {a.rate:.0f} messages/s offered for {a.seconds:.0f} s, 1 recipient, "
          f"20 persistent sessions; from when each message was due to the DATA reply:")
    for name, (values, errs, busy) in lat.items():
        print(f"  {name:27s} p50 {pct(values, 50):7.2f} ms   p99 {pct(values, 99):7.2f} ms"
              f"   max {max(values, default=0) * 1000:7.2f} ms   ({len(values)} ok, "
              f"{len(errs)} errors, {sum(v > 0.05 for v in values)} over 50 ms; {busy})")
    h = lat.get(Heed.name, ([], [], ""))[0]
    for relay_name in (PlainRelay.name, PostfixRelay.name):
        if relay_name in lat and h:
            base = lat[relay_name][0]
            print(f"  heed adds vs {relay_name:24s} p50 {pct(h, 50) - pct(base, 50):7.2f} ms"
                  f"   p99 {pct(h, 99) - pct(base, 99):7.2f} ms   (ratio p50 "
                  f"{pct(h, 50) / pct(base, 50):.1f}x, p99 {pct(h, 99) / pct(base, 99):.1f}x)")
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    if failures:
        print("\nFAILURES:")
        for f in failures:
            print(f"  - {f}")
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        cleanup_all()
        sys.exit(130)
    finally:
        cleanup_all()
