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
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp

from proxy.clock import SystemClock
from proxy.embedded_redis import EmbeddedRedis, free_port, wait_port
from proxy.settings import UnsubscribeKey

KEY = UnsubscribeKey("b1", b"bench-secret-0123456789abcdef")


def serve(port: int, redis_url: str, durable_url: str | None = None) -> None:
    import uvloop

    from proxy.batch import GroupCommit
    from proxy.http.app import make_app, start_http
    from proxy.keys import Keys
    from proxy.metrics import Metrics
    from proxy.redisconn import connect_redis
    from proxy.state import State
    from proxy.tokens import TokenSigner

    async def main() -> None:
        from proxy.durable.mirror import Mirror, MirroredRedis

        clock = SystemClock()
        people: Any = GroupCommit(connect_redis(redis_url))
        if durable_url:
            people = MirroredRedis(people, Mirror(GroupCommit(connect_redis(durable_url)),
                                                  Keys()))
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


def against_server(serve_fn: Callable[..., None], load_fn: Load, seconds: float,
                   concurrency: int, split: bool = False) -> tuple[int, int]:
    """A durable private Redis, ``serve_fn(port, redis_url)`` in a process of its own, and
    ``load_fn(port, seconds, concurrency)`` here: (requests that succeeded, that failed).
    ``split``: a serving Redis (everysec) too, ``serve_fn(port, serving_url, durable_url)``."""
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
            return asyncio.run(load_fn(port, seconds, concurrency))
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
    ok, bad = against_server(serve, load, args.seconds, args.concurrency, args.split)
    print(f"one-click POST /u/TOKEN: {ok / args.seconds:.0f} requests/s "
          f"({ok} recorded, {bad} failed, {args.concurrency} concurrent, {args.seconds:.0f} s, "
          + ("split: durable Redis always, serving everysec)" if args.split
             else "Redis appendfsync always)"))


if __name__ == "__main__":
    main()
