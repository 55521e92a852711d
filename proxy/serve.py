"""`heed serve`: start the embedded Redis if needed, run heed until SIGTERM, reload on SIGHUP."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import threading
import time
from dataclasses import replace
from typing import Any

from proxy.embedded_redis import EmbeddedRedis, embedded_pair
from proxy.errors import HeedError
from proxy.locate import forget, remember
from proxy.logs import setup_logging
from proxy.policy_store import PolicyStore
from proxy.settings import Settings
from proxy.watch.loop import LoopWatch

log = logging.getLogger("heed")


# How long a starting worker waits for the others before it listens anyway (only when
# the parent cannot open the workers' sockets itself: a listen host of several addresses).
START_TOGETHER = 60.0
# Connections the kernel queues on a worker's socket before that worker accepts them
# (asyncio's default; the worker's create_server listens with it again).
BACKLOG = 100


async def run(settings: Settings, redis_url: str, *, reuse_port: bool = False,
              together: Any = None, smtp_socket: socket.socket | None = None) -> None:
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

    async def before_listen() -> None:
        if together is not None:
            await all_ready()
        freeze_start_up()

    await heed.start(reuse_port=reuse_port, smtp_socket=smtp_socket,
                     before_listen=before_listen)
    watch = start_watch(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, heed.reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    if watch is not None:
        watch.stop()
        for event in watch.events:  # read by bench.latency for the load's window alone
            log.info("loop watch event: %s", event.line())
        log.info("loop watch: %s", watch.summary())
    await heed.stop()


def freeze_start_up() -> None:
    """Put what start-up made out of the garbage collector's reach, before the first session.

    Start-up leaves a heap of ~72,000 tracked objects that lives as long as heed
    (modules, settings, policies, clients); every full (generation 2) collection walked
    it again, holding the loop, and every reply due meanwhile, for 60-80 ms on a busy
    machine (bench.latency --watch-ms). ``gc.freeze()`` moves it to a generation that is
    never collected; what is garbage now is collected first.
    """
    gc.collect()
    gc.freeze()


def start_watch(settings: Settings) -> LoopWatch | None:
    """The loop watch, if ``loop_watch_ms`` asks for it (proxy/watch/loop.py)."""
    if not settings.loop_watch_ms:
        return None
    watch = LoopWatch(settings.loop_watch_ms / 1000)
    watch.start()
    return watch


def _run_loop(settings: Settings, url: str, reuse_port: bool, together: Any = None,
              smtp_socket: socket.socket | None = None) -> None:
    main = run(settings, url, reuse_port=reuse_port, together=together,
               smtp_socket=smtp_socket)
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _worker(settings: Settings, url: str, together: Any,
            smtp_socket: socket.socket | None) -> None:
    setup_logging(settings.log_level, settings.log_format)
    signal.signal(signal.SIGHUP, _reload_while_starting)  # forwarded before its loop runs
    _run_loop(settings, url, True, together, smtp_socket)


def smtp_socket(host: str, port: int) -> socket.socket | None:
    """One worker's SMTP socket, bound and listening with SO_REUSEPORT; None if the host
    has several addresses (the worker then listens on each itself, as asyncio does)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    if len({info[4] for info in infos}) != 1:
        return None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio binds it
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def supervise(settings: Settings, url: str, workers: int) -> None:
    """Run ``workers`` processes on the same ports (SO_REUSEPORT); restart any that dies.

    The parent opens every worker's SMTP socket before the first worker starts: from
    the moment the port answers, the kernel spreads new sessions over all the workers'
    queues, and each worker accepts its own as soon as it runs. Every worker also runs
    the scheduler: claims are atomic in Redis, so the workers share the delay queue
    without sending a held copy twice.
    """
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    stopping = False
    host, port = settings.smtp.listen
    sockets: list[socket.socket | None] = []
    try:
        sockets.extend(smtp_socket(host, port) for _ in range(workers))
    except OSError as exc:
        for sock in sockets:
            if sock is not None:
                sock.close()
        raise HeedError(f"cannot listen for SMTP on {host}:{port}: {exc.strerror}") from None
    # Only if the parent could not open the sockets: the first workers listen together.
    together = ctx.Barrier(workers) if None in sockets else None

    def start(sock: socket.socket | None, first: bool = False
              ) -> multiprocessing.process.BaseProcess:
        # A restarted worker joins the others, which listen already: no waiting.
        proc = ctx.Process(target=_worker, args=(settings, url, together if first else None,
                                                 sock), daemon=False)
        proc.start()
        if sock is not None:
            # The worker holds its own copy now: if it dies, its socket closes with it
            # and the kernel stops giving it sessions (a queued one is reset, and retried).
            sock.close()
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
    procs.extend(start(sock, first=True) for sock in sockets)
    log.info("supervising %d workers", workers)
    while not stopping:
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping:
                log.error("worker %s exited with %s; restarting", proc.pid, proc.exitcode)
                try:
                    procs[i] = start(None if together is not None else smtp_socket(host, port))
                except OSError as exc:
                    log.error("cannot open the SMTP port for a new worker: %s", exc)
        time.sleep(0.5)
    for proc in procs:
        proc.join(20)
        if proc.is_alive():
            proc.kill()


