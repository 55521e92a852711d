"""`heed serve`: start the embedded Redis if needed, run heed until SIGTERM, reload on SIGHUP."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
import time
from typing import Any

from proxy.embedded_redis import EmbeddedRedis
from proxy.logs import setup_logging
from proxy.policy_store import PolicyStore
from proxy.settings import Settings

log = logging.getLogger("heed")


# How long a starting worker waits for the others before it listens anyway.
START_TOGETHER = 60.0


async def run(settings: Settings, redis_url: str, *, reuse_port: bool = False,
              together: Any = None) -> None:
    from proxy.app import Heed

    heed = Heed(settings, redis_url=redis_url, policies=PolicyStore(settings.policies))

    async def all_ready() -> None:
        # Each worker has its own SO_REUSEPORT socket, and the kernel gives a new
        # connection to one of the sockets listening at that moment: a worker that
        # listened first would keep every session a tool opened meanwhile.
        try:
            await asyncio.to_thread(together.wait, START_TOGETHER)
        except threading.BrokenBarrierError:
            log.warning("the other workers are not ready; listening anyway")

    await heed.start(reuse_port=reuse_port,
                     before_listen=all_ready if together is not None else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, heed.reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await heed.stop()


def _run_loop(settings: Settings, url: str, reuse_port: bool, together: Any = None) -> None:
    main = run(settings, url, reuse_port=reuse_port, together=together)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _worker(settings: Settings, url: str, together: Any) -> None:
    setup_logging(settings.log_level, settings.log_format)
    _run_loop(settings, url, True, together)


def supervise(settings: Settings, url: str, workers: int) -> None:
    """Run ``workers`` processes on the same ports (SO_REUSEPORT); restart any that dies.

    Every worker also runs the scheduler: claims are atomic in Redis, so the
    workers share the delay queue without sending a held copy twice.
    """
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    stopping = False
    together = ctx.Barrier(workers)  # the first workers listen at the same moment

    def start(first: bool = False) -> multiprocessing.process.BaseProcess:
        # A restarted worker joins the others, which listen already: no waiting.
        proc = ctx.Process(target=_worker, args=(settings, url, together if first else None),
                           daemon=False)
        proc.start()
        return proc

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig != signal.SIGHUP:
            stopping = True
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    procs.extend(start(first=True) for _ in range(workers))
    log.info("supervising %d workers", workers)
    while not stopping:
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping:
                log.error("worker %s exited with %s; restarting", proc.pid, proc.exitcode)
                procs[i] = start()
        time.sleep(0.5)
    for proc in procs:
        proc.join(20)
        if proc.is_alive():
            proc.kill()


def serve(settings: Settings, workers: int = 1) -> int:
    setup_logging(settings.log_level, settings.log_format)
    # Load policies before anything starts: a bad file keeps heed from starting.
    PolicyStore(settings.policies)
    embedded: EmbeddedRedis | None = None
    url = settings.redis.url
    if url is None:
        # Locked to this process (a second heed on the same folder stops here with a
        # clear error) and ended with it, even by kill -9 (proxy/embedded_redis.py).
        embedded = EmbeddedRedis(settings.redis.data_dir, unix=True)
        url = embedded.start()
        log.info("embedded redis-server started", extra={"data_dir": str(
            settings.redis.data_dir), "appendfsync": "always"})
    try:
        if workers > 1:
            supervise(settings, url, workers)
        else:
            _run_loop(settings, url, False)
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
