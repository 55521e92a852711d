"""heed's start-up work waited out before a timed load, and heed at rest measured.

A fresh heed has work that is not the mail's: the tell worker turns the import's
``consent.granted`` outbox entries into jobs (or drops them), and the first lifecycle
pass reads every imported person for a baseline (docs/tell.md). Run during a
timed load, it is counted as the mail's CPU and slows the mail; measured as "idle"
after a short load, it is counted as heed's rest. The benchmarks wait for it first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.rig.load import cpu_seconds
from proxy.keys import Keys

QUIET = 0.05  # of a core: heed at rest uses ~1 % (its timers, the tell worker's wait)
WINDOW = 2.0  # seconds a CPU sample spans


def _cpu(heed: Any) -> float:
    return sum(cpu_seconds(heed.pids()).values())


def settle(heed: Any, timeout: float = 900.0, quiet: float = QUIET) -> str:
    """Wait until heed's outbox is drained, its first lifecycle pass made (when the code
    records it: ``keys.tell_lifecycle_last``; older checkouts do not) and its processes
    use under ``quiet`` of a core; returns a line saying how long that took, and its CPU."""
    keys = Keys()
    last = getattr(keys, "tell_lifecycle_last", None)
    t0 = prev_t = time.monotonic()
    c0 = prev = _cpu(heed)
    while True:
        time.sleep(WINDOW)
        now, cpu = time.monotonic(), _cpu(heed)
        rate, prev, prev_t = (cpu - prev) / (now - prev_t), cpu, now
        outbox = int(heed.redis.xlen(keys.tell_outbox))
        passed = last is None or bool(heed.redis.exists(last))
        if outbox == 0 and passed and rate < quiet:
            return (f"heed settled in {now - t0:.1f} s, {cpu - c0:.2f} s CPU (outbox "
                    f"drained, {'lifecycle pass made, ' if last else ''}heed under "
                    f"{quiet:.0%} of a core)")
        if now - t0 > timeout:
            raise RuntimeError(f"heed still busy after {timeout:.0f} s: outbox {outbox}, "
                               f"lifecycle pass made: {passed}, {rate:.0%} of a core")


@dataclass
class Rest:
    """heed at rest over ``seconds``: CPU share of a core, Redis commands and round trips
    a minute."""

    seconds: float
    cpu_share: float
    commands: dict[str, float]  # command -> calls a minute (EVAL's inner calls included)
    by_process: dict[str, float]  # command name (python, redis-server) -> share of a core
    reads: float = 0.0  # Redis read events a minute (~ round trips), both servers

    def line(self) -> str:
        total = sum(self.commands.values())
        top = ", ".join(f"{k} {v:.0f}" for k, v in sorted(self.commands.items(),
                                                         key=lambda kv: -kv[1]) if v >= 0.5)
        procs = ", ".join(f"{k} {v * 100:.2f} %" for k, v in sorted(self.by_process.items()))
        return (f"heed at rest ({self.seconds:.0f} s): {self.cpu_share * 100:.2f} % of a core "
                f"({procs}), {total:.0f} Redis commands a minute ({top or 'none'}); "
                f"{self.reads:.0f} read events (round trips) a minute")


def calls(heed: Any) -> tuple[dict[str, int], int]:
    """Calls per command on the serving Redis and (``durable:``) the durable one, if split;
    and the read events of both (each count includes the INFO that reads it)."""
    out, reads = heed.redis_stats()
    out = dict(out)
    sock = Path(heed.site) / "var" / "redis" / "durable" / "redis.sock"
    if sock.exists():
        durable = redis.Redis(unix_socket_path=str(sock))
        try:
            out.update({"durable:" + k.removeprefix("cmdstat_"): v["calls"]
                        for k, v in durable.info("commandstats").items()})
            reads += int(durable.info("stats").get("total_reads_processed", 0))
        finally:
            durable.close()
    return out, reads


def at_rest(heed: Any, seconds: float) -> Rest:
    """Measure heed doing nothing (call after ``settle``)."""
    (cmds0, reads0), c0 = calls(heed), cpu_seconds(heed.pids())
    time.sleep(seconds)
    c1, (cmds1, reads1) = cpu_seconds(heed.pids()), calls(heed)
    per_min = {k: (v - cmds0.get(k, 0)) * 60 / seconds for k, v in cmds1.items()
               if not k.removeprefix("durable:").startswith(("info", "latency", "config"))
               and v > cmds0.get(k, 0)}
    by = {k: (v - c0.get(k, 0.0)) / seconds for k, v in c1.items()}
    return Rest(seconds, sum(by.values()), per_min, by, (reads1 - reads0) * 60 / seconds)
