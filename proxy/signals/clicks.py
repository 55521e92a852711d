"""Tracked links: where a click token leads, and whether a person or a link scanner asked."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from proxy.copy.links import link_id
from proxy.copy.personal import TRAP, ClickTarget
from proxy.errors import StateUnavailable, TokenError
from proxy.keys import Keys
from proxy.settings import ClickSettings
from proxy.state import State
from proxy.tokens import CLICK, OPEN, TokenClaims, TokenSigner

log = logging.getLogger("heed.clicks")

CLICKED = "click"
MACHINE = "machine-click"
# How long a copy's record of its last request is kept: long past any burst window.
COPY_TTL = 86400

# One request to a copy's tracked link, classified against the copy's last request.
# KEYS: the person's clicks hash. ARGV: copy, now, link id, burst window, sticky window,
# reason already known ("" for none), ttl. Returns the machine reason, or "".
# A copy that a machine requested a moment ago stays machine for the sticky window
# (a scanner's HEAD, trap or sweep taints the sweep's other requests); a different link
# of the same copy within the burst window is a sweep (people open one link at a time).
CLASSIFY = """
local now, reason = tonumber(ARGV[2]), ARGV[6]
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local t, link, flag = string.match(cur, '^([^|]*)|([^|]*)|(.*)$')
  t = tonumber(t)
  if t and reason == '' and flag ~= '' and now - t <= tonumber(ARGV[5]) then
    reason = flag
  elseif t and reason == '' and link ~= ARGV[3] and now - t <= tonumber(ARGV[4]) then
    reason = 'several links of one copy within ' .. ARGV[4] .. ' s'
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. reason)
redis.call('EXPIRE', KEYS[1], ARGV[7])
return reason
"""


@dataclass(frozen=True)
class Click:
    """One request to a tracked link: whose, where to, and whether a person made it."""

    address: str
    stream: str
    destination: str | None  # None for the trap link
    kind: str  # "click" or "machine-click"
    why: str = ""  # for a machine click: the reason it was taken for one


class Request:
    """What the HTTP side knows of a request: method, client address, user agent."""

    def __init__(self, method: str, ip: str, user_agent: str) -> None:
        self.method = method
        self.ip = ip
        self.user_agent = user_agent


class Clicks:
    """Verifies click tokens, finds the destination, classifies and records the click."""

    def __init__(self, tokens: TokenSigner, state: State, redis: Any, keys: Keys,
                 settings: ClickSettings, link_ttl: float) -> None:
        self.tokens = tokens
        self.state = state
        self.redis = redis
        self.keys = keys
        self.settings = settings
        self.link_ttl = max(1, int(link_ttl))
        self._nets = [ipaddress.ip_network(n, strict=False) for n in settings.scanner_networks]

    async def store(self, destinations: Mapping[str, str]) -> None:
        """Keep each destination under its id before any copy naming it goes out."""
        if not destinations:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for lid, url in destinations.items():
                pipe.set(self.keys.link(lid), url, ex=self.link_ttl)
            await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    def verify(self, token: str, purpose: str = CLICK) -> tuple[TokenClaims, ClickTarget]:
        """The token's claims and target; TokenError for anything forged, altered or expired."""
        claims = self.tokens.verify(token, purpose)
        target = ClickTarget.decode(claims.list)
        if target is None:
            raise TokenError("invalid or expired link")
        return claims, target

    def _static_reason(self, request: Request, claims: TokenClaims, now: float) -> str:
        if request.method == "HEAD":
            return "HEAD request"  # browsers GET a link; scanners check it with HEAD
        after = now - claims.issued_at
        if after < self.settings.machine_after_delivery:
            return f"{max(0.0, after):.0f} s after delivery"
        try:
            ip = ipaddress.ip_address(request.ip) if self._nets else None
        except ValueError:
            ip = None
        if ip is not None and any(ip in net for net in self._nets):
            return f"from scanner network {next(n for n in self._nets if ip in n)}"
        agent = request.user_agent.lower()
        for pattern in self.settings.scanner_user_agents:
            if pattern.lower() in agent:
                return f"scanner user agent {pattern!r}"
        return ""

    async def follow(self, token: str, request: Request, now: float) -> Click:
        """Classify and record one request; TokenError for a bad token or destination."""
        claims, target = self.verify(token)
        trap = target.link == TRAP
        reason = ("the hidden trap link (no person can see or focus it)" if trap
                  else self._static_reason(request, claims, now))
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self.keys.link(target.link))
            # EVAL, not EVALSHA: it rides on the pipeline, and no script cache to miss.
            pipe.eval(CLASSIFY, 1, self.keys.clicks(claims.address), target.copy, repr(now),
                      target.link, self.settings.burst_window, self.settings.sticky_window,
                      reason, COPY_TTL)
            url, found = await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        destination = None if trap else url.decode() if isinstance(url, bytes) else url
        # The id is the destination's hash: a stored value changed behind heed is refused too.
        if not trap and (destination is None or link_id(destination) != target.link):
            raise TokenError("invalid or expired link")
        reason = found.decode() if isinstance(found, bytes) else str(found or "")
        kind = MACHINE if reason else CLICKED
        # The click's own record (the copy's last request, above) is written before the
        # redirect; its engagement and audit entry may ride on the next round trip
        # (``redis.write_behind``), as a delivery's confirmation does: one round trip
        # on the redirect's path, like one-click's.
        await self.state.engage(claims.address, kind=kind, at=now, source="tracked link",
                                why=reason, stream=target.stream, behind=True)
        return Click(claims.address, target.stream, destination, kind, reason)

    async def opened(self, token: str, now: float) -> str:
        """Record an open of a copy (the image was fetched); the address, or TokenError."""
        claims = self.tokens.verify(token, OPEN)
        await self.state.engage(claims.address, kind="open", at=now, source="open image")
        return claims.address
