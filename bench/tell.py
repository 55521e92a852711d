"""Time from a refusal to the tool hearing of it: `heed serve` POSTs RFC 8058 one-click.

    python -m bench.tell [--refusals 200] [--fail-first 0.2]

Starts a private durable Redis (AOF, appendfsync always), a stand-in tool (aiohttp on
127.0.0.1 that records when each of its links is POSTed, and answers 503 to the first
request of a share ``--fail-first`` of them) and `heed serve` (tell.allow 127.0.0.1,
tell.backoff 1s, poll 1s). Then records ``--refusals`` refusals, each for a person whose
copy carried the tool's one-click link, and waits until every link was told once.
Prints p50/p99/max seconds from the refusal's record to the tool's 200, requests per
link, and exits non-zero when a link got no 200 or two.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from aiohttp import web

from proxy.clock import SystemClock
from proxy.embedded_redis import EmbeddedRedis, free_port, wait_port
from proxy.keys import Keys
from proxy.redisconn import connect_redis, warm_up
from proxy.report.compute import percentile
from proxy.state import State
from proxy.tell.offer import Offer

ROOT = Path(__file__).resolve().parent.parent
POLICY = "version: b\ndefault_stream: m\nstreams:\n  m: {kind: marketing, list: m}\n"


async def run(refusals: int, fail_first: float, tmp: Path, redis_url: str) -> int:
    told: dict[str, float] = {}
    requests: Counter[str] = Counter()
    failing = {f"/u/{i}" for i in range(int(refusals * fail_first))}

    async def handle(request: web.Request) -> web.Response:
        requests[request.path] += 1
        if request.path in failing and requests[request.path] == 1:
            return web.Response(status=503)
        told.setdefault(request.path, time.time())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/u/{n}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    (tmp / "policies").mkdir()
    (tmp / "policies" / "p.yaml").write_text(POLICY)
    smtp = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HEED_HTTP__LISTEN="", HEED_LOG_LEVEL="WARNING",
               HEED_TELL__ALLOW="[127.0.0.1]", HEED_TELL__BACKOFF="[1s]",
               HEED_UNSUBSCRIBE__KEYS="[{id: b, secret: bench-secret-0123456789abcdef}]")
    log = (tmp / "heed.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--listen",
                             f"127.0.0.1:{smtp}", "--upstream", f"127.0.0.1:{free_port()}",
                             "--redis", redis_url, "--policies", str(tmp / "policies")],
                            cwd=tmp, env=env, stdout=log, stderr=log)
    try:
        await asyncio.to_thread(wait_port, smtp)
        client = connect_redis(redis_url)
        await warm_up(client)
        keys, clock = Keys(), SystemClock()
        state = State(client, keys, clock)
        refused: dict[str, float] = {}
        for i in range(refusals):
            a, path = f"p{i}@example.org", f"/u/{i}"
            await client.hset(keys.tool_offers(a), "m", Offer(
                f"http://127.0.0.1:{port}{path}", True, "").to_json(clock.now()))
            refused[path] = clock.now()
            await state.refuse(a, "unsubscribe", list="m", channel="one-click")
        deadline = time.monotonic() + 60
        while len(told) < refusals and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # past a backoff: a second request would show now
        await client.aclose()
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        await runner.cleanup()
    seconds = [told[p] - refused[p] for p in told]
    twice = sum(1 for p in told if requests[p] > 1 + (p in failing))
    print(f"{refusals} refusals, {len(failing)} answered 503 first: told {len(told)}; "
          f"seconds from refusal to the tool's 200: p50 {percentile(seconds, 0.5):.2f}, "
          f"p99 {percentile(seconds, 0.99):.2f}, max {max(seconds, default=0):.2f}; "
          f"requests {sum(requests.values())}, links asked more than needed: {twice}")
    return 0 if len(told) == refusals and not twice else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--refusals", type=int, default=200)
    parser.add_argument("--fail-first", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis", durable=True)
        url = redis.start()
        try:
            code = asyncio.run(run(args.refusals, args.fail_first, Path(tmp), url))
        finally:
            redis.stop()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
