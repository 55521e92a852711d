"""The load (smtp-source at full speed, an aiosmtplib client at a fixed rate) and CPU accounting."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib

from bench.rig.procs import spawn
from bench.rig.targets import Sink

SENDER = "offers@news.example.com"  # *@news.example.com: the shipped policy's marketing sender


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
        name = stat[stat.index("(") + 1:stat.rindex(")")].strip()
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



def timed(coro: Any) -> tuple[list[float], list[str], str]:
    m0 = machine_cpu()
    values, errors = asyncio.run(coro)
    return values, errors, machine_busy(m0, machine_cpu())


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1] * 1000 if len(values) > 1 else float("nan")

