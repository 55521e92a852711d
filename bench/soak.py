"""Fault soak: heed killed, Redis killed or paused, upstream failing; counts what was lost.

    python -m bench.soak --all
    python -m bench.soak --heed-kill [--messages 10000 --sessions 20 --kills 5]
    python -m bench.soak --redis-kill [--held 1000]
    python -m bench.soak --redis-pause [--transactions 200]
    python -m bench.soak --upstream [--messages 500]

Every message carries a tag (``X-Soak-Tag``); the client records which tags got a 250,
the counting sink records which tags arrived. "lost" = tags answered 250 that never
arrived; "dup" = extra arrivals of a tag. Everything runs on 127.0.0.1: a real
``heed serve`` process, a real redis-server (AOF, appendfsync always), an aiosmtpd sink
or Postfix's smtp-sink. The test suite runs the same scenarios small (tests/test_faults.py).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import redis as redis_sync
from aiosmtpd.controller import Controller

from proxy.embedded_redis import EmbeddedRedis, free_port, wait_port
from proxy.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
TAG = re.compile(rb"^X-Soak-Tag: (\S+)\r?$", re.M)
# What no reply may show: addresses, ports, exception names (the SMTP edge says none).
LEAK = re.compile(r"127\.0\.0\.1|localhost|:\d{2,5}\b|Error|Exception|Traceback|redis",
                  re.IGNORECASE)


# --- the counting sink ------------------------------------------------------------------
class CountingSink:
    """An aiosmtpd upstream that counts the tags it accepted (``reply`` forces an answer)."""

    def __init__(self, port: int | None = None) -> None:
        self.tags: collections.Counter[str] = collections.Counter()
        self.reply: str | None = None
        self.messages = 0  # every transaction accepted, tagged or not
        self.port = port or free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply:
            return self.reply
        self.messages += 1
        for tag in TAG.findall(bytes(envelope.original_content)):
            self.tags[tag.decode()] += 1
        return "250 2.0.0 queued"

    def stop(self) -> None:
        self.controller.stop()


class SmtpSink:
    """Postfix's smtp-sink as the upstream, with fault flags (-r, -f, -q, -W); -d counts."""

    def __init__(self, workdir: Path, flags: list[str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.dumps = workdir / f"sink-{self.port}-{len(list(workdir.iterdir()))}"
        self.dumps.mkdir()
        user = os.environ.get("USER") or "root"
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", user, "-d", f"{self.dumps}/%H%M%S.", *flags,
             f"127.0.0.1:{self.port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    @property
    def tags(self) -> collections.Counter[str]:
        found: collections.Counter[str] = collections.Counter()
        for f in self.dumps.iterdir():
            for tag in TAG.findall(f.read_bytes()):
                found[tag.decode()] += 1
        return found

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# --- heed as a process ------------------------------------------------------------------
TRANSACTIONAL = """
default_stream: transactional
streams:
  transactional: {kind: transactional}
classify: []
"""


def holding_policy() -> str:
    """Marketing held by quiet hours around the current hour (UTC), so every copy is held."""
    hour = time.gmtime().tm_hour
    return f"""
default_stream: transactional
streams:
  transactional: {{kind: transactional}}
  marketing:
    kind: marketing
    unsigned: allow  # relayed without a DKIM key
    rules:
      - {{if: quiet_hours, start: "{(hour - 1) % 24:02d}:00", end: "{(hour + 2) % 24:02d}:00",
          zone: UTC, then: delay}}
classify:
  - sender: "*@news.example.com"
    stream: marketing
"""


RELEASING = """
default_stream: transactional
streams:
  transactional: {kind: transactional}
  marketing:
    kind: marketing
    unsigned: allow  # relayed without a DKIM key
    rules:
      - {if: refused, then: drop}
classify:
  - sender: "*@news.example.com"
    stream: marketing
"""


class HeedProcess:
    """`heed serve` with a config of its own; kill -9 and start again on the same port."""

    def __init__(self, workdir: Path, redis_url: str, upstream_port: int, policy: str,
                 **extra: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        (workdir / "policies").mkdir(parents=True, exist_ok=True)
        self.set_policy(policy)
        queue = extra.pop("queue", "{poll_interval: 0.2s, backoff: [1s], lease: 60s}")
        upstream = extra.pop("upstream", "{timeout: 3s}")
        self.config = workdir / "heed.yaml"
        redis = extra.pop("redis", "")  # more keys of the redis section, beside its url
        self.config.write_text(f"""
smtp: {{listen: "127.0.0.1:{self.port}", hostname: soak.test, max_sessions: 2000,
       max_sessions_per_client: 2000}}
upstream: {upstream}
redis: {{url: "{redis_url}"{", " + redis if redis else ""}}}
http: {{listen: null, public_url: "https://soak.test"}}
unsubscribe: {{mailto_domain: soak.test, keys: [{{id: s1, secret: soak-secret-0123456789abcdef}}]}}
queue: {queue}
policies: {workdir / "policies"}
""")
        self.config.write_text(self.config.read_text().replace(
            "upstream: {", f"upstream: {{host: 127.0.0.1, port: {upstream_port}, ", 1))
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def set_policy(self, text: str) -> None:
        (self.workdir / "policies" / "policy.yaml").write_text(text)

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log = open(self.workdir / "heed.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(self.config)],
            cwd=self.workdir, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


# --- the tagged client ------------------------------------------------------------------
@dataclass
class Client:
    """Sends tagged messages over ``sessions`` connections; retries a tag until it gets 250
    (a 4xx or a broken connection is the client's to retry, as any MTA does)."""

    port: int
    sender: str = "receipts@shop.example.com"
    retry: bool = True
    acked: set[str] = field(default_factory=set)
    retried: set[str] = field(default_factory=set)  # tags that failed once before their 250
    replies: list[str] = field(default_factory=list)
    attempts: int = 0

    def message(self, tag: str) -> bytes:
        return (f"From: <{self.sender}>\r\nTo: <p{tag}@example.org>\r\nSubject: soak {tag}\r\n"
                f"Message-ID: <{tag}@soak.test>\r\nX-Soak-Tag: {tag}\r\n\r\nsoak body {tag}\r\n"
                ).encode()

    async def run(self, tags: Iterable[str], sessions: int, deadline: float) -> None:
        todo: asyncio.Queue[str] = asyncio.Queue()
        for tag in tags:
            todo.put_nowait(tag)
        await asyncio.gather(*(self._session(todo, deadline) for _ in range(sessions)))

    async def _session(self, todo: asyncio.Queue[str], deadline: float) -> None:
        smtp: aiosmtplib.SMTP | None = None
        while not todo.empty() and time.monotonic() < deadline:
            tag = todo.get_nowait()
            try:
                if smtp is None or not smtp.is_connected:
                    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=30)
                    await smtp.connect()
                self.attempts += 1
                errors, reply = await smtp.sendmail(self.sender, [f"p{tag}@example.org"],
                                                    self.message(tag))
                self.replies.append(reply)
                self.acked.add(tag)
            except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused) as exc:
                refusals = (exc.recipients if isinstance(exc, aiosmtplib.SMTPRecipientsRefused)
                            else [exc])
                self.replies += [f"{r.code} {r.message}" for r in refusals]
                self.retried.add(tag)
                if self.retry:
                    todo.put_nowait(tag)
                    await asyncio.sleep(0.05)
                if smtp is not None and smtp.is_connected:
                    try:
                        await smtp.rset()
                    except aiosmtplib.SMTPException:
                        smtp.close()
            except (aiosmtplib.SMTPException, OSError):
                self.retried.add(tag)
                if self.retry:
                    todo.put_nowait(tag)
                if smtp is not None:
                    smtp.close()
                smtp = None
                await asyncio.sleep(0.1)
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except aiosmtplib.SMTPException:
                smtp.close()


def wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def make_due(redis_url: str) -> None:
    """Every held copy due now: the soak does not wait out the quiet hours that held it."""
    import redis as redis_sync

    from proxy.keys import Keys

    client = redis_sync.Redis.from_url(redis_url)
    now = time.time()
    ids = client.zrange(Keys().queue_due, 0, -1)
    if ids:
        client.zadd(Keys().queue_due, {i: now for i in ids})
    client.close()


def lost_and_dups(acked: set[str], arrived: collections.Counter[str]) -> tuple[int, int]:
    return len(acked - set(arrived)), sum(n - 1 for n in arrived.values() if n > 1)


def dups_not_retried(client: Client, arrived: collections.Counter[str]) -> int:
    """Duplicates of tags the client sent once: those the retry cannot explain."""
    return sum(n - 1 for t, n in arrived.items() if n > 1 and t not in client.retried)


# --- scenarios --------------------------------------------------------------------------
def unrecorded(redis_url: str, arrived: Iterable[str]) -> int:
    """Tags that arrived with no record in the audit trail: neither a "delivered" decision
    nor the "sending" intent written before the 250 (its outcome not confirmed)."""
    r = redis_sync.Redis.from_url(redis_url)
    recorded: set[str] = set()
    start = "-"
    while batch := r.xrange(Keys().audit, start, "+", count=5000):
        for _id, f in batch:
            if (f.get(b"kind"), f.get(b"outcome")) in ((b"decision", b"delivered"),
                                                       (b"intent", b"sending")):
                recorded.add(f.get(b"message_id", b"").decode().strip("<>").split("@")[0])
        start = "(" + batch[-1][0].decode()
    r.close()
    return len(set(arrived) - recorded)


def heed_kill(workdir: Path, messages: int = 10_000, sessions: int = 20,
              kills: int = 5, write_behind: str = "") -> dict[str, Any]:
    """kill -9 heed ``kills`` times while ``messages`` tagged messages go through."""
    redis = EmbeddedRedis(workdir / "redis")
    sink = CountingSink()
    redis_url = redis.start()
    settings = {"redis": f"write_behind: {write_behind}"} if write_behind else {}
    heed = HeedProcess(workdir / "heed", redis_url, sink.port, TRANSACTIONAL, **settings)
    heed.start()
    client = Client(heed.port)
    started = time.monotonic()
    try:
        def killer() -> None:
            for k in range(1, kills + 1):
                wait_for(lambda k=k: len(client.acked) >= messages * k // (kills + 1), 600)
                heed.kill9()
                heed.start()
                heed.restarts += 1

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        asyncio.run(client.run((str(i) for i in range(messages)), sessions,
                               time.monotonic() + 1200))
        thread.join(60)
        wait_for(lambda: client.acked <= set(sink.tags), 60)
        heed.stop()  # a clean stop writes what is behind; only the kills may lose records
        missing = unrecorded(redis_url, sink.tags)
    finally:
        heed.stop()
        sink.stop()
        redis.stop()
    lost, dups = lost_and_dups(client.acked, sink.tags)
    return {"scenario": "kill -9 heed" + (f", write_behind {write_behind}" if write_behind
                                          else ""), "load": f"{messages} msgs, {sessions} sessions",
            "faults": f"{heed.restarts} kills", "acked": len(client.acked),
            "arrived": len(sink.tags), "lost": lost, "dup": dups,
            "dup of unretried": dups_not_retried(client, sink.tags),
            "arrived, no audit record": missing,
            "seconds": round(time.monotonic() - started, 1)}


def redis_kill(workdir: Path, held: int = 1000, sessions: int = 10,
               mid_traffic: bool = True) -> dict[str, Any]:
    """kill -9 Redis (AOF, fsync always) while sending (``mid_traffic``) and while mail is
    held. A kill mid-traffic may land between Redis's fsync and its reply: heed answers
    451, the client sends again, and that message is held twice (a duplicate, never a loss)."""
    port = free_port()
    redis = EmbeddedRedis(workdir / "redis", port=port)
    sink = CountingSink()
    heed = HeedProcess(workdir / "heed", redis.start(), sink.port, holding_policy())
    heed.start()
    client = Client(heed.port, sender="offers@news.example.com")
    started = time.monotonic()
    kills = 0
    restarted, replaced = threading.Event(), threading.Event()
    try:
        def killer() -> None:
            nonlocal kills
            if not mid_traffic:
                return
            wait_for(lambda: len(client.acked) >= held // 2, 600)
            redis.kill()  # mid-traffic: clients get 451 and retry
            kills += 1
            time.sleep(0.5)
            redis.start()
            restarted.set()
            # EmbeddedRedis asks the kernel to end redis-server when the *thread* that
            # started it ends (PR_SET_PDEATHSIG follows the thread on Linux): stay until
            # the main thread has put its own server in this one's place.
            replaced.wait()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        asyncio.run(client.run((f"h{i}" for i in range(held)), sessions,
                               time.monotonic() + 1200))
        if mid_traffic:
            restarted.wait(60)
        held_before = len(sink.tags)  # must be 0: everything is held
        redis.kill()  # everything held now: kill again, start again from the AOF
        kills += 1
        redis.start()
        replaced.set()
        heed.set_policy(RELEASING)
        heed.reload()
        make_due(redis.url)
        wait_for(lambda: client.acked <= set(sink.tags), 300)
    finally:
        replaced.set()
        heed.stop()
        sink.stop()
        redis.stop()
    lost, dups = lost_and_dups(client.acked, sink.tags)
    return {"scenario": "kill -9 Redis with mail held", "load": f"{held} held",
            "faults": f"{kills} kills", "acked": len(client.acked), "arrived": len(sink.tags),
            "lost": lost, "dup": dups, "dup of unretried": dups_not_retried(client, sink.tags),
            "early": held_before,
            "seconds": round(time.monotonic() - started, 1)}


def redis_pause(workdir: Path, transactions: int = 200, sessions: int = 20) -> dict[str, Any]:
    """Redis stopped (SIGSTOP) and then down during marketing traffic: only 451 4.3.0."""
    redis = EmbeddedRedis(workdir / "redis")
    sink = CountingSink()
    heed = HeedProcess(workdir / "heed", redis.start(), sink.port, holding_policy())
    heed.start()
    started = time.monotonic()
    replies: list[str] = []
    try:
        assert redis.process is not None
        for name in ("paused", "down"):
            if name == "paused":
                os.kill(redis.process.pid, signal.SIGSTOP)
            else:
                os.kill(redis.process.pid, signal.SIGCONT)
                redis.kill()
            client = Client(heed.port, sender="offers@news.example.com", retry=False)
            asyncio.run(client.run((f"{name}{i}" for i in range(transactions // 2)),
                                   sessions, time.monotonic() + 600))
            replies += client.replies
            if client.acked:
                replies.append(f"250 for {sorted(client.acked)[:3]}")
    finally:
        if redis.process is not None and redis.process.poll() is None:
            os.kill(redis.process.pid, signal.SIGCONT)
        heed.stop()
        sink.stop()
        redis.stop()
    tempfail = sum(1 for r in replies if r.startswith("451 4.3.0"))
    leaks = sum(1 for r in replies if LEAK.search(r.split(" ", 1)[-1]))
    return {"scenario": "Redis paused, then down", "load": f"{transactions} transactions",
            "faults": "SIGSTOP; kill -9", "acked": len(replies) - tempfail,
            "arrived": sum(sink.tags.values()), "lost": 0, "dup": 0,
            "451 4.3.0": f"{tempfail}/{len(replies)}", "leaky replies": leaks,
            "seconds": round(time.monotonic() - started, 1)}


UPSTREAM_FAULTS = {
    "4xx at DATA (-r DATA)": ["-r", "DATA"],
    "5xx at RCPT (-f RCPT)": ["-f", "RCPT"],
    "hangs up after . (-q .)": ["-q", "."],
    "hangs at DATA (-W DATA:30)": ["-W", "DATA:30"],
    # smtp-sink answers a pipelined DATA before its delayed RCPT reply ("503 need RCPT"),
    # which Postfix's smtpd never does (RFC 2920 §3.1): the slow sink does not pipeline.
    "slow (-W RCPT:1)": ["-W", "RCPT:1", "-p"],
}


def upstream_faults(workdir: Path, messages: int = 100, sessions: int = 10) -> list[dict[str, Any]]:
    """smtp-sink failing in each way: a 250 only for what the sink accepted."""
    rows = []
    redis = EmbeddedRedis(workdir / "redis")
    url = redis.start()
    try:
        for n, (name, flags) in enumerate(UPSTREAM_FAULTS.items()):
            started = time.monotonic()
            sink = SmtpSink(workdir, flags)
            heed = HeedProcess(workdir / f"heed{n}", url, sink.port, TRANSACTIONAL)
            heed.start()
            client = Client(heed.port, retry=False)
            try:
                asyncio.run(client.run((f"u{n}-{i}" for i in range(messages)), sessions,
                                       time.monotonic() + 600))
            finally:
                heed.stop()
                sink.stop()
            arrived = sink.tags
            rows.append({"scenario": f"upstream {name}", "load": f"{messages} msgs",
                         "faults": " ".join(flags), "acked": len(client.acked),
                         "arrived": len(arrived),
                         "lost": len(client.acked - set(arrived)), "dup": 0,
                         "seconds": round(time.monotonic() - started, 1)})
        rows.append(held_until_upstream_back(workdir, url, messages, sessions))
    finally:
        redis.stop()
    return rows


def held_until_upstream_back(workdir: Path, redis_url: str, messages: int = 100,
                             sessions: int = 10) -> dict[str, Any]:
    """Held mail released while the upstream says 4xx waits, and goes out once it is back."""
    started = time.monotonic()
    port = free_port()
    failing = SmtpSink(workdir, ["-r", "RCPT"], port=port)
    heed = HeedProcess(workdir / "heed-back", redis_url, port, holding_policy())
    heed.start()
    client = Client(heed.port, sender="offers@news.example.com")
    try:
        asyncio.run(client.run((f"b{i}" for i in range(messages)), sessions,
                               time.monotonic() + 600))
        heed.set_policy(RELEASING)
        heed.reload()
        make_due(redis_url)
        time.sleep(3)  # a few release rounds against the failing upstream
        early = len(failing.tags)
        failing.stop()
        back = SmtpSink(workdir, [], port=port)
        wait_for(lambda: client.acked <= set(back.tags), 120)
        arrived = back.tags
        back.stop()
    finally:
        heed.stop()
    lost, dups = lost_and_dups(client.acked, arrived)
    return {"scenario": "held mail, upstream 4xx then back", "load": f"{messages} held",
            "faults": "-r RCPT, then none", "acked": len(client.acked),
            "arrived": len(arrived), "lost": lost, "dup": dups, "early": early,
            "seconds": round(time.monotonic() - started, 1)}


# --- the table --------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--all", action="store_true")
    p.add_argument("--heed-kill", action="store_true")
    p.add_argument("--redis-kill", action="store_true")
    p.add_argument("--redis-pause", action="store_true")
    p.add_argument("--upstream", action="store_true")
    p.add_argument("--messages", type=int, default=10_000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--write-behind", default="",
                   help="redis.write_behind for --heed-kill (default: heed's own, 0.05s)")
    p.add_argument("--held", type=int, default=1000)
    p.add_argument("--transactions", type=int, default=200)
    p.add_argument("--upstream-messages", type=int, default=200)
    args = p.parse_args(argv)
    if not (args.all or args.heed_kill or args.redis_kill or args.redis_pause or args.upstream):
        p.error("name a scenario or --all")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="heed-soak-") as tmp:
        work = Path(tmp)
        if args.all or args.heed_kill:
            rows.append(heed_kill(work / "kill", args.messages, args.sessions, args.kills,
                                  args.write_behind))
            print(table(rows[-1:]), flush=True)
        if args.all or args.redis_kill:
            rows.append(redis_kill(work / "rkill", args.held))
            print(table(rows[-1:]), flush=True)
        if args.all or args.redis_pause:
            rows.append(redis_pause(work / "pause", args.transactions))
            print(table(rows[-1:]), flush=True)
        if args.all or args.upstream:
            rows += upstream_faults(work / "up", args.upstream_messages)
    print()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(table(rows))
    bad = [r for r in rows if r.get("lost") or r.get("leaky replies") or r.get("early")
           or r.get("dup of unretried")]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
