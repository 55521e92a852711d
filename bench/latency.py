"""Latency heed adds at a fixed offered rate, heed alone (compare.py runs every target).

    python -m bench.latency [--rate 200] [--seconds 10] [--workers 1[,2]] [--relay]
                            [--design single|split ...] [--appendfsync always|everysec|no ...]
                            [--stall-ms 150 --stall-every 2] [--repeat 3]

The same client as compare.py (20 persistent sessions, one recipient and one message
per transaction, timed from when the message was due to the DATA reply). ``--relay``
measures the aiosmtpd pass-through too, for the added figure. Redis's latency monitor
(stalls of Redis itself of 5 ms or more, e.g. AOF fsync) is printed with it.
``--design`` picks heed's Redis layout: ``single`` (``redis.split: false``: one Redis,
``appendfsync always``, what heed ran before the split; ``--appendfsync`` reruns it with
another setting) and ``split`` (the default: durable Redis ``always``, serving Redis
``everysec``, docs/architecture.md); both by default, side by side in each run.
``--stall-ms`` makes the disk stall: every redis-server heed starts sleeps that long in
one fsync every ``--stall-every`` seconds (bench/stall.py; this VM has no dm-delay).
``--repeat`` runs the whole set again, the order reversed every other run, every run printed.
``--workers 1,2`` runs heed with each number of workers in the same round (alternated
like the rest). Each heed run also prints the CPU time its processes took per message
(heed's workers and the redis-servers apart) and the share of a core each worker was
busy: at 200/s a worker busy 60 % of a core queues replies behind other messages'
work, whatever else the machine does; that share comes from CPU time, so the load
does not move it much, unlike the latency itself.
``--watch-ms 5`` (off by default: the watch's thread looks at the main thread's stack every
millisecond and takes the GIL to do it, which itself adds latency) has each heed worker
watch its own event loop (``loop_watch_ms``,
proxy/watch/loop.py) and print, per run: how often the loop was held longer than that, how
many of those holds were heed's own work (CPU over half the hold) rather than waiting for
a core, the garbage collector's pauses per generation, and the longest holds with the
stack they were caught in. A figure of latency is a run without it; a run with it says why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.compare import (  # noqa: E402
    Heed,
    PlainRelay,
    Sink,
    cleanup_all,
    latencies,
    pct,
    settle,
    timed,
)
from bench.rig.heed import redis_stalls  # noqa: E402
from bench.rig.load import cpu_seconds  # noqa: E402
from bench.rig.settle import QUIET  # noqa: E402
from bench.stall import apply_env, stalled_redis  # noqa: E402

WATCH_AT_REST = 0.10  # of a core, per watched worker (proxy/watch/loop.py looks every 1 ms)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--workers", default="1",
                   help="heed's workers; a list (1,2) runs each in the same round")
    p.add_argument("--relay", action="store_true", help="the aiosmtpd relay too")
    p.add_argument("--design", choices=["single", "split"], action="append",
                   help="heed on one Redis (redis.split: false) or on the split pair "
                        "(the default); repeatable, default both")
    p.add_argument("--appendfsync", choices=["always", "everysec", "no"], action="append",
                   help="the one Redis's appendfsync (repeatable; default always)")
    p.add_argument("--stall-ms", type=float, default=0.0,
                   help="every redis-server stalls one fsync this long (bench/stall.py)")
    p.add_argument("--stall-every", type=float, default=2.0,
                   help="seconds between two stalled fsyncs (default 2)")
    p.add_argument("--repeat", type=int, default=1, help="run everything this many times")
    p.add_argument("--watch-ms", type=float, default=0.0,
                   help="print heed's event-loop holds longer than this, with where, and its "
                        "GC pauses (loop_watch_ms); default 0: off, since watching costs "
                        "latency itself")
    a = p.parse_args()
    print(f"{a.rate:.0f} messages/s offered for {a.seconds:.0f} s, 1 recipient, 20 sessions, "
          f"heed workers {a.workers}" + (f"; fsync stalled {a.stall_ms:.0f} ms every "
                                         f"{a.stall_every:g} s" if a.stall_ms else "") + ":")
    try:
        with tempfile.TemporaryDirectory(prefix="heed-lat-") as tmp_s:
            tmp = Path(tmp_s)
            env: dict[str, str] = {}
            if a.stall_ms:
                with stalled_redis(tmp / "stall", stall_ms=a.stall_ms,
                                   every_s=a.stall_every) as made:
                    env = made
            env = dict(env, HEED_LOOP_WATCH_MS=f"{a.watch_ms:g}")
            for n in range(a.repeat):
                with apply_env(env):
                    one_round(a, tmp / f"run{n}", n)
    finally:
        cleanup_all()


def loop_watch(log: Path, window: tuple[float, float], threshold_ms: float) -> str:
    """What held heed's loop while the load ran (proxy/watch/loop.py's timed events, every
    worker together), then what each worker's watch said over its whole life."""
    said, events = [], []
    for line in log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(line).get("msg", line)
        except ValueError:
            pass
        if "loop watch event: " in line:
            events.append(line.split("loop watch event: ", 1)[1])
        elif "loop watch: " in line:
            said.append(line.split("loop watch: ", 1)[1])
    return in_window(events, window, threshold_ms) + "".join(
        f"\n    worker {n + 1}, from start-up on: {text[:600]} …" for n, text in enumerate(said))


