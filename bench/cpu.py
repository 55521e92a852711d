"""heed alone under smtp-source load: CPU time per message and Redis round trips per recipient.

    python -m bench.cpu [--messages 3000] [--sessions 20] [--rcpts 1] [--workers 1]
                        [--idle 30] [--profile prof.json]

CPU time (user+system, from /proc) does not depend much on what else the machine
is doing, so this is the figure to compare while other work shares the cores;
throughput is compare.py's job. Same setup as compare.py's heed (everything on,
embedded Redis with appendfsync always). heed's start-up work (the import's outbox
entries, the first lifecycle pass over every imported person) is waited out before
the load and reported apart (bench/rig/settle.py); after the load heed is measured
at rest for ``--idle`` seconds: its CPU share and Redis commands a minute. ``--profile``
attaches py-spy to every heed worker during the load and writes a speedscope file per
worker.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.compare import (  # noqa: E402
    Heed,
    Result,
    Sink,
    at_rest,
    cleanup_all,
    cpu_seconds,
    descendants,
    run_load,
    settle,
    spawn,
    watch,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=3000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rcpts", type=int, default=1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--idle", type=float, default=30.0,
                   help="seconds heed rests after the load, to measure its background CPU "
                        "and Redis commands")
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy speedscope output (one file per worker: NAME.PID.json)")
    a = p.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="heed-cpu-") as tmp_s:
            tmp = Path(tmp_s)
            addresses = [f"{n}user@example.org" for n in range(1, a.messages * a.rcpts + 1)]
            sink = Sink(tmp)
            heed = Heed(tmp / "heed", sink.port, addresses, a.workers)
            started = settle(heed)
            spies = []
            if a.profile is not None:
                workers = [pid for pid in descendants(heed.proc.pid)
                           if "redis" not in cpu_name(pid)] or [heed.proc.pid]
                if a.workers > 1:
                    workers = [w for w in workers if w != heed.proc.pid]
                for pid in workers:
                    out = a.profile.with_suffix(f".{pid}.json")
                    spies.append(spawn([str(Path(sys.executable).parent / "py-spy"), "record",
                                        "--pid", str(pid), "--format", "speedscope", "--rate",
                                        "200", "-o", str(out)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            pids = [heed.proc.pid, *descendants(heed.proc.pid)]
            cmds0, reads0 = heed.redis_stats()
            per0 = {pid: cpu_seconds([pid]) for pid in pids}
            res = run_load(heed.port, sink,
                           Result(heed.name, a.messages, a.rcpts, a.messages * a.rcpts),
                           a.sessions, a.size, tmp, watch(heed))
            cmds1, reads1 = heed.redis_stats()
            per1 = {pid: cpu_seconds([pid]) for pid in pids}
            for proc, _stop in spies:
                proc.send_signal(2)  # SIGINT: py-spy writes its file and exits
                proc.wait(30)
            # What heed spends with no mail (timers, the tell worker's wait), measured
            # after the load once what the load left is done: on a loaded machine a run
            # takes longer, and this share of its CPU per message grows with it, so it
            # is reported apart.
            after = settle(heed)
            rest = at_rest(heed, a.idle)
            idle_rate = rest.cpu_share
            heed.stop()
            sink.stop()
    finally:
        cleanup_all()
    delivered = max(res.arrived, 1)
    calls = sum(v - cmds0.get(k, 0) for k, v in cmds1.items()
                if not k.startswith(("info", "latency", "config")))
    print(f"{a.messages} messages x {a.rcpts} rcpt, {a.sessions} sessions, {a.workers} worker(s):"
          f" {res.arrived} of {res.expected} arrived in {res.secs:.2f} s "
          f"({res.rate:.0f} msg/s; {res.machine})")
    for name, secs in sorted(res.cpu.items(), key=lambda kv: -kv[1]):
        print(f"  CPU {name:16s} {secs * 1000 / a.messages:6.3f} ms/message")
    for pid in pids:
        for name, secs in per1[pid].items():
            used = secs - per0[pid].get(name, 0.0)
            if used > 0.05:
                print(f"    pid {pid} ({name}): {used / res.secs * 100:.0f}% of a core")
    total = sum(res.cpu.values())
    print(f"  start-up work (before the load): {started}")
    print(f"  CPU total        {total * 1000 / a.messages:6.3f} ms/message")
    background = idle_rate * res.secs
    net = (total - background) * 1000 / a.messages
    print(f"  CPU background   {background * 1000 / a.messages:6.3f} ms/message (heed at rest: "
          f"{idle_rate * 100:.2f} % of a core, times the {res.secs:.1f} s of load)")
    print(f"  CPU net          {net:6.3f} ms/message, {net / a.rcpts:.3f} ms per copy")
    print(f"  Redis: {calls / delivered:.2f} commands and "
          f"{(reads1 - reads0 - 1) / delivered:.2f} read events (round trips) per recipient")
    # Per command; Redis counts each redis.call inside a script as well as the EVAL.
    per = {k: (v - cmds0.get(k, 0)) / delivered for k, v in cmds1.items()
           if not k.startswith(("info", "latency", "config"))}
    print("  Redis commands per recipient: " + ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.01))
    print(f"  after the load: {after}")
    print(f"  {rest.line()}")
    if not res.ok:
        print(f"  NOT OK: smtp-source exit {res.source_rc} {res.source_err[-400:]} {res.note}")
        sys.exit(1)


def cpu_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


if __name__ == "__main__":
    main()
