"""The ``tell`` section: what heed sends back to the tool (docs/tell.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.settings.values import Reader, durations, parse_duration, texts, whsec


@dataclass(frozen=True)
class TellSettings:
    """Telling the tool each "no" heed hears (docs/tell.md): sync-back and webhooks out."""

    # mailto sync-back: the From of the unsubscribe mail; "" -> unsubscribe@mailto_domain.
    sender: str = ""
    # Hosts, IPs or networks a request may go to although they are loopback or private.
    allow: tuple[str, ...] = ()
    timeout: float = 10.0  # one request, connection included
    backoff: tuple[float, ...] = (30.0, 120.0, 600.0, 3600.0, 6 * 3600.0)
    max_attempts: int = 8  # then the job goes to the dead-letter list
    lease: float = 60.0  # a claimed job (or outbox entry) older than this is taken over
    poll_interval: float = 1.0
    offer_ttl: float = 90 * 86400.0  # how long the tool's own links are kept after a copy
    lifecycle_every: float = 3600.0  # how often one worker looks for people turned inactive
    # Signed outbound webhooks: [{url: https://…, secrets: [whsec_…]}] (Standard Webhooks).
    webhooks: tuple[tuple[str, tuple[str, ...]], ...] = ()


def _endpoints(v: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for i, hook in enumerate(v or []):
        if not isinstance(hook, Mapping) or not str(hook.get("url", "")).startswith(
                ("https://", "http://")):
            raise ValueError(f"entry {i}: needs url: https://…")
        secrets = texts(hook.get("secrets"))
        if not secrets or not all(whsec(s) for s in secrets):
            raise ValueError(f"entry {i}: secrets must be a list of whsec_<base64> secrets "
                             "of at least 16 bytes")
        out.append((str(hook["url"]), secrets))
    return tuple(out)


def tell(r: Reader) -> TellSettings:
    out = r.take(TellSettings, "tell", {
        "allow": texts, "timeout": parse_duration, "lease": parse_duration,
        "poll_interval": parse_duration, "offer_ttl": parse_duration, "max_attempts": int,
        "lifecycle_every": parse_duration,
        "backoff": durations,
        "webhooks": _endpoints,
    })
    if not 0 < out.timeout <= 60:
        r.error("'tell.timeout' must be between 0s and 60s")
    if not out.backoff:
        r.error("'tell.backoff' needs at least one delay")
    return out
