"""Each check of `heed doctor`: what it found, in plain words, and the fix when it failed."""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass

import aiohttp
import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import parse_tag_value

from proxy.dkim import DkimSigner, SigningKey, key_domain
from proxy.doctor.dnsq import Dns, DnsTrouble
from proxy.doctor.spf import SpfError, check_host
from proxy.settings import Settings


@dataclass(frozen=True)
class Finding:
    check: str  # dkim | dmarc | spf | ptr | mx | unsubscribe | bounce
    subject: str  # the domain, IP or URL checked
    ok: bool
    said: str  # what was found, in plain words
    fix: str = ""  # what to do about it (failures)


def _tags(text: str) -> dict[str, str]:
    try:
        raw = parse_tag_value(text.encode())
    except Exception:  # noqa: BLE001 - dkimpy raises its own InvalidTagValueList
        return {}
    return {k.decode().lower(): v.decode() for k, v in raw.items()}


def _public(key: SigningKey) -> str:
    """p= for the key, as `heed dkim keygen` publishes it (RFC 6376 §3.6.1, RFC 8463 §4.2)."""
    pub = key.key.public_key()
    if isinstance(key.key, rsa.RSAPrivateKey):
        raw = pub.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


async def dkim_keys(dns: Dns, signer: DkimSigner, domain: str) -> list[Finding]:
    """The key that signs ``domain`` is in DNS, and a test message signs and verifies."""
    keys = signer.for_domain(domain)
    if not keys:
        return [Finding("dkim", domain, False, f"no DKIM key in `dkim:` signs {domain}",
                        f"run `heed dkim keygen {domain} SELECTOR`, publish the TXT record it "
                        "prints, and add its `dkim:` entry to config/heed.yaml")]
    out: list[Finding] = []
    zone: dict[str, str] = {}
    message = (f"From: heed doctor <doctor@{domain}>\r\nTo: check@{domain}\r\n"
               "Subject: heed doctor\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
               "DKIM check.\r\n").encode()
    data = signer.sign_message(message)  # one signature per key, in for_domain's order

    def dnsfunc(qname: bytes, timeout: int = 5) -> bytes | None:
        text = zone.get(qname.decode().rstrip(".").lower())
        return text.encode() if text else None

    for idx, key in enumerate(keys):
        name = f"{key.selector}._domainkey.{key.domain}"
        published = [t for t in await dns.txt(name) if "p=" in t]
        if not published:
            out.append(Finding("dkim", domain, False, f"no DKIM key record at {name}",
                               f"publish the TXT record `heed dkim keygen` printed for "
                               f"selector {key.selector} at {name}"))
            continue
        p = "".join(_tags(published[0]).get("p", "").split())
        if p != _public(key):
            out.append(Finding("dkim", domain, False,
                               f"the key published at {name} is not the configured key",
                               f"publish this key's record at {name} (the one there may belong "
                               "to a retired key), or configure the key that matches it"))
            continue
        zone[name.lower()] = published[0]
        try:
            ok = bool(dkim.DKIM(data).verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DKIMException:
            ok = False
        out.append(Finding("dkim", domain, ok,
                           f"{name} publishes the configured {key.algorithm} key; a test "
                           f"message signed d={key.domain} {'verifies' if ok else 'FAILS'}",
                           "" if ok else "regenerate the record from the key file"))
    return out


async def dmarc(dns: Dns, domain: str, signing: str | None) -> Finding:
    """A DMARC record for the From domain (or its organisational domain); DKIM aligned."""
    labels = domain.split(".")
    found, where = None, ""
    for i in range(len(labels) - 1):  # RFC 7489 §6.6.3: the domain, then the organisation's
        name = "_dmarc." + ".".join(labels[i:])
        records = [t for t in await dns.txt(name) if t.lower().startswith("v=dmarc1")]
        if records:
            found, where = _tags(records[0]), name
            break
    if found is None:
        return Finding("dmarc", domain, False, f"no DMARC record for {domain}",
                       f"publish `_dmarc.{domain}. IN TXT \"v=DMARC1; p=none; "
                       f"rua=mailto:dmarc@{domain}\"` (Gmail and Yahoo require one), then move "
                       "to p=quarantine or p=reject once reports are clean")
    policy = found.get("p", "")
    if policy not in ("none", "quarantine", "reject"):
        return Finding("dmarc", domain, False, f"{where} has no valid p= ({policy or 'none'})",
                       "set p=none, p=quarantine or p=reject")
    mode = found.get("adkim", "r")
    if signing is None:
        aligned, why = False, "nothing signs it"
    elif mode == "s":
        aligned, why = signing == domain, f"adkim=s needs d={domain}, heed signs d={signing}"
    else:
        aligned = signing == domain or domain.endswith("." + signing) or \
            signing.endswith("." + domain)
        why = f"d={signing} is not in {domain}'s organisational domain"
    said = f"{where}: p={policy}, DKIM alignment {'strict' if mode == 's' else 'relaxed'}"
    if not aligned:
        return Finding("dmarc", domain, False, f"{said}; From {domain} is not aligned: {why}",
                       f"sign with a key for {domain} (or, with adkim=r, its parent)")
    return Finding("dmarc", domain, True, f"{said}; From {domain} aligned with d={signing}")


async def spf(dns: Dns, domain: str, egress: list[str]) -> Finding:
    if not egress:
        return Finding("spf", domain, False, "no egress IP to check SPF against "
                                             "(doctor.egress empty, or its names unresolved)",
                       "set doctor.egress to the IPs or host names your upstream MTA sends from")
    try:
        results = {ip: await check_host(dns, domain, ip) for ip in egress}
    except SpfError as exc:
        return Finding("spf", domain, False, f"the SPF record of {domain} is broken: {exc}",
                       "fix the record (one v=spf1 TXT, at most 10 DNS-querying terms)")
    bad = {ip: r for ip, r in results.items() if r != "pass"}
    if not bad:
        return Finding("spf", domain, True, f"SPF of {domain} passes {', '.join(egress)}")
    if all(r == "none" for r in bad.values()):
        return Finding("spf", domain, False, f"{domain} has no SPF record",
                       f"publish `{domain}. IN TXT \"v=spf1 ip4:{egress[0]} -all\"` (or "
                       "include your sending service's record)")
    what = ", ".join(f"{ip}: {r}" for ip, r in bad.items())
    return Finding("spf", domain, False, f"SPF of {domain} does not pass the egress ({what})",
                   f"add the egress to {domain}'s SPF record, e.g. ip4:{next(iter(bad))}")


async def ptr(dns: Dns, ip: str) -> Finding:
    names = await dns.ptr(ip)
    if not names:
        return Finding("ptr", ip, False, f"{ip} has no PTR record",
                       f"ask whoever runs {ip}'s network for a PTR to your MTA's host name")
    for name in names:
        if ip in await dns.addresses(name):
            return Finding("ptr", ip, True, f"{ip} -> {name} -> {ip}")
    return Finding("ptr", ip, False, f"{ip} -> {', '.join(names)}, which does not resolve "
                                     f"back to {ip}",
                   f"give {names[0]} an A/AAAA record {ip}, or the PTR a name that has one")


async def mx(dns: Dns, domain: str) -> Finding:
    records = await dns.mx(domain)
    if not records:
        return Finding("mx", domain, False, f"{domain} has no MX record: replies and "
                                            "bounces to it go nowhere",
                       f"publish `{domain}. IN MX 10 your-mail-host.`")
    if records == [(0, "")] or records == [(0, ".")]:
        return Finding("mx", domain, False, f"{domain} has a null MX (RFC 7505): it "
                                            "receives no mail", "publish a real MX")
    return Finding("mx", domain, True, f"MX {', '.join(h for _, h in records)}")


async def bounce_route(dns: Dns, settings: Settings) -> Finding:
    """Mail to the bounce/VERP domain reaches heed: an MX that is heed's host."""
    domain = settings.bounces.domain or settings.unsubscribe.mailto_domain
    records = await dns.mx(domain)
    ours = settings.smtp.hostname.lower().rstrip(".")
    fix = (f"publish `{domain}. IN MX 10 {ours}.` (heed's smtp.hostname) so DSNs and "
           "complaints to bounce+TOKEN@ reach heed")
    if not records:
        return Finding("bounce", domain, False, f"{domain} has no MX: DSNs to "
                                                f"bounce+TOKEN@{domain} go nowhere", fix)
    hosts = [h for _, h in records]
    if ours in hosts:
        return Finding("bounce", domain, True, f"MX of {domain} is heed ({ours})")
    mine = set(await dns.addresses(ours))
    for host in hosts:
        if mine & set(await dns.addresses(host)):
            return Finding("bounce", domain, True, f"MX {host} of {domain} is heed's address")
    return Finding("bounce", domain, False,
                   f"MX of {domain} ({', '.join(hosts)}) is not heed ({ours})", fix)


async def unsubscribe(url: str, *, context: ssl.SSLContext | None = None) -> Finding:
    """RFC 8058 §3.2: a POST with List-Unsubscribe=One-Click over HTTPS, answered 2xx."""
    if not url.lower().startswith("https://"):
        return Finding("unsubscribe", url, False, "the one-click URL is not HTTPS; mailbox "
                                                  "providers only offer one-click for https",
                       "set http.public_url to the https:// address of your reverse proxy")
    shown = url.rsplit("/u/", 1)[0] + "/u/…"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            async with session.post(
                    url, data=b"List-Unsubscribe=One-Click", allow_redirects=False,
                    ssl=context if context is not None else True,
                    headers={"Content-Type": "application/x-www-form-urlencoded"}) as r:
                status = r.status
    except aiohttp.ClientConnectorCertificateError as exc:
        return Finding("unsubscribe", shown, False, f"the certificate is not valid: "
                                                    f"{exc.certificate_error}",
                       "serve a certificate from a public CA for that host name")
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Finding("unsubscribe", shown, False, f"no answer: {type(exc).__name__} {exc}",
                       "make http.public_url reachable from the internet (heed's http.listen "
                       "behind your TLS reverse proxy)")
    if 300 <= status < 400:
        return Finding("unsubscribe", shown, False, f"the POST is redirected ({status})",
                       "serve /u/ without a redirect: providers do not follow one")
    if status != 200:
        return Finding("unsubscribe", shown, False, f"the POST is answered {status}",
                       "route POST /u/TOKEN to heed's HTTP side unchanged")
    return Finding("unsubscribe", shown, True,
                   "a one-click POST over HTTPS with a valid certificate is answered 200 "
                   "(a dry-run token: nothing recorded)")


__all__ = ["DnsTrouble", "Finding", "bounce_route", "dkim_keys", "dmarc", "key_domain", "mx",
           "ptr", "spf", "unsubscribe"]
