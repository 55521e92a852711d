"""Which mailbox provider receives a domain's mail: known domains first, else its MX (dnspython)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

import dns.asyncresolver
import dns.exception
import dns.resolver

from proxy.clock import Clock
from proxy.providers.catalog import Catalog, Provider
from proxy.settings import DnsSettings

log = logging.getLogger("heed.providers")
CACHE_SIZE = 100_000  # domains kept; the oldest go first


def make_resolver(settings: DnsSettings) -> dns.asyncresolver.Resolver:
    """dnspython's resolver on the configured nameservers (or /etc/resolv.conf)."""
    if not settings.nameservers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = []
        for ns in settings.nameservers:
            host, _, port = ns.rpartition(":") if ns.count(":") == 1 else (ns, "", "")
            resolver.nameservers.append(host or ns)
            if port:
                resolver.port = int(port)
    resolver.lifetime = settings.timeout
    resolver.timeout = settings.timeout
    return resolver


class ProviderLookup:
    """domain -> Provider (or None: not one heed groups), cached for ``mx_cache``."""

    def __init__(self, catalog: Catalog, resolver: dns.asyncresolver.Resolver, clock: Clock,
                 ttl: float = 3600.0) -> None:
        self.catalog = catalog
        self.resolver = resolver
        self.clock = clock
        self.ttl = ttl
        self._cache: OrderedDict[str, tuple[Provider | None, float]] = OrderedDict()

    async def provider_of(self, domain: str) -> Provider | None:
        domain = domain.lower().rstrip(".")
        known = self.catalog.by_domain(domain)
        if known is not None:
            return known
        hit = self._cache.get(domain)
        now = self.clock.now()
        if hit is not None and hit[1] > now:
            return hit[0]
        found = await self._by_mx(domain)
        self._cache[domain] = (found, now + self.ttl)
        self._cache.move_to_end(domain)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found

    async def providers_of(self, domains: list[str]) -> dict[str, Provider | None]:
        found = await asyncio.gather(*(self.provider_of(d) for d in domains))
        return dict(zip(domains, found, strict=True))

    async def _by_mx(self, domain: str) -> Provider | None:
        try:
            answer = await self.resolver.resolve(domain, "MX")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return None
        except (dns.exception.DNSException, OSError) as exc:
            # Unknown for now: not grouped (the guard cannot hold what it cannot place).
            log.info("MX of %s not resolved: %s", domain, type(exc).__name__)
            return None
        for record in sorted(answer, key=lambda r: r.preference):
            provider = self.catalog.by_host(str(record.exchange))
            if provider is not None:
                return provider
        return None
