"""Run every doctor check for the sending domains, and say the result as text or JSON."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import ssl
from collections.abc import Awaitable

from proxy.bulk.signing import sending_domains
from proxy.clock import SystemClock
from proxy.dkim import DkimSigner, key_domain
from proxy.doctor import checks
from proxy.doctor.checks import Finding
from proxy.doctor.dnsq import Dns, DnsTrouble
from proxy.http.unsubscribe import DRY_RUN_ADDRESS
from proxy.policy import Policy
from proxy.providers.lookup import make_resolver
from proxy.settings import Settings
from proxy.tokens import TokenSigner

DNS_FIX = "check dns.nameservers and that the zone's servers answer"


def domains_of(settings: Settings, policy: Policy) -> list[str]:
    """Every sending domain the policy and config name, in order, once."""
    found = [d for ds in sending_domains(policy).values() for d in ds]
    return list(dict.fromkeys([*found, *settings.doctor.domains]))


async def _guarded(name: str, subject: str, work: Awaitable[list[Finding]]) -> list[Finding]:
    try:
        return await work
    except DnsTrouble as exc:
        return [Finding(name, subject, False, f"DNS did not answer ({exc})", DNS_FIX)]


async def _one(item: Awaitable[Finding]) -> list[Finding]:
    return [await item]


async def _found(findings: list[Finding]) -> list[Finding]:
    return findings


async def _egress(dns: Dns, egress: tuple[str, ...]) -> tuple[list[str], list[Finding]]:
    """The egress as IPs (host names resolved), and a finding per name DNS did not answer
    for (the doctor runs when things fail: a silent nameserver is reported, not raised)."""
    out: list[str] = []
    trouble: list[Finding] = []
    for e in egress:
        try:
            ipaddress.ip_address(e)
            out.append(e)
        except ValueError:
            try:
                out += await dns.addresses(e)
            except DnsTrouble as exc:
                trouble.append(Finding("ptr", e, False, f"DNS did not answer ({exc})", DNS_FIX))
    return out, trouble


async def diagnose(settings: Settings, policy: Policy, tokens: TokenSigner, *,
                   only: str | None = None, context: ssl.SSLContext | None = None,
                   signer: DkimSigner | None = None) -> list[Finding]:
    """Every check; ``only`` keeps one sending domain (the shared ones still run)."""
    dns = Dns(make_resolver(settings.dns))
    signer = signer or DkimSigner(settings.dkim, SystemClock())
    domains = [only.lower()] if only else domains_of(settings, policy)
    keyed = {k.domain for k in settings.dkim}
    egress, unresolved = await _egress(dns, settings.doctor.egress)
    work: list[Awaitable[list[Finding]]] = [_found(unresolved)]
    for d in domains:
        work += [
            _guarded("dkim", d, checks.dkim_keys(dns, signer, d)),
            _guarded("dmarc", d, _one(checks.dmarc(dns, d, key_domain(keyed, d)))),
            _guarded("spf", d, _one(checks.spf(dns, d, egress))),
            _guarded("mx", d, _one(checks.mx(dns, d))),
        ]
    for d in settings.doctor.reply_to:
        if d not in domains and (only is None or d == only.lower()):
            work.append(_guarded("mx", d, _one(checks.mx(dns, d))))
    bounce = settings.bounces.domain or settings.unsubscribe.mailto_domain
    if settings.bounces.verp and bounce not in domains:
        # VERP: the envelope sender is bounce+TOKEN@ this domain, so SPF is checked on it.
        work.append(_guarded("spf", bounce, _one(checks.spf(dns, bounce, egress))))
    work.append(_guarded("bounce", bounce, _one(checks.bounce_route(dns, settings))))
    work += [_guarded("ptr", ip, _one(checks.ptr(dns, ip))) for ip in egress]
    if not settings.doctor.egress:
        work.append(_one(_no_egress()))
    token = tokens.make(DRY_RUN_ADDRESS, "heed-doctor")
    work.append(_one(checks.unsubscribe(f"{settings.http.public_url}/u/{token}",
                                        context=context)))
    results = await asyncio.gather(*work)
    return [f for group in results for f in group]


async def _no_egress() -> Finding:
    return Finding("ptr", "(egress)", False, "no egress configured: PTR not checked",
                   "set doctor.egress to the IPs or host names your upstream MTA sends from")


def render_text(findings: list[Finding]) -> str:
    bad = [f for f in findings if not f.ok]
    lines = [f"{'ok  ' if f.ok else 'FAIL'} {f.check:<11} {f.subject}: {f.said}"
             + ("" if f.ok else f"\n     fix: {f.fix}") for f in findings]
    lines.append("")
    lines.append(f"{len(findings) - len(bad)} passed, {len(bad)} failed" if bad
                 else f"all {len(findings)} checks passed")
    return "\n".join(lines) + "\n"


def render_json(findings: list[Finding]) -> str:
    return json.dumps({"ok": all(f.ok for f in findings),
                       "checks": [f.__dict__ for f in findings]}, indent=2) + "\n"
