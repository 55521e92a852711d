"""heed side by side with a plain relay and the smtp-sink ceiling, in one run.

    python -m bench.compare [--messages 5000] [--sessions 20] [--size 4096] [--rcpts 1,5] [--quick]

Load: Postfix's smtp-source (persistent sessions). Receiver: Postfix's smtp-sink,
whose own counter gives the messages that arrived. Everything on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import redis

from proxy.embedded_redis import free_port, wait_port

ROOT = Path(__file__).resolve().parent.parent
SENDER = "offers@news.example.com"


class Sink:
    """smtp-sink with its running message counter (-c)."""

    def __init__(self) -> None:
        self.port = free_port()
        # The counter goes to a file: a pipe nobody reads would fill and stall the sink.
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            ["smtp-sink", "-c", "-u", "root", f"127.0.0.1:{self.port}", "1000"],
            stdout=self.out, stderr=subprocess.STDOUT)
        wait_port(self.port)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.out.seek(0)
        counts = re.findall(rb"mesg=(\d+)", self.out.read())
        self.out.close()
        return int(counts[-1]) if counts else 0


def recipients(messages: int, rcpts: int) -> list[str]:
    """The addresses smtp-source -N writes: one running number per recipient, from 1."""
    return [f"{n}user@example.org" for n in range(1, messages * rcpts + 1)]


def source(port: int, messages: int, sessions: int, size: int, rcpts: int) -> float:
    start = time.monotonic()
    subprocess.run(["smtp-source", "-d", "-N", "-s", str(sessions), "-m", str(messages),
                    "-l", str(size), "-r", str(rcpts), "-f", SENDER, "-t", "user@example.org",
                    "-M", "bench.client", f"127.0.0.1:{port}"],
                   check=True, timeout=1800, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


async def latencies(port: int, rate: float, seconds: float, connections: int = 10) -> list[float]:
    """Per-message time (MAIL to the DATA reply) at a fixed offered rate."""
    body = (f"From: <{SENDER}>\r\nTo: <x@example.org>\r\nSubject: bench\r\n"
            f"Date: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\n" + ("x" * 76 + "\r\n") * 52).encode()
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
               for _ in range(connections)]
    for c in clients:
        await c.connect()
    free: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
    for c in clients:
        free.put_nowait(c)
    results: list[float] = []

    async def one(n: int) -> None:
        c = await free.get()
        t0 = time.perf_counter()
        await c.sendmail(SENDER, [f"lat{n}@example.org"], body)
        results.append(time.perf_counter() - t0)
        free.put_nowait(c)

    tasks = []
    start = time.perf_counter()
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    for c in clients:
        await c.quit()
    return results


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[int(p) - 1] * 1000 if len(values) > 1 else 0.0


def bench_policy(directory: Path) -> None:
    """Every check runs for every recipient; none of them holds bench mail back."""
    now = datetime.now(UTC)
    quiet_from = (now + timedelta(hours=6)).strftime("%H:%M")
    quiet_to = (now + timedelta(hours=7)).strftime("%H:%M")
    directory.mkdir()
    (directory / "bench.yaml").write_text(f"""
version: bench
default_stream: marketing
streams:
  marketing:
    kind: marketing
    list: marketing
    drop: reject
    silence: {{lapsing: {{sends: 1000}}, inactive: {{sends: 2000}}}}
    rules:
      - {{if: refused, then: drop}}
      - {{if: opted_out, then: drop}}
      - {{if: no_consent, then: drop}}
      - {{if: paused, then: discard}}
      - {{if: lifecycle, stage: inactive, then: discard}}
      - {{if: cap, stage: lapsing, per_week: 1000, then: delay}}
      - {{if: cap, per_day: 1000, per_week: 5000, then: delay}}
      - {{if: quiet_hours, start: "{quiet_from}", end: "{quiet_to}", zone: UTC, then: delay}}
classify:
  - sender: "*@news.example.com"
    stream: marketing
""")


class Heed:
    """`heed serve` in a temp site with its embedded Redis, consent for every address, DKIM."""

    def __init__(self, site: Path, upstream_port: int, addresses: list[str],
                 workers: int = 1) -> None:
        self.site = site
        self.port = free_port()
        site.mkdir()
        bench_policy(site / "policies")
        (site / "config").mkdir()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        heed = [sys.executable, "-m", "proxy"]
        subprocess.run(heed + ["dkim", "keygen", "news.example.com", "s1", "--dir", "keys"],
                       cwd=site, env=env, check=True, capture_output=True)
        key = next((site / "keys").glob("*.pem"))
        (site / "config" / "heed.yaml").write_text(f"""
