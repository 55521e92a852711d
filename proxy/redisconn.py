"""One Redis URL, three shapes: a single server, a Sentinel-watched master, or a Cluster.

The forms (``redis.url`` in the config, ``HEED_REDIS__URL``, ``--redis``):

- ``redis://[[user]:password@]host:6379/0``, ``rediss://…`` (TLS) and
  ``unix:///path/redis.sock?db=0``: one server, as redis-py reads them.
- ``redis+sentinel://[[user]:password@]host:26379[,host2:26379…]/SERVICE[/DB]``:
  ask the Sentinels which server is the master of SERVICE, and ask again after a
  failover. The password is the master's; ``?sentinel_password=…`` (and
  ``sentinel_username``) authenticate to the Sentinels themselves.
- ``redis+cluster://[[user]:password@]host:7000[,host:7001…]``: a Redis Cluster;
  the nodes listed are only where to start, the client learns the rest. A
  Cluster has database 0 only.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis
import redis
import redis.asyncio as aioredis
from redis._parsers import _AsyncHiredisParser
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

SENTINEL = "redis+sentinel"
CLUSTER = "redis+cluster"
_DEFAULT_PORT = {SENTINEL: 26379, CLUSTER: 6379}
_SENTINEL_QUERY = ("sentinel_username", "sentinel_password")

log = logging.getLogger("heed")


@dataclass(frozen=True)
class RedisTarget:
    """A parsed URL: ``kind`` is "single", "sentinel" or "cluster"."""

    kind: str
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def _hostport(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"a node without a host in {text!r}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in {text!r}")
    return host, int(port) if port else default_port


def parse_redis_url(url: str) -> RedisTarget:
    """Read one of the forms in this module's docstring; ValueError says what is wrong."""
    scheme = url.partition("://")[0].lower()
    if scheme not in (SENTINEL, CLUSTER):
        parse_url(url)  # redis-py's own check of redis://, rediss://, unix://
        return RedisTarget("single", url)
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, has_password, password = userinfo.partition(":")
    nodes = tuple(_hostport(h.strip(), _DEFAULT_PORT[scheme]) for h in hosts.split(","))
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    path = [unquote(p) for p in parts.path.split("/") if p]
    common: dict[str, Any] = {"url": url, "nodes": nodes, "username": unquote(user) or None,
                              "password": unquote(password) if has_password else None}
    if scheme == CLUSTER:
        if query:
            raise ValueError(f"{CLUSTER}:// takes no query parameters")
        if path not in ([], ["0"]):
            raise ValueError("a Redis Cluster has database 0 only")
        return RedisTarget("cluster", **common)
    unknown = sorted(set(query) - set(_SENTINEL_QUERY))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}; {SENTINEL}:// takes "
                         + " and ".join(_SENTINEL_QUERY))
    if not path or len(path) > 2:
        raise ValueError(f"expected {SENTINEL}://host:26379[,host2:26379]/SERVICE[/DB]")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"database must be a number, got {path[1]!r}")
    return RedisTarget("sentinel", service=path[0], db=int(path[1]) if len(path) == 2 else 0,
                       sentinel_username=query.get("sentinel_username") or None,
                       sentinel_password=query.get("sentinel_password") or None, **common)