def _warn_if_upstream_unreachable(settings: Settings) -> None:
    """Try the upstream once: a newcomer with no MTA on port 25 learns why nothing arrives."""
    from proxy.probe import probe_upstream

    problem = asyncio.run(probe_upstream(settings))
    if problem:
        host, port = settings.upstream.host, settings.upstream.port
        log.warning("cannot reach the upstream %s:%d: %s; heed serves anyway, and mail to "
                    "deliver gets 451 (upstream.on_failure: %s) until it answers", host, port,
                    problem, settings.upstream.on_failure,
                    extra={"upstream_host": host, "upstream_port": port, "error": problem})


async def bring_in_step(settings: Settings, url: str) -> str:
    """Reconcile the serving Redis at ``url`` with the durable one (proxy/durable/reconcile.py)."""
    from proxy.durable.reconcile import bring_in_step as reconcile_and_mark
    from proxy.keys import Keys
    from proxy.redisconn import connect_redis

    assert settings.redis.durable_url is not None
    serving, durable = connect_redis(url), connect_redis(settings.redis.durable_url)
    try:
        return await reconcile_and_mark(serving, durable, Keys(settings.redis.prefix))
    finally:
        await serving.aclose()
        await durable.aclose()


def _stop_while_starting(sig: int, _frame: object) -> None:
    # Until the event loop takes SIGTERM over, stop through the finally below, so the
    # embedded redis-server is not left running on its own.
    raise SystemExit(128 + sig)


def _reload_while_starting(_sig: int, _frame: object) -> None:
    # SIGHUP's default action ends the process: a reload asked for while heed starts
    # (it reads the policy files then anyway) must not stop it.
    log.info("reload requested while starting; the policies are being read now")


def serve(settings: Settings, workers: int = 1) -> int:
    setup_logging(settings.log_level, settings.log_format)
    # Load policies before anything starts: a bad file keeps heed from starting.
    PolicyStore(settings.policies)
    signal.signal(signal.SIGTERM, _stop_while_starting)
    signal.signal(signal.SIGHUP, _reload_while_starting)
    embedded: list[EmbeddedRedis] = []
    try:
        url = settings.redis.url
        if url is None:
            # Locked to this process (a second heed on the same folder stops here with a
            # clear error) and ended with it, even by kill -9 (proxy/embedded_redis.py).
            # Made before start(): a SIGTERM within it still stops it.
            serving, durable = embedded_pair(settings.redis)
            embedded.append(serving)
            url = serving.start()
            if durable is not None:
                embedded.append(durable)
                settings = replace(settings, redis=replace(settings.redis,
                                                           durable_url=durable.start()))
            log.info("embedded redis-server started", extra={"data_dir": str(
                settings.redis.data_dir), "appendfsync": serving.fsync,
                "durable": "appendfsync always" if durable else "none"})
            # So that `heed consent …` run from any directory finds this Redis.
            remember(os.environ, config=settings.source, data_dir=settings.redis.data_dir,
                     policies=settings.policies)
        _warn_if_upstream_unreachable(settings)
        if settings.redis.durable_url:
            # Before any worker reads a decision from the serving Redis.
            log.info("serving Redis checked against the durable one: %s",
                     asyncio.run(bring_in_step(settings, url)))
        if workers > 1:
            supervise(settings, url, workers)
        else:
            _run_loop(settings, url, False)
    finally:
        forget(os.environ)
        for server in reversed(embedded):
            server.stop()
    return 0
