"""CPU of one tell lifecycle pass a person (heed's process and redis-server), old against new.

    python -m bench.lifecycle [--people 100000] [--rounds 2] [--source DIR ...]
    PYTHONPATH=DIR valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python bench/lifecycle.py --child --people 2000 [--fill-only]

The pass runs every ``tell.lifecycle_every`` (1 h) over every known person
(proxy/tell/lifecycle.py); this is its cost, which grows with the people and not with
the mail. A fresh redis-server (no persistence) is filled with ``--people`` people:
consent, an engagement hash as mail and clicks leave it (a third never engaged, the rest
clicked at some time; a quarter past the shipped policy's inactive line), and a few
recent sends each. Two passes are timed: the first records every baseline (a write a
person and stream), the second is the hourly steady state (reads, few writes). The
pause between pages is set to 0 here (it costs wall time, not CPU). Each ``--source``
(a checkout of heed; default this one) runs in a subprocess of its own, ``--rounds``
times, interleaved (A B A B …), so old and new meet the same machine. Under callgrind
(redis-server not traced), "Collected" minus the same run with ``--fill-only`` is the
instruction count of the two passes in heed's process, which other load does not move.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--people", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--source", type=Path, action="append", default=[])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fill-only", action="store_true",
                   help="with --child: fill Redis, make no pass (callgrind's baseline)")
    a = p.parse_args()
    if a.child:
        print(json.dumps(asyncio.run(_child(a.people, not a.fill_only))))
        return
    for r in range(a.rounds):
        for src in a.source or [ROOT]:
            env = dict(os.environ, PYTHONPATH=str(src.resolve()))
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child",
                                  "--people", str(a.people)], env=env, cwd=src, check=True,
                                 capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            for name in ("baseline", "steady"):
                x = res[name]
                print(f"round {r + 1} {res['source']:28s} {name:8s} heed {x['heed_us']:6.1f} "
                      f"µs/person, redis-server {x['redis_us']:5.1f} µs, {x['commands']:.2f} "
                      f"commands/person, {x['events']} events, load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)


async def _fill(redis: object, keys: object, n: int, now: float) -> None:
    rnd = random.Random(17)
    for i in range(0, n, 1000):
        pipe = redis.pipeline(transaction=False)  # type: ignore[attr-defined]
        people = [f"{j}user@example.org" for j in range(i, min(n, i + 1000))]
        pipe.sadd(keys.people, *people)  # type: ignore[attr-defined]
        for a in people:
            sends = rnd.randint(1, 40)
            eng = {"total_sends": sends, "first_send": repr(now - rnd.uniform(30, 400) * DAY)}
            if rnd.random() < 0.67:
                at = now - rnd.uniform(0, 300) * DAY
                since = rnd.randint(0, sends)
                eng.update({"last_engaged": repr(at), "sends_since": since,
                            "at:click": repr(at), "n:click": sends - since})
            else:
                eng["sends_since"] = sends
            pipe.hset(keys.engagement(a), mapping=eng)  # type: ignore[attr-defined]
            pipe.hset(keys.consent(a), "marketing", json.dumps(  # type: ignore[attr-defined]
                {"list": "marketing", "granted_at": now - 400 * DAY, "source": "bench"}))
            for s in range(3):  # the send history a full snapshot would read too
                pipe.zadd(keys.sends(a), {f"marketing|{i}{s}": now - s * DAY})  # type: ignore[attr-defined]
        await pipe.execute()


async def _child(n: int, passes: bool = True) -> dict[str, object]:
    import proxy
    import proxy.tell.lifecycle as lifecycle
    from bench.state_cost import _redis_cpu
    from proxy.clock import SystemClock
    from proxy.embedded_redis import EmbeddedRedis
    from proxy.keys import Keys
    from proxy.policy_store import PolicyStore
    from proxy.redisconn import connect_redis
    from proxy.state import State

    lifecycle.PAUSE = 0.0
    with tempfile.TemporaryDirectory(prefix="heed-lifecycle-") as tmp:
        server = EmbeddedRedis(Path(tmp), durable=False, unix=True)
        server.start()
        try:
            redis = connect_redis(server.url)
            keys, clock = Keys("heed"), SystemClock()
            state = State(redis, keys, clock)
            policy = PolicyStore(ROOT / "policies").current
            await _fill(redis, keys, n, clock.now())
            out: dict[str, object] = {"source": str(Path(proxy.__file__).parent.parent)}
            for name in ("baseline", "steady") if passes else ():
                await redis.config_resetstat()
                cpu0, rcpu0 = time.process_time(), await _redis_cpu(redis)
                events = await lifecycle.lifecycle_pass(state, policy, clock.now())
                cpu1, rcpu1 = time.process_time(), await _redis_cpu(redis)
                stats = await redis.info("commandstats")
                calls = sum(v["calls"] for k, v in stats.items()
                            if not k.startswith(("cmdstat_info", "cmdstat_config")))
                out[name] = {"heed_us": (cpu1 - cpu0) * 1e6 / n,
                             "redis_us": (rcpu1 - rcpu0) * 1e6 / n,
                             "commands": calls / n, "events": events}
            await redis.aclose()
            return out
        finally:
            server.stop()


if __name__ == "__main__":
    main()
