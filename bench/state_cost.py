"""CPU per recipient of heed's Redis state work alone: the decision's read, the intent, the record.

    python -m bench.state_cost [--recipients 6000] [--sessions 20] [--rounds 3]
                               [--source DIR ...]

No SMTP and no signing: ``--sessions`` tasks each take recipients one at a time through
what the mail path does with Redis for a delivered 1-recipient message (State.snapshots
with the shipped policy's domain guard, the engine's decision, Recorder.intent, then
Recorder.message written behind), on heed's group-commit client (50 ms write-behind)
against a fresh redis-server on a unix socket (no persistence), through heed's own
clients (``connect_redis``). Printed per run: this
process's CPU ms per recipient, redis-server's, and Redis commands per recipient.
Each ``--source`` (a checkout of heed; default this one) runs in a subprocess of its
own, ``--rounds`` times, interleaved (A B A B …), so old and new meet the same machine.
The shipped policy's people have consent, so every decision is "deliver".

Instruction counts, which other load on the machine does not move: run one child
under callgrind at two sizes and take the difference per recipient (the redis-server
it starts is not traced), e.g. for a checkout in SRC:

    cd SRC && PYTHONPATH=$PWD valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/state_cost.py --child --recipients 200
    (the same with --recipients 2200; "Collected" of the second minus the first, / 2000)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipients", type=int, default=6000)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--source", type=Path, action="append", default=[])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(asyncio.run(_child(a.recipients, a.sessions))))
        return
    sources = a.source or [ROOT]
    for r in range(a.rounds):
        for src in sources:
            env = dict(os.environ, PYTHONPATH=str(src.resolve()))
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                                  "--recipients", str(a.recipients), "--sessions",
                                  str(a.sessions)], env=env, cwd=src, check=True,
                                 capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            print(f"round {r + 1} {res['source']:30s} heed {res['heed_ms']:.3f} ms/recipient, "
                  f"redis-server {res['redis_ms']:.3f} ms, "
                  f"{res['commands']:.2f} commands/recipient, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)


async def _child(n: int, sessions: int) -> dict[str, object]:
    from proxy.audit import Audit
    from proxy.batch import GroupCommit
    from proxy.clock import SystemClock
    from proxy.keys import Keys
    from proxy.metrics import Metrics
    from proxy.policy import decide
    from proxy.policy_store import PolicyStore
    from proxy.recorder import Delivery, Recorder
    from proxy.redisconn import connect_redis
    from proxy.state import State
    from proxy.types import Envelope

    tmp = Path(tempfile.mkdtemp(prefix="heed-statecost-"))
    sock = tmp / "redis.sock"
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", "0",
                               "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
                               "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    try:
        while not sock.exists():
            await asyncio.sleep(0.02)
        # heed's own clients (hiredis packing; no per-reply timeout on the batch lane).
        raw = connect_redis(f"unix://{sock}")
        lane = connect_redis(f"unix://{sock}", read_timeout=None)
        batched = GroupCommit(raw, lane=lane, linger=0.05)
        keys, clock = Keys("heed"), SystemClock()
        audit = Audit(batched, keys)
        state = State(batched, keys, clock, audit=audit)
        policies = PolicyStore(ROOT / "policies")
        policy = policies.current
        rec = Recorder(state=state, audit=audit, redis=batched, policies=policies, clock=clock,
                       metrics=Metrics(), verp_ttl=86400.0)
        addresses = [f"{i}user@example.org" for i in range(n)]
        for i in range(0, n, 500):
            pipe = raw.pipeline(transaction=False)
            for a in addresses[i:i + 500]:
                pipe.hset(keys.consent(a), "marketing", json.dumps(
                    {"list": "marketing", "granted_at": time.time() - 86400, "source": "bench",
                     "ip": "", "text": ""}))
            await pipe.execute()
        await raw.config_resetstat()
        todo = iter(addresses)

        async def session() -> None:
            for a in todo:
                snap, = await state.snapshots([a], domains=policy.guards_domains)
                d = decide(policy, "marketing", snap, clock.now())
                env = Envelope("offers@news.example.com", (a,))
                intent = await rec.intent(env, "<m@x>", "cid", {a: d})
                await rec.message(env, "<m@x>", "cid", {a: d}, {a: "delivered"}, policy,
                                  Delivery(sent=[a], signed={a}), intent)

        cpu0, rcpu0 = time.process_time(), await _redis_cpu(raw)
        await asyncio.gather(*(session() for _ in range(sessions)))
        await batched.flush()
        cpu1, rcpu1 = time.process_time(), await _redis_cpu(raw)
        stats = await raw.info("commandstats")
        calls = sum(v["calls"] for k, v in stats.items()
                    if not k.startswith(("cmdstat_info", "cmdstat_config")))
        await batched.aclose()
        import proxy
        return {"source": str(Path(proxy.__file__).parent.parent),
                "heed_ms": (cpu1 - cpu0) * 1000 / n, "redis_ms": (rcpu1 - rcpu0) * 1000 / n,
                "commands": calls / n}
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


async def _redis_cpu(redis: object) -> float:
    info = await redis.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


if __name__ == "__main__":
    main()
