"""What compare.py prints: versions, a markdown table per recipient count (every run, medians)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from pathlib import Path

import aiosmtplib

from bench.rig.load import Result


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



def cpu_ms_per_rcpt(res: Result) -> float:
    """CPU ms of the target's own processes (not the sink's) per recipient delivered."""
    own = sum(v for k, v in res.cpu.items() if k != "smtp-sink")
    return own * 1000 / (res.messages * res.rcpts) if res.messages else 0.0


def tables(runs: dict[str, list[Result | None]], base: str, r: int, messages: int,
           orders: list[list[str]]) -> str:
    """Markdown: throughput of every run with its ratio to `base` in the same repetition,
    the medians, then CPU per process and the machine's busy share and steal per run."""
    n = len(orders)
    head = "| target | " + " | ".join(f"run {i + 1}" for i in range(n))
    sep = "| --- " * (n + 2) + "|"
    out = [f"#### {r} recipient(s) per message: {messages:,} messages, {messages * r:,} "
           f"recipients, {n} interleaved repetition(s)", "",
           "messages/s · recipients/s · × " + base + " (same repetition)", "",
           head + " | median |", sep]
    for name, results in runs.items():
        cells, rates, ratios = [], [], []
        for i, res in enumerate(results):
            b = runs.get(base, [None] * n)[i]
            if res is None:
                cells.append("–")
                continue
            ratio = res.rate / b.rate if b and b.ok and b.rate else None
            flag = "" if res.ok else " FAILED"
            cells.append(f"{res.rate:,.0f} · {res.rate * r:,.0f}"
                         + (f" · {ratio:.2f}×" if ratio is not None else "") + flag)
            if res.ok:
                rates.append(res.rate)
                if ratio is not None:
                    ratios.append(ratio)
        med = (f"**{statistics.median(rates):,.0f} · {statistics.median(rates) * r:,.0f}"
               + (f" · {statistics.median(ratios):.2f}×" if ratios else "") + "**"
               if rates else "–")
        out.append(f"| {name} | " + " | ".join(cells) + f" | {med} |")
    out += ["", "CPU of each process (% of one core over the run), CPU ms per recipient "
            "(the target's processes, not the sink's), whole machine", "", head + " |",
            "| --- " * (n + 1) + "|"]
    for name, results in runs.items():
        cells = []
        for res in results:
            if res is None:
                cells.append("–")
                continue
            per = "" if name.startswith("smtp-sink") else f"; {cpu_ms_per_rcpt(res):.2f} ms/rcpt"
            cells.append(f"{cpu_line(res)}{per}; {res.machine}")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "order: " + "; ".join(f"run {i + 1}: " + " → ".join(o)
                                      for i, o in enumerate(orders))]
    return "\n".join(out)
