"""The RFC 8058 one-click POST to the tool's own URL, made as a mail client makes it."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from proxy.tell.offer import ONE_CLICK

# RFC 8058 §3.2: the body is exactly this, sent as a form (application/x-www-form-urlencoded
# or multipart/form-data); §3.1: no cookies, no HTTP authorization.
BODY = ONE_CLICK.encode("ascii")
CONTENT_TYPE = "application/x-www-form-urlencoded"
USER_AGENT = "heed (RFC 8058 one-click unsubscribe on behalf of the recipient)"
MAX_REDIRECTS = 3  # to the same host only: a redirect elsewhere is not followed
RETRY_STATUS = frozenset((408, 425, 429))  # 4xx that say "later", not "never"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 forms that carry an IPv4 address a gateway or relay reaches (RFC 6052 NAT64,
# RFC 4291 §2.5.5.1 IPv4-compatible); Python calls them global whatever the IPv4 inside.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
COMPATIBLE = ipaddress.ip_network("::/96")
LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local use, never public


class Refused(Exception):
    """The destination is one heed will not contact (permanent: the job is given up)."""


@dataclass(frozen=True)
class Outcome:
    """What one attempt did: ``ok``; else ``retry`` says whether a later try may succeed."""

    ok: bool
    retry: bool = False
    detail: str = ""


class Allow:
    """``tell.allow``: host names and IP networks a request may reach although not public."""

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.names: set[str] = set()
        self.networks: list[IpNetwork] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(entry.strip().lower().rstrip("."))

    def host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names or self._ip_allowed(host)

    def _ip_allowed(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return False
        return any(ip in n for n in self.networks)

    def check_ip(self, host: str, ip: IpAddress) -> None:
        """Raise Refused for a destination that is not public and not allowed."""
        if self.host(host) or any(ip in n for n in self.networks):
            return
        target = _inner(ip)
        if not target.is_global or target.is_multicast or ip in LOCAL_NAT64:
            # SSRF: a tool's link must not make heed reach inside its own network.
            raise Refused(f"{host} is {target}, a loopback/private address not in tell.allow")


def _inner(ip: IpAddress) -> IpAddress:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, compatible), else itself."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:  # RFC 3056: a 6to4 relay delivers to the IPv4 inside
        return ip.sixtofour
    if ip in NAT64 or (ip in COMPATIBLE and int(ip) > 1):  # ::1 and :: stay themselves
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


class GuardedResolver(AbstractResolver):
    """Resolves names, then refuses any answer that is not a public address (checked at
    connection time, so a DNS answer cannot change between the check and the request)."""

    def __init__(self, allow: Allow) -> None:
        self.allow = allow
        self.inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        for info in found:
            self.allow.check_ip(host, ipaddress.ip_address(info["host"]))
        return found

    async def close(self) -> None:
        await self.inner.close()


def check_url(url: str, allow: Allow) -> str:
    """The URL's host if heed may POST to it; Refused otherwise (scheme, literal IPs, a URL
    that cannot be one: the tool's header is untrusted text, and a retry cannot mend it)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        host.encode("idna")  # RFC 5890: a label over 63 octets is no host name
    except ValueError as exc:  # UnicodeError included
        raise Refused(f"not a usable URL ({exc})") from None
    if not host:
        raise Refused("no host in the URL")
    # RFC 8058 §3.1: the one-click URI is https; plain http only to a host named in allow.
    if parts.scheme != "https" and not (parts.scheme == "http" and allow.host(host)):
        raise Refused(f"{parts.scheme}: is not https")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name: the resolver checks what it resolves to
    allow.check_ip(host, literal)  # aiohttp does not resolve literals: check here
    return host


class OneClick:
    """Sends one-click POSTs; one session (no cookie jar) for the worker's lifetime."""

    def __init__(self, allow: tuple[str, ...], timeout: float) -> None:
        self.allow = Allow(allow)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allow),
                                             force_close=True)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=self.timeout), trust_env=False)
        return self._session

    async def post(self, url: str) -> Outcome:
        try:
            host = check_url(url, self.allow)
        except Refused as exc:
            return Outcome(False, detail=f"refused: {exc}")
        for _ in range(MAX_REDIRECTS + 1):
            try:
                status, location = await self._once(url)
            except Refused as exc:
                return Outcome(False, detail=f"refused: {exc}")
            except (aiohttp.InvalidURL, ValueError) as exc:  # the URL, not the network
                return Outcome(False, detail=f"refused: not a usable URL ({exc})"[:300])
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                return Outcome(False, retry=True, detail=f"{type(exc).__name__}: {exc}"[:300])
            if 200 <= status < 300:
                return Outcome(True, detail=f"HTTP {status}")
            if status in (301, 302, 303, 307, 308) and location:
                try:
                    nxt = urljoin(url, location)
                except ValueError:
                    return Outcome(False, detail=f"HTTP {status} to an unusable URL")
                # RFC 8058 §3.1 asks for no redirect; one on the same host (a trailing
                # slash, http -> https) is followed with the same POST, another is not.
                if (urlsplit(nxt).hostname or "").lower() != host.lower():
                    return Outcome(False, detail=f"HTTP {status} to another host: not followed")
                try:
                    check_url(nxt, self.allow)
                except Refused as exc:
                    return Outcome(False, detail=f"refused redirect: {exc}")
                url = nxt
                continue
            retry = status >= 500 or status in RETRY_STATUS
            return Outcome(False, retry=retry, detail=f"HTTP {status}")
        return Outcome(False, detail="too many redirects")

    async def _once(self, url: str) -> tuple[int, str]:
        headers: dict[str, Any] = {"Content-Type": CONTENT_TYPE, "User-Agent": USER_AGENT}
        async with self._client().post(url, data=BODY, headers=headers,
                                       allow_redirects=False) as response:
            # The status is the answer; the body is never read (a tool's page may be
            # endless: it must neither fill memory nor turn a 200 into a timeout).
            return response.status, response.headers.get("Location", "")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