class _HiredisPacking:
    """Commands packed by hiredis (C), as redis-py's synchronous client does by default.

    redis-py's asyncio connections pack every argument in Python: a twentieth of
    heed's CPU time per message, for some fifteen commands per recipient. The bytes
    on the wire are the same; what hiredis refuses (bool, None, bytearray: TypeError)
    goes redis-py's own way, which packs it or raises its usual DataError.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        return [pack(args, super().pack_command)]  # type: ignore[misc]


def pack(args: tuple[Any, ...], fallback: Callable[..., list[bytes]]) -> bytes:
    """One command in RESP, by hiredis; what it refuses goes to ``fallback`` (redis-py's)."""
    if type(args[0]) is str and " " in args[0]:  # "CLIENT SETNAME" is two arguments
        args = (*args[0].split(), *args[1:])
    try:
        return hiredis.pack_command(args)  # type: ignore[no-any-return]
    except TypeError:
        return b"".join(fallback(*args))


@functools.cache
def _with_hiredis(connection_class: type) -> type:
    return type(f"Hiredis{connection_class.__name__}", (_HiredisPacking, connection_class), {})


def _pack_with_hiredis(client: Any) -> Any:
    pool = client.connection_pool  # connections are made on first use: none exist yet
    pool.connection_class = _with_hiredis(pool.connection_class)
    return client


# CLIENT SETINFO's LIB-NAME and LIB-VER, as redis-py sends them, known once: left to
# redis-py, every new pooled connection read the version from the installed package's
# metadata (importlib.metadata, 1-5 ms of the event loop each; 24 ms seen on a busy
# machine by bench.latency --watch-ms).
DRIVER = DriverInfo(lib_version=redis.__version__)


def connect_redis(url: str, *, read_timeout: float | None = 3.0,
                  on_connect: Any = None) -> Any:
    """A client for any URL form that fails fast: a paused Redis must become a 451, not a hang.

    ``read_timeout=None`` is for a caller that bounds whole round trips itself
    (proxy/batch.py): redis-py's own timeout is armed once per reply, which costs
    about a third of its CPU time per command. ``on_connect`` runs on every new
    connection of a single or Sentinel-watched server (proxy/durable/guard.py).
    """
    target = parse_redis_url(url)
    timeouts: dict[str, Any] = {"socket_timeout": read_timeout, "socket_connect_timeout": 3.0}
    # One quick retry only: redis-py's default retries with backoff for many
    # seconds, which would hold a client for long before its 451.
    fast: dict[str, Any] = {**timeouts, "health_check_interval": 30,
                            "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
                            "driver_info": DRIVER}
    auth: dict[str, Any] = {"username": target.username, "password": target.password}
    if on_connect is not None and target.kind != "cluster":
        fast["redis_connect_func"] = on_connect
    if target.kind == "cluster":
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                            **auth, **fast)
    if target.kind == "sentinel":
        sentinel = Sentinel(list(target.nodes), sentinel_kwargs={
            **timeouts, "username": target.sentinel_username,
            "password": target.sentinel_password})
        client = sentinel.master_for(target.service, redis_class=_SentinelRedis, db=target.db,
                                     **auth, **fast)
        client.watchers = sentinel
        return _pack_with_hiredis(client)
    return _pack_with_hiredis(_Redis.from_url(url, **fast))


async def warm_up(client: Any) -> None:
    """Learn a Cluster's layout before the first concurrent commands; harmless on one server.

    With redis-py 8.1, many first commands at once on a new RedisCluster client
    (a burst of RCPTs, a scheduler batch) failed inside the client while it was
    still reading the slot map; one initialisation up front avoids that. A Redis
    that is down now is not fatal: the client retries on first use, and heed
    answers 451 meanwhile.
    """
    try:
        await client.initialize()
    except Exception as exc:  # noqa: BLE001 - any failure here is retried on first use
        log.warning("redis not reachable at start (%s); retrying on first use",
                    type(exc).__name__)


# --- replies read straight from hiredis -----------------------------------------
class LeanPipeline(aioredis.client.Pipeline):
    """redis-py's pipeline, its non-transactional replies read straight from hiredis.

    The rules around the round trip stay redis-py's (the pooled connection, Retry
    sending the whole stack again on a new connection, ``raise_on_error``; MULTI,
    WATCH and scripts go its own way); the reading of the replies is shorter: redis-py
    spent three Python calls, a timeout context and two case-insensitive lookups
    per reply, which with some fifteen commands per recipient was a tenth of heed's
    Redis client time. The rules of ``read_response`` are kept (``_replies``).
    """

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """As redis-py's, without its OpenTelemetry hooks for a plain pipeline (heed turns
        them off; asking whether they are on cost more per batch than reading it)."""
        if (self.is_transaction or self.explicit_transaction or self.watching or self.scripts
                or not self.command_stack):
            return await super().execute(raise_on_error)  # type: ignore[no-any-return]
        stack = self.command_stack
        conn = self.connection or await self.connection_pool.get_connection()
        self.connection = conn  # reset() gives it back to the pool

        async def dropped(error: Exception, failures: int) -> None:
            await conn.disconnect(error=error, failure_count=failures)

        try:
            return await conn.retry.call_with_retry(  # type: ignore[no-any-return]
                lambda: self._execute_pipeline(conn, stack, raise_on_error), dropped,
                with_failure_count=True)
        finally:
            await self.reset()

    async def _execute_pipeline(self, connection: Any, commands: Any,
                                raise_on_error: bool) -> list[Any]:
        if (not isinstance(connection._parser, _AsyncHiredisParser)
                or any(args[0] == "HIMPORT" for args, _ in commands)):
            return await super()._execute_pipeline(  # type: ignore[no-any-return]
                connection, commands, raise_on_error)
        fallback = connection.pack_command
        await connection.send_packed_command(
            b"".join([pack(args, fallback) for args, _ in commands]))
        response = await _replies(connection, commands, self.response_callbacks)
        if raise_on_error:
            self.raise_first_error(commands, response)
        return response


