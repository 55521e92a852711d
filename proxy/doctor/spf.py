"""Enough of SPF (RFC 7208) to say whether an egress IP passes a domain's record."""

from __future__ import annotations

import ipaddress

from proxy.doctor.dnsq import Dns

MAX_LOOKUPS = 10  # RFC 7208 §4.6.4: more DNS-querying terms is a permerror
RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}


class SpfError(Exception):
    """permerror: a record receivers cannot evaluate."""


def record(txts: list[str]) -> str | None:
    """The domain's SPF record (exactly one "v=spf1" TXT, RFC 7208 §4.5)."""
    found = [t for t in txts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]
    if len(found) > 1:
        raise SpfError("more than one v=spf1 record")
    return found[0] if found else None


async def check_host(dns: Dns, domain: str, ip: str, budget: list[int] | None = None) -> str:
    """pass, fail, softfail, neutral, none; SpfError for permerror."""
    budget = budget if budget is not None else [MAX_LOOKUPS]
    text = record(await dns.txt(domain))
    if text is None:
        return "none"
    addr = ipaddress.ip_address(ip)
    redirect = None
    for term in text.split()[1:]:
        if "=" in term and ":" not in term.split("=", 1)[0]:
            name, _, value = term.partition("=")
            if name.lower() == "redirect":
                redirect = value
            continue
        qualifier = term[0] if term[0] in RESULTS else "+"
        mech = term[1:] if term[0] in RESULTS else term
        if await _matches(dns, domain, mech, addr, budget):
            return RESULTS[qualifier]
    if redirect:
        _spend(budget)
        return await check_host(dns, redirect, ip, budget)
    return "neutral"


def _spend(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise SpfError(f"more than {MAX_LOOKUPS} DNS lookups")


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


async def _matches(dns: Dns, domain: str, mech: str, addr: Address, budget: list[int]) -> bool:
    name, _, arg = mech.partition(":")
    name = name.lower()
    if "/" in name:  # "a/24", "mx/24"
        name, _, cidr = name.partition("/")
        arg = f"{arg}/{cidr}" if arg else f"/{cidr}"
    if name == "all":
        return True
    if name in ("ip4", "ip6"):
        try:
            return addr in ipaddress.ip_network(arg, strict=False)
        except ValueError as exc:
            raise SpfError(f"bad {name}:{arg}") from exc
    if name == "include":
        _spend(budget)
        return await check_host(dns, arg, str(addr), budget) == "pass"
    if name in ("a", "mx"):
        _spend(budget)
        target, _, cidr = arg.partition("/")
        hosts = [target or domain] if name == "a" else [
            h for _, h in await dns.mx(target or domain)]
        bits = int(cidr) if cidr.isdigit() else addr.max_prefixlen
        for host in hosts:
            for a in await dns.addresses(host):
                try:
                    if addr in ipaddress.ip_network(f"{a}/{bits}", strict=False):
                        return True
                except ValueError:
                    continue
        return False
    if name in ("exists", "ptr"):
        _spend(budget)
        return False  # not evaluated here: never counted as a pass
    raise SpfError(f"unknown mechanism {name!r}")