def in_window(events: list[str], window: tuple[float, float], threshold_ms: float) -> str:
    """Late timers, long steps per source (and how many were heed's CPU) and GC pauses
    over the threshold, only those that ended while the load ran."""
    late: list[float] = []
    steps: dict[str, list[float]] = {}  # source -> [count, over by CPU, CPU sum, CPU max]
    gcs: dict[str, list[float]] = {}
    longest: list[tuple[float, float, str]] = []  # (cpu, wall, where) of steps
    for text in events:
        head, source, where = (text.split(" | ", 2) + ["", ""])[:3]
        parts = head.split()
        at, kind, ms, cpu = float(parts[0]), parts[1], float(parts[2]), float(parts[5])
        if not window[0] <= at <= window[1]:
            continue
        if kind == "late":
            late.append(ms)
            continue
        row = (steps if kind == "step" else gcs).setdefault(source, [0, 0, 0.0, 0.0])
        row[0] += 1
        row[1] += cpu > threshold_ms
        row[2] += cpu
        row[3] = max(row[3], cpu)
        if kind == "step":
            longest.append((cpu, ms, f"{source}: {where}"))

    def rows(table: dict[str, list[float]]) -> str:
        ranked = sorted(table.items(), key=lambda kv: (-kv[1][1], -kv[1][2]))
        shown = "; ".join(f"{src} {int(n)} ({int(c)} over by CPU, CPU {total:.0f} ms in all, "
                          f"up to {top:.1f} ms)" for src, (n, c, total, top) in ranked[:8])
        rest = ranked[8:]
        return shown + (f"; {len(rest)} more sources, {sum(int(r[0]) for _, r in rest)} steps "
                        f"({sum(int(r[1]) for _, r in rest)} over by CPU)" if rest else "")
    top = " | ".join(f"cpu {c:.1f} ms (wall {w:.1f}) at {where}"
                     for c, w, where in sorted(longest, reverse=True)[:5])
    return (f"    while the load ran: timers late over {threshold_ms:g} ms {len(late)} times"
            f" (latest {max(late, default=0):.1f} ms); steps over {threshold_ms:g} ms: "
            f"{rows(steps) or 'none'}\n    GC pauses over {threshold_ms:g} ms: "
            f"{rows(gcs) or 'none'}\n    the longest steps by CPU: {top or 'none'}")


def cpu_line(before: dict[str, float], after: dict[str, float], messages: int,
             seconds: float, workers: int, rate: float, pids: list[int]) -> str:
    """heed's CPU per message during the timed run (``seconds`` of wall time): what the
    offered rate asks of each worker (over 100 %: saturated, whatever the machine), what
    each worker got, and the workers' memory."""
    used = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    redis_s = sum(v for k, v in used.items() if k.startswith("redis"))
    heed_s = sum(used.values()) - redis_s
    per = heed_s / max(1, messages)
    return (f"heed CPU {per * 1000:.2f} ms a message: {rate:g} messages/s ask "
            f"{per * rate / workers * 100:.0f} % of a core per worker, which got "
            f"{heed_s / seconds / workers * 100:.0f} %; redis-servers "
            f"{redis_s * 1000 / max(1, messages):.2f} ms; heed's RSS {rss_mb(pids):.0f} MB")


