"""The DNS questions the doctor asks, through dnspython on the configured nameserver."""

from __future__ import annotations

import dns.asyncresolver
import dns.exception
import dns.resolver
import dns.reversename


class DnsTrouble(Exception):
    """The question got no answer at all (timeout, refused): not the same as "no record"."""


class Dns:
    """Answers as plain values: None or [] when the record does not exist."""

    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def _ask(self, name: str, rtype: str) -> list[object]:
        try:
            return list(await self.resolver.resolve(name, rtype))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTrouble(f"{rtype} {name}: {type(exc).__name__}") from None

    async def txt(self, name: str) -> list[str]:
        """Each TXT record, its strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        return [b"".join(r.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
                for r in await self._ask(name, "TXT")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        return sorted((r.preference, str(r.exchange).rstrip(".").lower())  # type: ignore[attr-defined]
                      for r in await self._ask(name, "MX"))

    async def addresses(self, name: str) -> list[str]:
        out = []
        for rtype in ("A", "AAAA"):
            out += [r.to_text() for r in await self._ask(name, rtype)]  # type: ignore[attr-defined]
        return out

    async def ptr(self, ip: str) -> list[str]:
        name = dns.reversename.from_address(ip).to_text()
        return [r.to_text().rstrip(".").lower() for r in await self._ask(name, "PTR")]  # type: ignore[attr-defined]
