"""``Settings``, built once at start-up from config/heed.yaml, ``HEED_*`` environment and flags."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from proxy.errors import ConfigError
from proxy.settings import bulk, edges, signals, signing, storage
from proxy.settings import tell as tell_
from proxy.settings.bulk import DnsSettings, DoctorSettings, ProviderSettings
from proxy.settings.edges import HttpSettings, SmtpSettings, UpstreamSettings
from proxy.settings.signals import (
    ApiSettings,
    BounceSettings,
    ClickSettings,
    ReplySettings,
    WebhookSettings,
)
from proxy.settings.signing import DkimKey, UnsubscribeSettings
from proxy.settings.storage import AuditSettings, QueueSettings, RedisSettings
from proxy.settings.tell import TellSettings
from proxy.settings.values import Reader

DEFAULT_CONFIG = Path("config/heed.yaml")
# HEED_* variables that are not settings: heed's own (the config file, the redis-server
# binary) and the test suite's (corpora, browser tools). Any other HEED_* must be a key.
NOT_CONFIG = ("HEED_CONFIG", "HEED_REDIS_SERVER", "HEED_REAL_REDIS_SERVER", "HEED_SET_OF_EMAILS",
              "HEED_NEWSLETTER_MIRRORS", "HEED_AXE", "HEED_SKIP_BROWSER", "HEED_SCREENSHOTS")


@dataclass(frozen=True)
class Settings:
    smtp: SmtpSettings = SmtpSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    redis: RedisSettings = RedisSettings()
    queue: QueueSettings = QueueSettings()
    audit: AuditSettings = AuditSettings()
    http: HttpSettings = HttpSettings()
    unsubscribe: UnsubscribeSettings = UnsubscribeSettings()
    api: ApiSettings = ApiSettings()
    bounces: BounceSettings = BounceSettings()
    webhooks: WebhookSettings = WebhookSettings()
    clicks: ClickSettings = ClickSettings()
    replies: ReplySettings = ReplySettings()
    tell: TellSettings = TellSettings()
    dkim: tuple[DkimKey, ...] = ()
    dns: DnsSettings = DnsSettings()
    doctor: DoctorSettings = DoctorSettings()
    providers: tuple[ProviderSettings, ...] = ()
    policies: Path = Path("policies")
    log_level: str = "INFO"
    log_format: str = "json"  # or "text"
    # How addresses appear in log lines: full, hash (keyed with the erase secret) or domain.
    log_addresses: str = "full"
    # Log the event loop's holds longer than this (ms), with where, and GC pauses; 0: off.
    loop_watch_ms: float = 0.0
    source: Path | None = None  # the config file these came from


# Every top-level key a config file may have: the fields of Settings but the one it does not set.
TOP_LEVEL = frozenset(f.name for f in dataclasses.fields(Settings)) - {"source"}


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith("HEED_") or name in NOT_CONFIG:
            continue
        path = [p.lower() for p in name[5:].split("__") if p]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw else None
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the config file (if any), apply HEED_* environment and flag overrides, validate."""
    raw: dict[str, Any] = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", exc)
            raise ConfigError([f"{path}{line}: invalid YAML: {problem}"]) from None
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}:1: expected a mapping at the top level"])
        raw = loaded
    raw = _merge(raw, _env_overrides(os.environ if env is None else env))
    if overrides:
        raw = _merge(raw, overrides)
    base = path.parent.parent if path is not None and path.parent.name == "config" else Path(".")
    return _build(Reader(raw, where, base), path)


def _build(r: Reader, source: Path | None) -> Settings:
    # Read in this order so errors come in the order of the sample config.
    smtp, upstream = edges.smtp(r), edges.upstream(r)
    redis, queue, audit = storage.redis(r), storage.queue(r), storage.audit(r)
    http = edges.http(r)
    api, bounces, webhooks = signals.api(r), signals.bounces(r), signals.webhooks(r)
    clicks, replies = signals.clicks(r), signals.replies(r)
    tell = tell_.tell(r)
    unsubscribe, dkim = signing.unsubscribe(r), signing.dkim(r)
    dns, doctor, providers = bulk.dns(r), bulk.doctor(r), bulk.providers(r)
    for key in r.raw:
        if key not in TOP_LEVEL:
            r.error(f"unknown top-level key '{key}'")
    log_addresses = str(r.raw.get("log_addresses", "full"))
    if log_addresses not in ("full", "hash", "domain"):
        r.error("'log_addresses' must be full, hash or domain")
    loop_watch_ms = r.raw.get("loop_watch_ms", 0)
    if isinstance(loop_watch_ms, bool) or not isinstance(loop_watch_ms, int | float) \
            or loop_watch_ms < 0:
        r.error("'loop_watch_ms' must be a number of milliseconds, 0 or more")
        loop_watch_ms = 0
    if r.errors:
        raise ConfigError(r.errors)
    return Settings(
        smtp=smtp,
        upstream=upstream,
        redis=redis,
        queue=queue,
        audit=audit,
        http=http,
        unsubscribe=unsubscribe,
        api=api,
        bounces=bounces,
        webhooks=webhooks,
        clicks=clicks,
        replies=replies,
        tell=tell,
        dkim=dkim,
        dns=dns,
        doctor=doctor,
        providers=providers,
        policies=r.rel(r.raw.get("policies", "policies")),
        log_level=str(r.raw.get("log_level", "INFO")).upper(),
        log_format=str(r.raw.get("log_format", "json")),
        log_addresses=log_addresses,
        loop_watch_ms=float(loop_watch_ms),
        source=source,
    )
