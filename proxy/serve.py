"""`heed serve`: start the embedded Redis if needed, run heed until SIGTERM, reload on SIGHUP."""

from __future__ import annotations

import asyncio
import logging
import signal

from proxy.embedded_redis import EmbeddedRedis, ping
from proxy.logs import setup_logging
from proxy.policy_store import PolicyStore
from proxy.settings import Settings

log = logging.getLogger("heed")


async def run(settings: Settings, redis_url: str) -> None:
    from proxy.app import Heed

    heed = Heed(settings, redis_url=redis_url, policies=PolicyStore(settings.policies))
    await heed.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, heed.reload)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    await heed.stop()


def serve(settings: Settings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    # Load policies before anything starts: a bad file keeps heed from starting.
    PolicyStore(settings.policies)
    embedded: EmbeddedRedis | None = None
    url = settings.redis.url
    if url is None:
        embedded = EmbeddedRedis(settings.redis.data_dir, unix=True)
        if embedded.socket is not None and ping(embedded.socket):
            url, embedded = embedded.url, None  # another heed on this data folder runs it
        else:
            url = embedded.start()
            log.info("embedded redis-server started", extra={"data_dir": str(
                settings.redis.data_dir), "appendfsync": "always"})
    try:
        try:
            import uvloop

            uvloop.run(run(settings, url))
        except ImportError:
            asyncio.run(run(settings, url))
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
