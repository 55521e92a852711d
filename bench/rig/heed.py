"""heed with everything on, in a temp site, as the benchmarks run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import redis
import yaml

from bench.rig.load import latencies, timed
from bench.rig.procs import ROOT, descendants, spawn
from bench.rig.targets import Sink
from proxy.embedded_redis import free_port, wait_port

HUGE = 1_000_000  # cap limits in the bench policy: looked up, never reached


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


def stream_domains(policies: Path) -> list[str]:
    """The From domains streams name (``from_domains``), other than the bench sender's."""
    out: list[str] = []
    for f in sorted(policies.glob("*.yaml")):
        for stream in ((yaml.safe_load(f.read_text()) or {}).get("streams") or {}).values():
            out += [d for d in stream.get("from_domains") or []
                    if d != "news.example.com" and d not in out]
    return out


class Heed:
    """`heed serve` in a temp site: embedded Redis as shipped (split: serving everysec,
    durable always; ``redis_options=", split: false"``: one Redis, always), the shipped
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
        # A key for the marketing sender's domain and for every stream's own From
        # domain, as `heed check` asks of a signed setup.
        keys = []
        for domain in ["news.example.com", *stream_domains(site / "policies")]:
            keygen = subprocess.run(heed + ["dkim", "keygen", domain, "s1", "--dir",
                                            f"keys/{domain}"], cwd=site, env=env,
                                    capture_output=True, text=True, timeout=60)
            if keygen.returncode != 0:
                raise RuntimeError(f"heed dkim keygen failed: {keygen.stderr[-500:]}")
            key = next((site / "keys" / domain).glob("*.pem"))
            keys.append(f"{{domain: {domain}, selector: s1, key_file: {key}}}")
        (site / "config" / "heed.yaml").write_text(f"""
smtp: {{listen: "127.0.0.1:{self.port}", max_sessions: 2000{smtp_options}}}
upstream: {{host: 127.0.0.1, port: {upstream_port}, pool_size: 32}}
redis: {{data_dir: var/redis{redis_options}}}
http: {{listen: "127.0.0.1:{free_port()}", public_url: "https://heed.bench"}}
unsubscribe: {{mailto_domain: heed.bench}}
dkim: [{", ".join(keys)}]
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
        # Redis's own latency monitor (the serving Redis, the one every decision reads):
        # how long an fsync blocked it.
        self.redis.config_set("latency-monitor-threshold", 5)

    def redis_stalls(self) -> str:
        """Redis latency events (>= 5 ms) since the last call, e.g. AOF fsync, then reset."""
        return redis_stalls(self.redis)

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



def redis_stalls(client: redis.Redis) -> str:
    """A Redis's latency events (>= 5 ms) since the last call, then reset: per event, its
    longest, and in how many seconds it happened (LATENCY HISTORY keeps one sample a
    second, the last 160)."""
    said = []
    for e in client.execute_command("LATENCY", "LATEST") or []:
        name = e[0].decode() if isinstance(e[0], bytes) else e[0]
        seconds = len(client.execute_command("LATENCY", "HISTORY", name) or [])
        said.append(f"{name} max {e[3]} ms in {seconds} s")
    client.execute_command("LATENCY", "RESET")
    return ", ".join(said) or "none >= 5 ms"


def heed_latency(tmp: Path, rate: float, seconds: float, workers: int,
                 appendfsync: str | None = None,
                 prepare: Callable[[Heed], None] | None = None
                 ) -> tuple[tuple[list[float], list[str], str], str, str]:
    """heed's latency run into a fresh sink: (timings, Redis stalls, heed's log tail).

    ``appendfsync`` changes the serving Redis's setting for the run (CONFIG SET), to
    show what an fsync of every write there would cost (bench/latency.py compares the
    designs: one Redis, or the shipped durable + serving pair).
    ``prepare(heed)``, if given, runs just before the timed load: the place for a
    fault in heed's Redis (e.g. an injected fsync stall) that the run should meet.
    """
    sink = Sink(tmp)
    heed = Heed(tmp / f"heed-lat-{appendfsync or 'always'}-w{workers}", sink.port,
                [f"lat{n}@example.org" for n in range(int(rate * seconds))], workers)
    try:
        if appendfsync:
            heed.redis.config_set("appendfsync", appendfsync)
        if prepare is not None:
            prepare(heed)
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

