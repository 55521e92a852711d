"""Can heed reach its peers? The upstream MTA and Redis, tried once (start, `check --connect`)."""

from __future__ import annotations

import asyncio
import os

from proxy.settings import Settings

# Long enough for a greeting across a WAN, short enough not to stall a start-up.
PROBE_TIMEOUT = 10.0


async def probe_upstream(settings: Settings, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when the upstream greets with 220 (RFC 5321 §4.3.1); else what went wrong, in words."""
    host, port = settings.upstream.host, settings.upstream.port
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as exc:
        return _words(exc, timeout) or "no answer"
    try:
        greeting = await asyncio.wait_for(reader.readline(), timeout)
        if not greeting.startswith(b"220"):
            text = greeting.decode(errors="replace").strip() or "connection closed"
            return f"greeted with {text!r}, not 220"
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return None
    except (TimeoutError, OSError) as exc:
        return _words(exc, timeout) or "no greeting"
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def probe_redis(settings: Settings, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when the configured (or embedded) Redis answers PING; else the reason."""
    from redis.exceptions import RedisError

    from proxy.cli import redis_for
    from proxy.errors import ConfigError

    try:
        async with redis_for(settings) as client:
            await asyncio.wait_for(client.ping(), timeout)
    except ConfigError as exc:
        return "; ".join(exc.errors)
    except (TimeoutError, RedisError, OSError) as exc:
        return _words(exc, timeout) or "no answer"
    return None


def _words(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # "Connection refused", not asyncio's wording
    return str(exc)
