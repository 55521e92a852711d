"""The ``redis``, ``queue`` and ``audit`` sections: state, held mail and the audit trail."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from proxy.settings.values import Reader, durations, parse_duration, redis_url


@dataclass(frozen=True)
class RedisSettings:
    url: str | None = None  # None -> embedded private redis-server
    data_dir: Path = Path("var/redis")
    prefix: str = "heed"
    # Seconds a delivery's record (sends, audit, VERP mapping), or a click's engagement,
    # may wait to share a round trip after the reply; 0: written before it (proxy/batch.py).
    write_behind: float = 0.05
    # What must be durable (delay queue, consent, refusals) on a Redis of its own with
    # appendfsync always, the rest on one with everysec (proxy/durable/). The embedded
    # default starts both (split); with redis.url, durable_url names the second.
    durable_url: str | None = None
    split: bool = True


@dataclass(frozen=True)
class QueueSettings:
    poll_interval: float = 1.0
    batch: int = 50
    lease: float = 300.0  # a claim older than this is recovered (its worker died)
    max_hold: float = 7 * 86400.0
    backoff: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)


@dataclass(frozen=True)
class AuditSettings:
    # The global audit trail keeps about this many entries (Redis trims whole nodes,
    # so a few more), and none older than max_age when set (0: no age limit).
    max_entries: int = 1_000_000
    max_age: float = 0.0


def redis(r: Reader) -> RedisSettings:
    out = r.take(RedisSettings, "redis", {
        "data_dir": r.rel, "url": redis_url, "write_behind": parse_duration,
        "durable_url": redis_url})
    if not 0 <= out.write_behind <= 1:
        # Longer would widen what a killed process loses without saving a round trip.
        r.error("'redis.write_behind' must be between 0s and 1s")
    return out


def queue(r: Reader) -> QueueSettings:
    return r.take(QueueSettings, "queue", {
        "poll_interval": parse_duration,
        "lease": parse_duration,
        "max_hold": parse_duration,
        "batch": int,
        "backoff": durations,
    })


def audit(r: Reader) -> AuditSettings:
    out = r.take(AuditSettings, "audit", {"max_entries": int, "max_age": parse_duration})
    if out.max_entries < 1000 or out.max_age < 0:
        r.error("'audit.max_entries' must be at least 1000 and "
                "'audit.max_age' a duration (0: no age limit)")
    return out
