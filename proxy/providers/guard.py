"""The provider guard's ears: a provider's "slow down" (reply or DSN) is kept, shared, in Redis."""

from __future__ import annotations

import email
import email.policy
import logging
import re
from dataclasses import replace
from typing import Any

from redis.exceptions import RedisError

from proxy.clock import Clock
from proxy.keys import Keys
from proxy.providers.catalog import Catalog, Provider
from proxy.providers.lookup import ProviderLookup
from proxy.types import PersonState

log = logging.getLogger("heed.providers")
# How far back throttling is kept: the provider_guard condition's max_pause and window
# are at most this long (proxy/policy/conditions.py).
LOOKBACK = 31 * 86400.0
Throttles = dict[str, tuple[tuple[float, str], ...]]  # provider -> ((time, cause), …) oldest first


class ProviderGuard:
    """Records throttling per provider, and serves the recent record to the mail path."""

    def __init__(self, redis: Any, keys: Keys, catalog: Catalog, lookup: ProviderLookup,
                 clock: Clock, *, refresh: float = 2.0) -> None:
        self.redis = redis
        self.keys = keys
        self.catalog = catalog
        self.lookup = lookup
        self.clock = clock
        self.refresh = refresh  # how stale the mail path's view of other instances may be
        self._view: Throttles = {}
        self._read_at = float("-inf")

    async def heard(self, domain: str, text: str, *, remote: str = "",
                    source: str = "reply") -> tuple[Provider, str] | None:
        """Record ``text`` (an upstream reply or a DSN's diagnostic) if it is a provider's
        throttling or reputation code for mail to ``domain``; the provider and cause."""
        if self.catalog.signal(text, None) is None:
            return None  # no provider's code at all (user unknown, …): no DNS question
        hint = (self.catalog.by_host(remote.rpartition(";")[2].strip()) if remote else None) \
            or self.catalog.in_text(text)
        if hint is None and domain:
            hint = await self.lookup.provider_of(domain)
        found = self.catalog.signal(text, hint)
        if found is None:
            return None
        provider, cause = found
        now = self.clock.now()
        said = " ".join(text.split())[:160]
        await self.record(provider.name, f"{cause} ({source}: {said})", now)
        log.warning("provider %s pushed back (%s): %s", provider.name, source, said)
        return found

    async def hear_replies(self, replies: list[tuple[str, str]]) -> None:
        """The upstream's (recipient, reply) pairs that were not a plain 250."""
        for recipient, text in replies:
            await self.heard(recipient.rpartition("@")[2], text, source="upstream")

    async def annotate(self, snapshots: list[PersonState]) -> list[PersonState]:
        """Each person's state with their provider and its recent throttling."""
        out = []
        for snap in snapshots:
            name, throttles = await self.facts(snap.address)
            out.append(replace(snap, provider=name, provider_throttles=throttles)
                       if name else snap)
        return out

    async def hear_dsn(self, finding: Any, data: bytes = b"") -> tuple[Provider, str] | None:
        """A bounce finding (proxy/bounces.py) of a DSN heed read; many MTAs write the
        remote server's reply only in the human-readable part (RFC 3464 §2.1), so the
        lines of that part naming the recipient are read when the fields say nothing."""
        domain = (finding.address or "").rpartition("@")[2]
        texts = [finding.detail, *_notification_lines(data, finding.address)]
        for text in texts:
            if self.catalog.signal(text, None) is not None:
                return await self.heard(domain, text, remote=finding.remote, source="DSN")
        return None

    async def record(self, provider: str, cause: str, at: float) -> None:
        key = self.keys.provider_throttle(provider)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(key, {f"{at!r}|{cause}": at})
            pipe.zremrangebyscore(key, "-inf", at - LOOKBACK)
            await pipe.execute()
        except RedisError:
            log.error("provider throttling of %s not recorded (Redis)", provider)
        self._read_at = float("-inf")  # this instance sees it at once

    async def throttles(self) -> Throttles:
        """Each provider's recent throttling, read at most every ``refresh`` seconds."""
        now = self.clock.now()
        if now - self._read_at < self.refresh:
            return self._view
        names = list(self.catalog.providers)
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.zrangebyscore(self.keys.provider_throttle(name), now - LOOKBACK, "+inf",
                                   withscores=True)
            rows = await pipe.execute()
        except RedisError:
            log.warning("provider throttling not read (Redis); using the last view")
            return self._view
        view: Throttles = {}
        for name, members in zip(names, rows, strict=True):
            if members:
                view[name] = tuple((float(score), _text(m).partition("|")[2])
                                   for m, score in members)
        self._view, self._read_at = view, now
        return view

    async def facts(self, address: str) -> tuple[str, tuple[tuple[float, str], ...]]:
        """(provider name or "", its throttling) for a recipient: an MX lookup only while
        some provider has pushed back (otherwise there is nothing to hold)."""
        view = await self.throttles()
        if not view:
            return "", ()
        provider = await self.lookup.provider_of(address.rpartition("@")[2])
        if provider is None:
            return "", ()
        return provider.name, view.get(provider.name, ())


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _notification_lines(data: bytes, address: str | None) -> list[str]:
    """The lines of a DSN's text/plain parts that name ``address`` (all lines if None)."""
    if not data:
        return []
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    out: list[str] = []
    for part in message.walk():
        if part.get_content_type() != "text/plain":
            continue
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
        # Continuation lines (indented) belong to the line above them.
        joined = re.sub(r"\r?\n[ \t]+", " ", text)
        out += [line for line in joined.splitlines()
                if address is None or address.lower() in line.lower()]
    return out[:50]