class _LeanPipelines:
    """A client whose ``pipeline()`` is a LeanPipeline."""

    connection_pool: Any
    response_callbacks: Any

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> LeanPipeline:
        return LeanPipeline(self.connection_pool, self.response_callbacks, transaction,
                            shard_hint)


class _Redis(_LeanPipelines, aioredis.Redis):  # type: ignore[misc]  # redis-py's own mixins
    """One server's client."""


class _SentinelRedis(_LeanPipelines, aioredis.Redis):  # type: ignore[misc]
    """The master's client; closing it also closes the connections to the Sentinels."""

    watchers: Sentinel | None = None  # not `sentinel`: that is the SENTINEL command

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for client in self.watchers.sentinels if self.watchers else ():
            await client.aclose()


async def _replies(conn: Any, commands: Any, callbacks: Any) -> list[Any]:
    """Each command's reply, as ``Redis.parse_response`` over ``conn.read_response`` gives
    it: an error reply in its place (or the command's EMPTY_RESPONSE), a reply that makes
    the connection unusable (LOADING, a Sentinel master demoted: READONLY) raised with
    the connection dropped, each wait bounded by the socket timeout, then the callback."""
    parser = conn._parser
    reader = parser._reader
    push = parser._hiredis_PushNotificationType  # RESP3 (redis-py's default): out-of-band
    demoted = getattr(getattr(conn, "connection_pool", None), "is_master", False)
    wait = conn.socket_timeout
    out: list[Any] = []
    try:
        for args, options in commands:
            decode = not options or NEVER_DECODE not in options
            reply = reader.gets(decode)
            while True:
                while reply is NOT_ENOUGH_DATA:
                    if wait:
                        async with asyncio.timeout(wait):
                            await parser.read_from_socket()
                    else:
                        await parser.read_from_socket()
                    reply = reader.gets(decode)
                if push is None or not isinstance(reply, push):
                    break
                await parser.handle_push_response(reply)  # as read_response: then the reply
                reply = reader.gets(decode)
            if isinstance(reply, ResponseError):
                if demoted and isinstance(reply, ReadOnlyError):
                    # As SentinelManagedConnection: reconnecting asks the Sentinels.
                    raise RedisConnectionError("The previous master is now a slave")
                out.append(options[EMPTY_RESPONSE] if EMPTY_RESPONSE in options else reply)
                continue
            if isinstance(reply, RedisConnectionError):
                raise reply
            if type(reply) is list and reply and isinstance(reply[0], RedisConnectionError):
                raise reply[0]
            callback = callbacks.get(args[0])
            if callback is not None:
                if options:
                    options = {k: v for k, v in options.items() if k not in _NOT_FOR_CALLBACKS}
                reply = callback(reply, **options)
                if inspect.isawaitable(reply):
                    reply = await reply
            out.append(reply)
    except TimeoutError:
        await conn.disconnect(nowait=True)
        raise RedisTimeoutError("Timeout reading from redis") from None
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while reading from redis: {exc.args}") from exc
    except BaseException:
        # Out of step with its replies (cancelled mid-reply, a bad reply): not reused.
        await conn.disconnect(nowait=True)
        raise
    if conn.health_check_interval:
        conn.next_health_check = asyncio.get_running_loop().time() + conn.health_check_interval
    return out


_NOT_FOR_CALLBACKS = ("keys", NEVER_DECODE, EMPTY_RESPONSE)
