"""`heed report --since 30d` over a million people and audit entries: wall time, peak RSS.

    python -m bench.report [--people 1000000] [--audit 1000000] [--days 60] [--since 30d]
                           [--source DIR ...] [--repeat N] [--exact]

Fills a fresh redis-server (no persistence) through ``redis-cli --pipe`` with a mix of
people (consents, revoked consents, refusals of one list or of all, engagement, sends
within the caps' window, re-permission asks) and audit entries of every kind the report
reads, spread over 60 days; then runs ``heed report --format json`` as a subprocess and
prints its wall time, CPU time and peak RSS (``wait4``'s rusage of that child) next to
redis-server's ``used_memory`` and the CPU it spent answering. ``--source DIR`` runs the
heed of another checkout (``git worktree add /tmp/old <commit>``) on the same data, to
show an old and a new cost side by side; ``--exact`` passes ``--exact`` to the report.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0
PREFIX = "heed"
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "aol.com",
           "web.de", "gmx.de", "t-online.de", "yahoo.de")


Command = tuple[str, ...]


def resp(args: Command) -> bytes:
    """One command in the Redis protocol (what ``redis-cli --pipe`` reads)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def address(i: int) -> str:
    return f"person{i}@{DOMAINS[i % len(DOMAINS)]}"


def people(n: int, now: float, rng: random.Random) -> Iterator[Command]:
    """A person's keys as heed writes them (proxy/state.py), in a realistic mix."""
    batch: list[str] = []
    for i in range(n):
        a = address(i)
        p = f"{PREFIX}:p:{{{a}}}:"
        roll = rng.random()
        granted = now - rng.uniform(30, 700) * DAY
        if roll < 0.94:  # 90 % consented, 4 % withdrew it, 6 % never consented
            rec = {"list": "marketing", "granted_at": granted, "source": "import", "ip": "",
                   "text": "Yes, send me offers"}
            if roll >= 0.90:
                rec |= {"revoked_at": granted + 3 * DAY, "revoked_by": "page"}
            yield ("HSET", p + "consent", "marketing", json.dumps(rec))
        if rng.random() < 0.05:
            scope = "marketing" if rng.random() < 0.7 else "*"
            kind = rng.choice(("unsubscribe", "unsubscribe", "unsubscribe", "complaint",
                               "bounce"))
            yield ("HSET", p + "refusal", scope, json.dumps(
                {"kind": kind, "at": now - rng.uniform(0, 300) * DAY, "channel": "one-click"}))
        total = rng.randint(0, 30)
        if total:
            first = now - rng.uniform(1, 400) * DAY
            fields = ["total_sends", str(total), "first_send", repr(first)]
            if rng.random() < 0.6:
                at = now - rng.uniform(0, (now - first) / DAY) * DAY
                since = rng.randint(0, total)
                fields += ["last_engaged", repr(at), "sends_since", str(since),
                           "last_kind", "click", "at:click", repr(at),
                           "n:click", str(total - since)]
            else:
                fields += ["sends_since", str(total)]
            if rng.random() < 0.03:
                fields += ["repermission:marketing", f"{now - rng.uniform(0, 90) * DAY}|<m{i}@x>"]
            yield ("HSET", p + "engage", *fields)
            if rng.random() < 0.3:
                at = now - rng.uniform(0, 30) * DAY
                yield ("ZADD", p + "sends", repr(at), f"marketing|{i:012x}")
        batch.append(a)
        if len(batch) == 1000:
            yield ("SADD", f"{PREFIX}:people", *batch)
            batch = []
    if batch:
        yield ("SADD", f"{PREFIX}:people", *batch)


# (share, kind, outcome, stream, reasons, detail): what a month of mail leaves in the trail.
MIX = (
    (0.55, "decision", "delivered", "marketing", "[]", ""),
    (0.12, "intent", "sending", "marketing", "[]", ""),
    (0.05, "decision", "delivered", "transactional", "[]", ""),
    (0.06, "decision", "reject", "marketing", '["no_consent: no consent to marketing"]', ""),
    (0.03, "decision", "reject", "marketing", '["refused: unsubscribe of marketing"]', ""),
    (0.03, "decision", "queued", "marketing", '["quiet_hours: until 08:00"]', ""),
    (0.01, "decision", "reject", "marketing", '["domain_guard: 4 complaints"]', ""),
    (0.015, "change", "refused", "marketing", "[]", "unsubscribe of marketing via one-click"),
    (0.005, "change", "refused", "marketing", "[]", "unsubscribe of marketing via page"),
    (0.002, "change", "refused", "*", "[]", "complaint of all marketing via arf"),
    (0.003, "change", "refused", "*", "[]", "bounce of all marketing via dsn"),
    (0.08, "change", "engaged", "marketing", "[]", "click via tracked link"),
    (0.025, "change", "granted", "marketing", "[]", "import"),
    (0.005, "change", "tool-told", "marketing", "[]", "one-click 200"),
)