smtp: {{listen: "127.0.0.1:{self.port}", max_sessions: 2000}}
upstream: {{host: 127.0.0.1, port: {upstream_port}, pool_size: 32}}
redis: {{data_dir: var/redis}}
http: {{listen: "127.0.0.1:{free_port()}", public_url: "https://heed.bench"}}
unsubscribe: {{mailto_domain: heed.bench}}
dkim: [{{domain: news.example.com, selector: s1, key_file: {key}}}]
policies: policies
""")
        csv = site / "consent.csv"
        csv.write_text("email,list,granted_at,source,ip,text\n" + "".join(
            f"{a},marketing,,bench,127.0.0.1,v1\n" for a in addresses))
        subprocess.run(heed + ["consent", "import", str(csv)], cwd=site, env=env, check=True,
                       capture_output=True, timeout=600)
        self.log = open(site / "heed.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(heed + ["serve", "--workers", str(workers)], cwd=site, env=env,
                                     stdout=self.log, stderr=self.log)
        wait_port(self.port)
        self.redis = redis.Redis(unix_socket_path=str(site / "var" / "redis" / "redis.sock"))

    def commands(self) -> int:
        stats = self.redis.info("commandstats")
        return sum(v["calls"] for k, v in stats.items()
                   if k not in ("cmdstat_info", "cmdstat_ping"))

    def stop(self) -> None:
        self.redis.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class PlainRelay:
    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.plain_relay", str(self.port),
                                      str(upstream_port)], env=env, cwd=ROOT)
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def versions() -> str:
    def ver(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return "?"

    import aiosmtpd
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    postfix = ver(["dpkg-query", "-W", "-f", "${Version}", "postfix"])
    return (f"machine: {os.cpu_count()} cores, {cpu}\n"
            f"python {platform.python_version()}, aiosmtpd {aiosmtpd.__version__}, "
            f"aiosmtplib {aiosmtplib.__version__}, {ver(['redis-server', '--version'])}, "
            f"postfix {postfix}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rcpts", default="1,5")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=1, help="heed serve --workers N")
    p.add_argument("--quick", action="store_true", help="500 messages, 3 s latency run")
    a = p.parse_args()
    if a.quick:
        a.messages, a.seconds = 500, 3.0
    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install postfix (bash .ci/run does)")
    print(versions())
    print(f"heed workers: {a.workers}")
    print(f"load: smtp-source -d -N, {a.sessions} sessions, {a.messages} messages of "
          f"{a.size} bytes; counted at smtp-sink")
    print("heed: consent, refusal, silence, cap and quiet-hours rules for every recipient "
          "(caps set high and the quiet window hours away, so every check runs and the mail "
          "is delivered), a one-click token per copy, RSA-2048 DKIM on every copy, "
          "embedded Redis with appendfsync always\n")
    with tempfile.TemporaryDirectory() as tmp:
        for r in [int(x) for x in a.rcpts.split(",")]:
            addresses = recipients(a.messages, r) + [f"lat{n}@example.org"
                                                     for n in range(int(a.rate * a.seconds))]
            results = {}
            sink = Sink()
            secs = source(sink.port, a.messages, a.sessions, a.size, r)
            results["smtp-sink direct"] = (sink.stop(), secs)
            sink = Sink()
            relay = PlainRelay(sink.port)
            try:
                secs = source(relay.port, a.messages, a.sessions, a.size, r)
            finally:
                relay.stop()
            results["plain relay (aiosmtpd)"] = (sink.stop(), secs)
            sink = Sink()
            heed = Heed(Path(tmp) / f"heed-{r}", sink.port, addresses, a.workers)
            try:
                before = heed.commands()
                secs = source(heed.port, a.messages, a.sessions, a.size, r)
                cmds = (heed.commands() - before) / (a.messages * r)
            finally:
                heed.stop()
            results["heed, everything on"] = (sink.stop(), secs)
            plain = results["plain relay (aiosmtpd)"]
            heed_r = results["heed, everything on"]
            # heed splits a message into one copy per recipient (its own token), so the
            # sink sees R arrivals per message from heed and 1 from the others; the rate
            # compared is the tool's messages per second, each fully delivered.
            print(f"{r} recipient(s)/message:")
            for name, (arrived, secs) in results.items():
                print(f"  {name:26s} {arrived:6d} arrivals, {a.messages} messages in "
                      f"{secs:6.2f} s = {a.messages / secs:8.1f} messages/s")
            print(f"  heed / plain relay: {plain[1] / heed_r[1]:.2f}x;"
                  f" Redis commands per recipient: {cmds:.1f}\n")

        # Latency heed adds, at a fixed offered rate, 1 recipient per message.
        sink = Sink()
        relay = PlainRelay(sink.port)
        try:
            plain_lat = asyncio.run(latencies(relay.port, a.rate, a.seconds))
        finally:
            relay.stop()
            sink.stop()
        sink = Sink()
        heed = Heed(Path(tmp) / "heed-lat", sink.port,
                    [f"lat{n}@example.org" for n in range(int(a.rate * a.seconds))], a.workers)
        try:
            heed_lat = asyncio.run(latencies(heed.port, a.rate, a.seconds))
        finally:
            heed.stop()
            sink.stop()
    print(f"latency at {a.rate:.0f} messages/s for {a.seconds:.0f} s (1 recipient):")
    for name, lat in (("plain relay", plain_lat), ("heed", heed_lat)):
        print(f"  {name:12s} p50 {pct(lat, 50):6.2f} ms   p99 {pct(lat, 99):6.2f} ms   "
              f"({len(lat)} messages)")
    print(f"  heed adds    p50 {pct(heed_lat, 50) - pct(plain_lat, 50):6.2f} ms   "
          f"p99 {pct(heed_lat, 99) - pct(plain_lat, 99):6.2f} ms")


if __name__ == "__main__":
    main()
