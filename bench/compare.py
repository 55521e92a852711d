"""heed side by side with plain relays, what a sysadmin would build, and the smtp-sink ceiling.

    python bench/compare.py [--messages 5000] [--sessions 20] [--size 4096] [--rcpts 1,5]
                            [--workers 1[,2]] [--repeat 3] [--rate 200] [--seconds 10]
                            [--no-latency] [--no-postfix] [--quick]

(``python -m bench.compare`` works too.)

Load: Postfix's smtp-source (``-d -N``: persistent sessions, one distinct recipient
address per recipient). Receiver: Postfix's smtp-sink; its own running counter
(``-c``, written to a file) gives the messages that arrived, and the rate is the
tool's messages divided by the time from the first connection to the last arrival.
Targets, each fed the same load into a fresh sink, started fresh for every run:

1. smtp-sink direct (the ceiling);
2. plain relays: a minimal aiosmtpd pass-through (bench/plain_relay.py, 250 only
   after the sink accepted) and, when Postfix is installed and we are root, a
   private Postfix instance in a temp dir (relayhost = the sink, 250 once queued);
   The floor under heed: a per-copy signing relay (bench/signing_relay.py), aiosmtpd
   in, one RSA-2048-signed copy per recipient with its own one-click token out, and
   nothing else heed does: no Python design of heed can beat it on this machine;
3. the peer a sysadmin would build (bench/rig/peer.py): that Postfix with the
   OpenDKIM milter (RSA-2048, relaxed/simple) and postfwd as a per-recipient
   ``check_policy_service``; checked every run (a copy verified by dkimpy, postfwd's
   own count of requests);
4. heed with everything on (bench/rig/heed.py), once per ``--workers`` count.

``--repeat N`` runs every target N times, interleaved, the order reversed every
other repetition (the VM's steal changes within minutes); every run is printed,
with its ratio to the Postfix relay of the same repetition, then the medians.
Then the latency each adds at a fixed offered rate (one pass; ``--no-latency``
skips it), measured by a small aiosmtplib client (one message per transaction over
persistent sessions, timed from the moment it was due to the DATA reply).
Everything binds to 127.0.0.1; every wait is bounded; every child process is
stopped on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/compare.py` as well as `python -m bench.compare`
    sys.path.insert(0, str(ROOT))

# The parts, importable from here as before (bench/cpu.py, latency.py, sessions.py, tests).
from bench.rig.heed import HUGE, Heed, bench_policies, heed_latency  # noqa: E402,F401
from bench.rig.load import (  # noqa: E402,F401
    SENDER,
    Result,
    cpu_seconds,
    latencies,
    machine_busy,
    machine_cpu,
    pct,
    run_load,
    timed,
    watch,
)
from bench.rig.peer import Peer  # noqa: E402
from bench.rig.postfix import PostfixRelay, PostfixUnavailable  # noqa: E402
from bench.rig.procs import (  # noqa: E402,F401
    cleanup_all,
    descendants,
    on_cleanup,
    raise_interrupt,
    spawn,
)
from bench.rig.report import tables, versions  # noqa: E402
from bench.rig.settle import at_rest, settle  # noqa: E402,F401
from bench.rig.targets import PlainRelay, SigningRelay, Sink  # noqa: E402

SINK = "smtp-sink direct"


class Bench:
    """One invocation: the options, the temp dir, and what the report needs."""

    def __init__(self, a: argparse.Namespace, tmp: Path) -> None:
        self.a, self.tmp = a, tmp
        self.failures: list[str] = []
        self.notes: list[str] = []
        self.postfix_why = "skipped (--no-postfix)" if a.no_postfix else ""
        self.postfix_version = self.peer_version = ""
        self.redis_version = "?"
        self.policy_changes: list[str] = []
        self.seq = 0

    def targets(self) -> list[str]:
        names = [SINK, PlainRelay.name, SigningRelay.name]
        if not self.postfix_why:
            names += [PostfixRelay.name, Peer.name]
        return names + [heed_name(w) for w in self.a.workers]

    def run(self, name: str, r: int) -> Result | None:
        """One run of one target: a fresh sink and a fresh target, the load, checks."""
        a = self.a
        sink = Sink(self.tmp)
        copies = name.startswith("heed") or name == SigningRelay.name
        res = Result(name, a.messages, r, a.messages * r if copies else a.messages)
        target: Any = None
        try:
            target = sink if name == SINK else self.start(name, sink.port, r, a.messages * r)
            if target is None:
                return None
            if isinstance(target, Peer):
                res.note = target.verify()
            if isinstance(target, Heed):
                # The import's outbox and the first lifecycle pass: not the mail's work.
                started = settle(target)
                cmds0, reads0 = target.redis_stats()
                target.redis_stalls()
            run_load(target.port, sink, res, a.sessions, a.size, self.tmp, watch(sink, target))
            if isinstance(target, PostfixRelay | Peer):
                self.postfix_sent(target, res, r)
            if isinstance(target, Heed):
                self.notes.append(f"{name}, {r} rcpt/msg, {target.site.name}: "
                                  f"{redis_per_rcpt(target, res, cmds0, reads0)}; Redis stalls "
                                  f"{target.redis_stalls()}; {started}")
                if not res.ok:
                    res.note = f"heed log:\n{target.log_tail()}"
        finally:
            if target is not None and target is not sink:
                target.stop()
            sink.stop()
        if isinstance(target, Peer):
            asked = target.policy_requests()
            want = a.messages * r + 1  # every recipient, and verify()'s one
            res.note += (f"; postfwd asked {asked:,} times ({want - 1:,} recipients and "
                         "the DKIM check's 1)")
            if asked != want:
                res.source_rc = res.source_rc or -1
        if not res.ok:
            self.failures.append(f"{name}, {r} rcpt/msg: {res.arrived} of {res.expected} "
                                 f"arrived; smtp-source exit {res.source_rc}: "
                                 f"{res.source_err[-600:]} {res.note}")
        return res

    def start(self, name: str, sink_port: int, r: int, recipients: int) -> Any:
        self.seq += 1
        if name == PlainRelay.name:
            return PlainRelay(sink_port)
        if name == SigningRelay.name:
            return SigningRelay(sink_port)
        if name in (PostfixRelay.name, Peer.name):
            try:
                if name == Peer.name:
                    peer = Peer(self.tmp / f"peer-{self.seq}", sink_port)
                    self.peer_version = peer.version()
                    return peer
                pf = PostfixRelay(self.tmp / f"postfix-{self.seq}", sink_port)
                self.postfix_version = pf.version()
                return pf
            except PostfixUnavailable as exc:
                self.postfix_why = str(exc)
                return None
        # smtp-source -N numbers recipients 1, 2, 3, … across the whole run.
        heed = Heed(self.tmp / f"heed-{self.seq}", sink_port,
                    [f"{n}user@example.org" for n in range(1, recipients + 1)],
                    int(name.rsplit(" ", 1)[1]))
        self.policy_changes = heed.policy_changes
        self.redis_version = heed.redis_version()
        return heed

    def postfix_sent(self, pf: PostfixRelay | Peer, res: Result, r: int) -> None:
        """Postfix sends all recipients of a message in one transaction: its log says
        how many recipients were delivered."""
        want = self.a.messages * r + (1 if isinstance(pf, Peer) else 0)
        deadline = time.monotonic() + 10
        while pf.sent() < want and time.monotonic() < deadline:
            time.sleep(0.2)
        sent = pf.sent()
        res.note += ("; " if res.note else "") + f"{sent:,} recipients logged status=sent"
        if sent < want:
            res.note += "; " + " | ".join(pf.problems())
            res.source_rc = res.source_rc or -1

    def latency(self) -> dict[str, tuple[list[float], list[str], str]]:
        """The latency each target adds at --rate, one pass, 1 recipient per message."""
        a, lat = self.a, {}
        for name in self.targets():
            if name.startswith("heed"):
                # heed_latency(..., prepare=fn) calls fn(heed) before the timed load: here
                # heed's start-up work is waited out; the place for a Redis fault too
                # (e.g. an fsync stall) that the run should meet.
                waited: list[str] = []
                lat[name], redis_line, log = heed_latency(self.tmp, a.rate, a.seconds,
                                                          int(name.rsplit(" ", 1)[1]),
                                                          prepare=partial(_settled, waited))
                self.notes.append(f"latency run, {name}: {redis_line}; {''.join(waited)}")
                if lat[name][1]:
                    self.failures.append(f"{name} latency run: {len(lat[name][1])} errors, "
                                         f"first: {lat[name][1][0]}\nheed log:\n{log}")
                continue
            sink = Sink(self.tmp)
            target = None
            try:
                target = (sink if name == SINK else self.start(name, sink.port, 1, 0))
                if target is not None:
                    lat[name] = timed(latencies(target.port, a.rate, a.seconds))
            finally:
                if target is not None and target is not sink:
                    target.stop()
                sink.stop()
        return lat


def _settled(said: list[str], heed: Heed) -> None:
    said.append(settle(heed))


def heed_name(workers: int) -> str:
    return f"heed, everything on, --workers {workers}"


def redis_per_rcpt(heed: Heed, res: Result, cmds0: dict[str, int], reads0: int) -> str:
    cmds1, reads1 = heed.redis_stats()
    delivered = max(res.arrived, 1)  # heed: one arrival per recipient copy
    total = sum(v - cmds0.get(k, 0) for k, v in cmds1.items()
                if not k.startswith(("info", "latency", "config")))  # ours
    return (f"{total / delivered:.2f} Redis commands and {(reads1 - reads0 - 1) / delivered:.2f}"
            f" read events (≈ round trips) per recipient delivered")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--rcpts", default="1,5")
    p.add_argument("--workers", default="1",
                   help="heed serve --workers N; a list (1,2) runs heed once per count")
    p.add_argument("--repeat", type=int, default=3,
                   help="interleaved repetitions, order reversed every other one (3)")
    p.add_argument("--rate", type=float, default=200.0, help="latency run: messages/s offered")
    p.add_argument("--seconds", type=float, default=None,
                   help="latency run: duration (10 s; 3 s with --quick)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency run")
    p.add_argument("--no-postfix", action="store_true",
                   help="skip the Postfix relay and the peer built on it")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 500 messages, 1 repetition, 3 s latency")
    a = p.parse_args()
    if a.quick:
        a.messages, a.repeat = 500, 1
    if a.seconds is None:
        a.seconds = 3.0 if a.quick else 10.0
    a.workers = [int(x) for x in str(a.workers).split(",")]
    for tool in ("smtp-source", "smtp-sink"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install postfix (bash .ci/run does)")
    rcpt_counts = [int(x) for x in a.rcpts.split(",")]

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    atexit.register(cleanup_all)
    started = time.monotonic()
    print(f"command: python bench/compare.py {' '.join(sys.argv[1:])}  "
          f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})\n", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="heed-bench-") as tmp_s:
            b = Bench(a, Path(tmp_s))
            for r in rcpt_counts:
                runs: dict[str, list[Result | None]] = {n: [] for n in b.targets()}
                orders: list[list[str]] = []
                for rep in range(a.repeat):
                    order = b.targets() if rep % 2 == 0 else b.targets()[::-1]
                    orders.append(order)
                    for name in order:
                        runs.setdefault(name, []).append(b.run(name, r))
                runs = {k: v + [None] * (a.repeat - len(v)) for k, v in runs.items()}
                # Printed as each recipient count ends: a long run shows its figures early.
                print(tables(runs, PostfixRelay.name if not b.postfix_why else
                             PlainRelay.name, r, a.messages, orders), flush=True)
                print("\n".join(f"- {res.name}, run {i + 1}: {res.note}"
                                for rs in runs.values() for i, res in enumerate(rs)
                                if res is not None and res.note) + "\n", flush=True)
            lat = {} if a.no_latency else b.latency()
    finally:
        cleanup_all()
    report(b, lat, time.monotonic() - started)


def report(b: Bench, lat: dict[str, tuple[list[float], list[str], str]],
           wall: float) -> None:
    a = b.a
    print(versions(b.redis_version, b.postfix_version)
          + (f", {b.peer_version}" if b.peer_version else ""))
    print(f"heed workers: {','.join(map(str, a.workers))}; load: smtp-source -d -N, "
          f"{a.sessions} sessions, {a.messages} messages of {a.size} bytes, every recipient "
          "address distinct; counted at smtp-sink (its -c counter); rate = messages / (start "
          "of load to last arrival); every target started fresh for each run")
    print("plain relays: aiosmtpd pass-through (bench/plain_relay.py: aiosmtplib pool of 16 "
          "to the sink, 250 only after the sink accepted; one transaction per message)")
    print("  per-copy signing relay (bench/signing_relay.py): the same, but one copy per "
          "recipient, each with its own HMAC one-click token and RSA-2048 DKIM signature by "
          "heed's signer, copies of a message side by side on heed's pooled client; no "
          "policy, Redis, audit or log: the floor under heed")
    if b.postfix_why:
        print(f"  Postfix relay and peer: not run: {b.postfix_why}")
    else:
        print("  and a private Postfix instance (temp config/queue dir, relayhost = the sink, "
              "default concurrency; 250 once queued on disk; one transaction per message)")
        print("peer: the same Postfix + OpenDKIM milter (RSA-2048, relaxed/simple, "
              "news.example.com) + postfwd2 check_policy_service per RCPT (one rate rule that "
              "never fires); one signature per message for all its recipients")
    print("heed: embedded Redis (AOF, appendfsync always); shipped policies with every rule "
          "evaluated for every recipient; consent imported for every recipient; one copy per "
          "recipient with its own one-click List-Unsubscribe token, RSA-2048 DKIM signature on "
          "every copy. Changed from the shipped policy so bench mail is delivered, not held "
          "(the rules still run):")
    for c in b.policy_changes:
        print(f"  - {c}")
    print()
    if b.notes:
        print("heed's Redis per run (INFO commandstats / total_reads_processed deltas; latency "
              "monitor >= 5 ms):")
        for line in b.notes:
            print(f"- {line}")
        print()
    if lat:
        print(f"latency at {a.rate:.0f} messages/s offered for {a.seconds:.0f} s, 1 recipient, "
              f"20 persistent sessions; from when each message was due to the DATA reply:")
        for name, (values, errs, busy) in lat.items():
            print(f"  {name:34s} p50 {pct(values, 50):7.2f} ms   p99 {pct(values, 99):7.2f} ms"
                  f"   max {max(values, default=0) * 1000:7.2f} ms   ({len(values)} ok, "
                  f"{len(errs)} errors, {sum(v > 0.05 for v in values)} over 50 ms; {busy})")
        for h in (n for n in lat if n.startswith("heed") and lat[n][0]):
            for base in (n for n in (PlainRelay.name, PostfixRelay.name, Peer.name)
                         if n in lat and lat[n][0]):
                hv, bv = lat[h][0], lat[base][0]
                print(f"  {h} adds vs {base}: p50 {pct(hv, 50) - pct(bv, 50):.2f} ms, "
                      f"p99 {pct(hv, 99) - pct(bv, 99):.2f} ms")
    print(f"\nwall time {wall:.0f} s")
    if b.failures:
        print("\nFAILURES:")
        for f in b.failures:
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