def rss_mb(pids: list[int]) -> float:
    """Resident memory of heed's own processes (not the redis-servers), in MB."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "redis" in status.split("\n", 1)[0]:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines()
                       if line.startswith("VmRSS:")), 0)
    return total / 1024


def heed_run(a: argparse.Namespace, tmp: Path, design: str, fsync: str,
             workers: int) -> tuple[tuple[list[float], list[str], str], str]:
    """One heed latency run into a fresh sink: (timings, Redis stalls seen meanwhile, and
    what heed's loop watch saw)."""
    sink = Sink(tmp)
    site = tmp / f"heed-{design}-{fsync}-w{workers}"
    heed = Heed(site, sink.port, [f"lat{n}@example.org" for n in range(int(a.rate * a.seconds))],
                workers, redis_options=", split: false" if design == "single" else "")
    durable = None
    try:
        if design == "single" and fsync != "always":
            heed.redis.config_set("appendfsync", fsync)
        if design == "split":
            durable = redis.Redis(unix_socket_path=str(site / "var/redis/durable/redis.sock"))
            durable.config_set("latency-monitor-threshold", 5)
            durable.execute_command("LATENCY", "RESET")
        # The import's outbox and the first lifecycle pass over the imported people run
        # at start-up: waited out, so the figure is the mail's (the hourly pass's own
        # effect: HEED_TELL__LIFECYCLE_EVERY, bench/README.md).
        # A watched worker's looking thread wakes every millisecond: ~6 % of a core at
        # rest on this VM, which "at rest" must allow for.
        started = settle(heed, quiet=QUIET + (WATCH_AT_REST * workers if a.watch_ms else 0))
        heed.redis_stalls()
        pids = heed.pids()
        cpu0, t0 = cpu_seconds(pids), time.time()
        run = timed(latencies(heed.port, a.rate, a.seconds))
        window = (t0, time.time())
        used = cpu_line(cpu0, cpu_seconds(pids), len(run[0]) + len(run[1]),
                        window[1] - window[0], workers, a.rate, pids)
        stalls = heed.redis_stalls()
        if durable is not None:
            stalls = f"serving: {stalls}; durable: {redis_stalls(durable)}"
    finally:
        if durable is not None:
            durable.close()
        heed.stop()
        sink.stop()
    watched = loop_watch(heed.log_path, window, a.watch_ms) if a.watch_ms else ""
    return run, f"{used}; Redis latency monitor: {stalls}; {started}" + (
        f"\n   heed's event loop:\n{watched}" if watched else "")


def one_round(a: argparse.Namespace, tmp: Path, n: int) -> None:
    """The relay (with --relay) and heed in each design, the order reversed every other run."""
    tmp.mkdir()
    runs: dict[str, tuple[list[float], list[str], str]] = {}
    stalls: dict[str, str] = {}
    targets: list[tuple[str, str, int]] = [("relay", "", 0)] if a.relay else []
    for workers in [int(w) for w in str(a.workers).split(",")]:
        for design in a.design or ["single", "split"]:
            fsyncs = (a.appendfsync or ["always"]) if design == "single" else ["everysec"]
            targets += [(design, f, workers) for f in fsyncs]
    for design, fsync, workers in targets if n % 2 == 0 else targets[::-1]:
        if design == "relay":
            sink = Sink(tmp)
            relay = PlainRelay(sink.port)
            try:
                runs[relay.name] = timed(latencies(relay.port, a.rate, a.seconds))
            finally:
                relay.stop()
                sink.stop()
            continue
        name = (f"heed, one Redis ({fsync})" if design == "single"
                else "heed, split (durable always)") + (f", {workers} workers" if workers > 1
                                                         else "")
        runs[name], stalls[name] = heed_run(a, tmp, design, fsync, workers)
    base = runs.get(PlainRelay.name)
    print(f" run {n + 1}:")
    for name, (values, errors, busy) in runs.items():
        added = ""
        if base is not None and name != PlainRelay.name:
            added = (f"   added p50 {pct(values, 50) - pct(base[0], 50):+.2f} ms, "
                     f"p99 {pct(values, 99) - pct(base[0], 99):+.2f} ms")
        print(f"  {name:30s} p50 {pct(values, 50):7.2f} ms   p90 {pct(values, 90):7.2f} ms   "
              f"p99 {pct(values, 99):7.2f} ms   max {max(values, default=0) * 1000:7.2f} ms   "
              f"({len(values)} ok, {len(errors)} errors; {busy}){added}")
    for name, events in stalls.items():
        print(f"  {name}: {events}")
    print(f"  load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
