"""One-click endpoint throughput: POST /u/TOKEN requests per second, server and client apart.

    python -m bench.oneclick [--seconds 5] [--concurrency 50] [--split]

Starts a private durable Redis (AOF, appendfsync always), heed's HTTP app in a
process of its own, and an aiohttp client in this one; every request records a
real refusal for a distinct address before its 200. State is built as ``heed serve``
builds it: concurrent requests share Redis round trips (proxy/batch.py). ``--split``:
as the embedded default runs, a durable Redis (always) written first, then a serving
one (everysec) (proxy/durable/).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from proxy.clock import SystemClock
from proxy.embedded_redis import EmbeddedRedis, free_port, wait_port
from proxy.settings import UnsubscribeKey

KEY = UnsubscribeKey("b1", b"bench-secret-0123456789abcdef")


def batched(redis_url: str) -> Any:
    """The group-commit client as `heed serve` makes it: a lane of its own for records
    written behind, and the default ``redis.write_behind``."""
    from proxy.batch import GroupCommit
    from proxy.redisconn import connect_redis
    from proxy.settings import RedisSettings

    return GroupCommit(connect_redis(redis_url),
                       lane=connect_redis(redis_url, read_timeout=None),
                       linger=RedisSettings().write_behind)


def serve(port: int, redis_url: str, durable_url: str | None = None) -> None:
    import uvloop

    from proxy.http.app import make_app, start_http
    from proxy.keys import Keys
    from proxy.metrics import Metrics
    from proxy.state import State
    from proxy.tokens import TokenSigner

    async def main() -> None:
        from proxy.durable.mirror import Mirror, MirroredRedis

        clock = SystemClock()
        people: Any = batched(redis_url)
        if durable_url:
            people = MirroredRedis(people, Mirror(batched(durable_url), Keys()))
        app = make_app(tokens=TokenSigner([KEY], clock, 90 * 86400),
                       state=State(people, Keys(), clock), metrics=Metrics())
        await start_http(app, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


async def hammer(seconds: float, concurrency: int,
                 one: Callable[[aiohttp.ClientSession, int], Awaitable[bool]]) -> tuple[int, int]:
    """``concurrency`` workers call ``one(session, n)`` (n: a fresh number) until ``seconds``
    have passed: (calls that returned True, calls that returned False)."""
    ok = bad = 0
    deadline = time.monotonic() + seconds
    counter = iter(range(10**9))

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok, bad
        while time.monotonic() < deadline:
            if await one(session, next(counter)):
                ok += 1
            else:
                bad += 1

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok, bad


async def load(port: int, seconds: float, concurrency: int) -> tuple[int, int]:
    from proxy.tokens import TokenSigner

    signer = TokenSigner([KEY], SystemClock(), 90 * 86400)

    async def one(session: aiohttp.ClientSession, n: int) -> bool:
        token = signer.make(f"p{n}@example.org", "marketing")
        async with session.post(f"http://127.0.0.1:{port}/u/{token}",
                                data={"List-Unsubscribe": "One-Click"}) as r:
            await r.read()
            return r.status == 200

    return await hammer(seconds, concurrency, one)


Load = Callable[[int, float, int], Coroutine[Any, Any, tuple[int, int]]]


class Served(NamedTuple):
    ok: int  # requests that succeeded
    bad: int  # that failed
    server_ms: float  # CPU ms of heed's HTTP process per successful request
    redis_ms: float  # CPU ms of redis-server per successful request

    def line(self, what: str, seconds: float, concurrency: int) -> str:
        return (f"{what}: {self.ok / seconds:.0f}/s ({self.ok} ok, {self.bad} failed, "
                f"{concurrency} concurrent, {seconds:.0f} s, Redis appendfsync always); CPU per "
                f"request {self.server_ms:.3f} ms heed + {self.redis_ms:.3f} ms redis-server")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def against_server(serve_fn: Callable[..., None], load_fn: Load, seconds: float,
                   concurrency: int, split: bool = False) -> Served:
    """A durable private Redis, ``serve_fn(port, redis_url)`` in a process of its own, and
    ``load_fn(port, seconds, concurrency)`` here: what succeeded and failed, and the CPU
    time the server and Redis spent per request (less noisy than the rate on a shared
    machine). ``split``: a serving Redis (everysec) too, ``serve_fn(port, serving_url,
    durable_url)``."""
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp), durable=True)
        url = redis.start()
        urls = [url]
        serving = EmbeddedRedis(Path(tmp) / "serving", fsync="everysec") if split else None
        if serving is not None:
            urls = [serving.start(), url]
        port = free_port()
        proc = multiprocessing.Process(target=serve_fn, args=(port, *urls), daemon=True)
        proc.start()
        try:
            wait_port(port)
            assert proc.pid is not None and redis.process is not None
            servers = [redis] + ([serving] if serving is not None else [])
            pids = [proc.pid] + [s.process.pid for s in servers if s.process is not None]
            before = [cpu_seconds(p) for p in pids]
            ok, bad = asyncio.run(load_fn(port, seconds, concurrency))
            used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
            # redis-server's share: every Redis the requests wrote to (both when split)
            return Served(ok, bad, used[0] * 1000 / max(ok, 1), sum(used[1:]) * 1000 / max(ok, 1))
        finally:
            proc.terminate()
            proc.join(5)
            redis.stop()
            if serving is not None:
                serving.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--split", action="store_true",
                        help="durable Redis written first, then the serving one")
    args = parser.parse_args()
    served = against_server(serve, load, args.seconds, args.concurrency, args.split)
    print(served.line("one-click POST /u/TOKEN" + (" (split: durable Redis always, serving "
                      "everysec)" if args.split else ""), args.seconds, args.concurrency))

if __name__ == "__main__":
    main()
