"""A serving Redis that restarted is brought in step with the durable one before it is read.

Each new connection to the serving Redis asks for the server's ``run_id`` (new at
every start of redis-server). One that heed has not brought in step yet (the
``Keys.serving_run`` marker names another) is reconciled first (reconcile.py); until
then the connection fails, and the SMTP edge answers 451. A restart of the serving
Redis drops every connection, so no command reaches it unchecked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.durable.reconcile import bring_in_step, run_id_of
from proxy.keys import Keys

log = logging.getLogger("heed")


class ServingGuard:
    """``on_connect`` is given to redis-py as the serving client's ``redis_connect_func``."""

    def __init__(self, serving_url: str, durable: Any, keys: Keys) -> None:
        self.serving_url = serving_url
        self.durable = durable
        self.keys = keys
        self.known: set[str] = set()
        self._lock: asyncio.Lock | None = None

    async def on_connect(self, conn: Any) -> None:
        await conn.on_connect()  # authenticate and select the database, as redis-py would
        await conn.send_command("INFO", "server")
        run_id = run_id_of(await conn.read_response())
        if run_id in self.known:
            return
        await conn.send_command("GET", self.keys.serving_run)
        marker = await conn.read_response()
        if (marker.decode() if isinstance(marker, bytes) else marker) == run_id:
            self.known.add(run_id)  # brought in step at start, or by another heed
            return
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if run_id in self.known:
                return
            log.warning("the serving Redis restarted (run_id %s): restoring it from the "
                        "durable one before reading from it", run_id[:12])
            from proxy.redisconn import connect_redis

            serving = connect_redis(self.serving_url)  # not guarded: this is the restore
            try:
                log.warning("%s", await bring_in_step(serving, self.durable, self.keys))
            except Exception as exc:
                raise RedisConnectionError(f"serving Redis not restored: {exc}") from exc
            finally:
                await serving.aclose()
            self.known.add(run_id)
