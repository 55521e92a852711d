"""What every `heed` command shares: common flags, its settings, its Redis, the provider guard."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError
from proxy.settings import DEFAULT_CONFIG, Settings, load_settings, parse_duration, parse_hostport


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help=f"service config (default: $HEED_CONFIG, else {DEFAULT_CONFIG} when "
                        "it exists, else the running heed serve's)")
    p.add_argument("--redis", metavar="URL", help="Redis URL (replaces the embedded default)")
    p.add_argument("--policies", type=Path, metavar="DIR", help="policy directory")


def settings_from(args: argparse.Namespace) -> Settings:
    """Config file, env, then flags. The file: --config, $HEED_CONFIG, ./config/heed.yaml,
    or (for the management commands) the one the running `heed serve` was started with."""
    path = args.config or (Path(os.environ["HEED_CONFIG"]) if os.environ.get("HEED_CONFIG")
                           else None)
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    overrides: dict[str, Any] = {}
    if path is None and args.command != "serve" and not getattr(args, "redis", None):
        from proxy.locate import running

        found = running(os.environ)
        if found:  # run from elsewhere: use what `heed serve` runs on, wherever that is
            path = Path(found["config"]) if found.get("config") else None
            overrides = {"redis": {"data_dir": found["data_dir"]},
                         "policies": found["policies"]}
        else:
            print(f"note: no config here (--config, $HEED_CONFIG, {DEFAULT_CONFIG}) and no "
                  f"heed serve running: using the defaults in {Path.cwd()}", file=sys.stderr)
    if getattr(args, "redis", None):
        overrides.setdefault("redis", {})["url"] = args.redis
    if getattr(args, "policies", None):
        overrides["policies"] = str(args.policies.resolve())
    if getattr(args, "listen", None):
        overrides.setdefault("smtp", {})["listen"] = args.listen
    if getattr(args, "upstream", None):
        host, port = parse_hostport(args.upstream)
        overrides.setdefault("upstream", {}).update(host=host, port=port)
    if getattr(args, "http", None):
        overrides.setdefault("http", {})["listen"] = args.http
    if getattr(args, "public_url", None):
        overrides.setdefault("http", {})["public_url"] = args.public_url
    return load_settings(path, overrides=overrides)


def duration_arg(text: str) -> float:
    """An argparse ``type=`` for a duration flag: a bad one is a usage error, not a traceback."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def since(args: argparse.Namespace) -> float:
    """``--since`` in seconds; a bad duration is a config error naming the flag."""
    try:
        return parse_duration(args.since)
    except ValueError as exc:
        raise ConfigError([f"--since: {exc}"]) from None


@contextlib.asynccontextmanager
async def redis_for(settings: Settings) -> AsyncIterator[Any]:
    """A client for the configured Redis, or for the embedded one (started if not running).

    With a durable Redis (embedded split, or redis.durable_url) the client writes durable
    keys there first, and its ``durable`` attribute is that Redis (the delay queue's)."""
    from proxy.durable.mirror import Mirror, MirroredRedis
    from proxy.embedded_redis import EmbeddedRedis, embedded_pair, ping
    from proxy.keys import Keys
    from proxy.redisconn import connect_redis, warm_up

    started: list[EmbeddedRedis] = []
    url, durable_url = settings.redis.url, settings.redis.durable_url

    def embedded(candidate: EmbeddedRedis) -> str:
        if candidate.socket is not None and ping(candidate.socket):
            return candidate.url  # `heed serve` is running: use its Redis
        started.append(candidate)
        # Started from this thread: the server is tied to the thread that forked it
        # (PR_SET_PDEATHSIG), and a pool thread may end before the command does.
        return candidate.start()

    try:
        if url is None:
            serving, durable = embedded_pair(settings.redis)
            url = embedded(serving)
            durable_url = embedded(durable) if durable is not None else None
            if started:
                print(f"note: no heed serve runs on {settings.redis.data_dir.resolve()}; its "
                      "Redis was started for this command", file=sys.stderr)
        client = connect_redis(url)
        await warm_up(client)
        if durable_url is not None:
            from proxy.durable.reconcile import reconcile

            durable_client, keys = connect_redis(durable_url), Keys(settings.redis.prefix)
            await reconcile(client, durable_client, keys, restore=not settings.redis.url
                            and len(started) == 2)  # restored only when no heed serve runs
            client = MirroredRedis(client, Mirror(durable_client, keys))
        try:
            yield client
        finally:
            await client.aclose()
    finally:
        for server in reversed(started):
            server.stop()


def provider_guard(settings: Settings, redis: Any, clock: Any) -> Any:
    """The provider guard as `heed serve` builds it (catalog, MX lookup, throttling)."""
    from proxy.keys import Keys
    from proxy.providers.catalog import Catalog
    from proxy.providers.guard import ProviderGuard
    from proxy.providers.lookup import ProviderLookup, make_resolver

    catalog = Catalog(settings.providers)
    lookup = ProviderLookup(catalog, make_resolver(settings.dns), clock, settings.dns.mx_cache)
    return ProviderGuard(redis, Keys(settings.redis.prefix), catalog, lookup, clock)
