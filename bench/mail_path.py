"""heed's whole mail path in one process: CPU per message from the client's MAIL to the upstream.

    python -m bench.mail_path [--messages 600] [--sessions 1] [--rounds 3] [--source DIR …]

heed as `heed serve` builds it (proxy/app.py, the bench site of bench.cpu: shipped policies
made bench-safe, RSA-2048 DKIM, consent for every address, JSON decision lines at INFO
to a file), but in this process and without the scheduler, the tool's worker or HTTP;
a client in the same event loop sends smtp-source's 4 kB message with one recipient
(one reply awaited per command); the upstream is Postfix's ``smtp-sink`` and Redis a
redis-server without persistence, both processes of their own. The figure is the
process's CPU µs per message (heed and the client: the client is the same for every
checkout). ``--source`` runs another checkout (e.g. ``git archive main | tar -x -C
/tmp/old``) alternated with this one, round by round, with the same keys and site
(``--make-site DIR`` makes one to keep, ``--site DIR`` uses it).

``MAILPATH_CPROFILE=FILE`` writes a cProfile (CPU time) of the counted part of a
``--one`` run. Not for callgrind: the start-up (imports, the consent import, the
children's start) varied by ±1,000 million instructions between runs under callgrind,
more than a few hundred messages cost; count instructions with bench.state_cost,
bench.edge or bench.copy_path, which time their parts alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(os.environ.get("MAILPATH_SOURCE") or Path(__file__).resolve().parent.parent)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
BENCH = Path(__file__).resolve().parent.parent  # the rig (site, sink) is always this one's
if str(BENCH) not in sys.path:
    sys.path.append(str(BENCH))

SENDER = b"offers@news.example.com"


def make_site(site: Path, people: int) -> None:
    """The bench site: policies, DKIM keys, config and consent rows (bench/rig/heed.py's)."""
    from bench.rig.heed import bench_policies, stream_domains
    from proxy.dkim import generate_key

    site.mkdir(parents=True)
    bench_policies(BENCH / "policies", site / "policies")
    keys = []
    for domain in ["news.example.com", *stream_domains(site / "policies")]:
        key = generate_key(domain, "s1", site / "keys" / domain)[0]
        keys.append(f"{{domain: {domain}, selector: s1, key_file: {key}}}")
    (site / "config").mkdir()
    (site / "config" / "heed.yaml").write_text(f"""
smtp: {{listen: "127.0.0.1:2525", max_sessions: 2000}}
upstream: {{host: 127.0.0.1, port: 25, pool_size: 32}}
redis: {{data_dir: var/redis, split: false}}
http: {{public_url: "https://heed.bench"}}
unsubscribe: {{mailto_domain: heed.bench}}
dkim: [{", ".join(keys)}]
policies: policies
""")
    (site / "consent.csv").write_text("email,list,granted_at,source,ip,text\n" + "".join(
        f"{n}user@example.org,marketing,,bench,127.0.0.1,bench-v1\n"
        for n in range(1, people + 1)))


async def _client(port: int, numbers: range) -> None:
    from bench.edge import MESSAGE, _reply  # smtp-source's message; a reply, checked

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await _reply(reader)
    writer.write(b"EHLO bench.test\r\n")
    await _reply(reader)
    for n in numbers:
        for command in (b"MAIL FROM:<%s>\r\n" % SENDER, b"RCPT TO:<%duser@example.org>\r\n" % n,
                        b"DATA\r\n", MESSAGE):
            writer.write(command)
            await _reply(reader)
    writer.write(b"QUIT\r\n")
    await _reply(reader)
    writer.close()


async def _one(site: Path, messages: int, sessions: int, sink_port: int, redis_url: str
               ) -> float:
    """CPU µs per message of this process (heed and the clients)."""
    from proxy.app import Heed
    from proxy.embedded_redis import free_port
    from proxy.logs import setup_logging
    from proxy.policy_store import PolicyStore
    from proxy.settings.load import load_settings

    settings = load_settings(site / "config" / "heed.yaml",
                             overrides={"upstream": {"port": sink_port},
                                        "smtp": {"listen": f"127.0.0.1:{free_port()}"}})
    setup_logging(settings.log_level, settings.log_format)
    heed = Heed(settings, redis_url=redis_url, policies=PolicyStore(settings.policies))
    await heed.state.import_consent_csv(site / "consent.csv")
    await heed.start(run_scheduler=False)
    each = messages // sessions
    warm = 20  # the first messages of a session fill caches and pools: not counted
    await asyncio.gather(*(_client(heed.smtp_port, range(1 + s * (each + warm),
                                                         1 + s * (each + warm) + warm))
                           for s in range(sessions)))
    profile = None
    if os.environ.get("MAILPATH_CPROFILE"):  # where to write a cProfile of the counted part
        import cProfile
        profile = cProfile.Profile(time.process_time)
        profile.enable()
    start = time.process_time()
    await asyncio.gather(*(_client(heed.smtp_port, range(1 + s * (each + warm) + warm,
                                                         1 + (s + 1) * (each + warm)))
                           for s in range(sessions)))
    spent = time.process_time() - start
    if profile is not None:
        profile.disable()
        profile.dump_stats(os.environ["MAILPATH_CPROFILE"])
    await heed.stop()
    return spent / (each * sessions) * 1e6


def one(site: Path, messages: int, sessions: int) -> float:
    """One run in this process, with its own redis-server and smtp-sink."""
    from bench.rig.targets import Sink
    from proxy.embedded_redis import EmbeddedRedis

    with tempfile.TemporaryDirectory(prefix="heed-mailpath-") as tmp_s:
        tmp = Path(tmp_s)
        sink = Sink(tmp)
        redis = EmbeddedRedis(tmp / "redis", durable=False, unix=True)
        url = redis.start()
        try:
            # The decision lines go to a file, as a service manager's journal takes them.
            with open(tmp / "heed.log", "w") as log:
                sys.stderr.flush()
                saved = os.dup(2)
                os.dup2(log.fileno(), 2)
                try:
                    main = _one(site, messages, sessions, sink.port, url)
                    try:
                        import uvloop
                    except ImportError:
                        return asyncio.run(main)
                    return uvloop.run(main)
                finally:
                    os.dup2(saved, 2)
                    os.close(saved)
        finally:
            redis.stop()
            sink.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=600)
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--source", type=Path, action="append", default=[],
                   help="another checkout run alternated with this one")
    p.add_argument("--site", type=Path, default=None, help="a site made by --make-site")
    p.add_argument("--make-site", type=Path, default=None, metavar="DIR")
    p.add_argument("--one", action="store_true", help="one run of this checkout, in process")
    a = p.parse_args()
    people = (a.messages + 20 * a.sessions) + 100
    if a.make_site is not None:
        make_site(a.make_site, max(people, 5000))
        return
    with tempfile.TemporaryDirectory(prefix="heed-mailpath-site-") as tmp:
        site = a.site
        if site is None:
            site = Path(tmp) / "site"
            make_site(site, people)
        if a.one:
            print(f"{one(site, a.messages, a.sessions):.1f}")
            return
        trees = [BENCH, *(s.resolve() for s in a.source)]
        runs: dict[Path, list[float]] = {t: [] for t in trees}
        for r in range(a.rounds):
            for tree in trees if r % 2 == 0 else trees[::-1]:  # the order turns every round
                env = dict(os.environ, MAILPATH_SOURCE=str(tree))
                out = subprocess.run([sys.executable, "-m", "bench.mail_path", "--one",
                                      "--site", str(site), "--messages", str(a.messages),
                                      "--sessions", str(a.sessions)], env=env, cwd=BENCH,
                                     capture_output=True, text=True, check=True)
                runs[tree].append(float(out.stdout.split()[-1]))
                print(f"round {r + 1} {tree}: {runs[tree][-1]:.1f} µs/message, "
                      f"load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"{a.messages} messages x 1 rcpt, {a.sessions} session(s): µs CPU per message "
              "(heed and client), one figure per round")
        for tree, values in runs.items():
            print(f"  {str(tree):<40} " + " ".join(f"{v:8.1f}" for v in values))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