def audit(m: int, n_people: int, now: float, rng: random.Random,
          days: float = 60) -> Iterator[Command]:
    """``m`` entries spread over the last ``days``, ids the ms of their time (as XADD gives)."""
    times = sorted(now - rng.uniform(0, days) * DAY for _ in range(m))
    shares = [x[0] for x in MIX]
    picks = rng.choices(range(len(MIX)), weights=shares, k=m)
    last = 0
    for at, pick in zip(times, picks, strict=True):
        _, kind, outcome, stream, reasons, detail = MIX[pick]
        ms = max(int(at * 1000), last + 1)
        last = ms
        delivered = outcome == "delivered" and stream == "marketing"
        yield ("XADD", f"{PREFIX}:audit", f"{ms}-0",
                   "at", repr(at), "kind", kind, "recipient", address(rng.randrange(n_people)),
                   "outcome", outcome, "stream", stream, "message_id", f"<c{ms}@shop.example>",
                   "sender", "offers@news.example.com", "policy_version", "2026-11-01+bench",
                   "correlation_id", f"{ms:x}", "detail", detail,
                   "one_click", ("signed" if rng.random() < 0.97 else "unsigned") if delivered
                   else "", "body_link", "inserted" if delivered else "", "reasons", reasons)


def fill(port: int, n_people: int, m_audit: int, now: float, days: float = 60) -> float:
    t0 = time.monotonic()
    rng = random.Random(17)
    with subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL) as cli:
        assert cli.stdin is not None
        buf: list[bytes] = []
        for chunks in (people(n_people, now, rng), audit(m_audit, n_people, now, rng, days)):
            for c in chunks:
                buf.append(resp(c))
                if len(buf) >= 5000:
                    cli.stdin.write(b"".join(buf))
                    buf = []
        cli.stdin.write(b"".join(buf))
        cli.stdin.close()
        if cli.wait() != 0:
            raise SystemExit("redis-cli --pipe failed")
    return time.monotonic() - t0


def info(port: int, section: str) -> dict[str, str]:
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", section], capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def steal() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine, from /proc/stat."""
    cpu = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return cpu[7], sum(cpu)


def run_report(port: int, source: Path, since: str, exact: bool, tmp: Path) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(source), XDG_STATE_HOME=str(tmp / "state"))
    cmd = [sys.executable, "-m", "proxy", "report", "--redis", f"redis://127.0.0.1:{port}/0",
           "--policies", str(ROOT / "policies"), "--since", since, "--format", "json"]
    if exact:
        cmd.append("--exact")
    cpu0 = info(port, "cpu")
    st0 = steal()
    t0 = time.monotonic()
    with open(tmp / "report.json", "wb") as out, open(tmp / "report.err", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=source, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    st1 = steal()
    cpu1 = info(port, "cpu")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"heed report failed: {(tmp / 'report.err').read_text()[-2000:]}")
    redis_cpu = sum(float(cpu1[k]) - float(cpu0[k]) for k in ("used_cpu_sys", "used_cpu_user"))
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024, "redis_cpu": redis_cpu,
            "steal": 100.0 * (st1[0] - st0[0]) / max(1, st1[1] - st0[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=1_000_000)
    p.add_argument("--audit", type=int, default=1_000_000)
    p.add_argument("--since", default="30d")
    p.add_argument("--days", type=float, default=60,
                   help="days the audit entries are spread over (30: all in the window)")
    p.add_argument("--source", type=Path, action="append", default=None,
                   help="heed checkout to run (repeat to run several on the same data)")
    p.add_argument("--exact", action="store_true", help="pass --exact to heed report")
    p.add_argument("--repeat", type=int, default=1, help="runs per source, interleaved")
    a = p.parse_args()
    sources = a.source or [ROOT]
    from proxy.embedded_redis import free_port

    with tempfile.TemporaryDirectory(prefix="heed-report-") as tmp_s:
        tmp = Path(tmp_s)
        port = free_port()
        server = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", tmp_s], stdout=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True,
                                  text=True).stdout.strip() == "PONG":
                    break
                time.sleep(0.05)
            now = time.time()
            took = fill(port, a.people, a.audit, now, a.days)
            mem = info(port, "memory")
            print(f"filled {a.people:,} people and {a.audit:,} audit entries over {a.days:g} "
                  f"days in {took:.1f} s; "
                  f"redis-server used_memory {int(mem['used_memory']) / 2**20:.0f} MB")
            for rep in range(a.repeat):
                for source in sources:
                    load = os.getloadavg()[0]
                    r = run_report(port, source, a.since, a.exact, tmp)
                    figures = json.loads((tmp / "report.json").read_text())
                    life = figures.get("lifecycle", {}).get("marketing", {})
                    mem = info(port, "memory")
                    print(f"[{rep + 1}] {source}: heed report --since {a.since}"
                          f"{' --exact' if a.exact else ''}: wall {r['wall']:.1f} s, "
                          f"heed CPU {r['cpu']:.1f} s, peak RSS {r['rss_mb']:.0f} MB; "
                          f"redis-server CPU {r['redis_cpu']:.1f} s, used_memory "
                          f"{int(mem['used_memory']) / 2**20:.0f} MB (peak "
                          f"{int(mem['used_memory_peak']) / 2**20:.0f} MB); "
                          f"load {load:.2f}, steal {r['steal']:.0f} %")
                    print(f"    lifecycle marketing: {json.dumps(life, sort_keys=True)}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
