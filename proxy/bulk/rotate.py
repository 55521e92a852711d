"""`heed dkim rotate`: a new selector beside the old one, then the old one retired after a grace."""

from __future__ import annotations

import time
from pathlib import Path

from proxy.dkim import generate_key, key_domain
from proxy.errors import ConfigError
from proxy.settings import Settings

# Receivers verify mail days after it was sent (queued retries: RFC 5321 §4.5.4.1 allows
# 4-5 days; heed's own queue holds up to queue.max_hold), so the old key stays in DNS.
DEFAULT_GRACE = 7 * 86400.0


def rotate(settings: Settings, domain: str, selector: str, directory: Path, *,
           algorithm: str = "rsa", bits: int = 2048, grace: float = DEFAULT_GRACE,
           now: float | None = None) -> str:
    """Write the new key and return the steps (with the DNS records) for the operator."""
    domain = domain.lower().rstrip(".")
    signing = key_domain({k.domain for k in settings.dkim}, domain)
    old = [k for k in settings.dkim if k.domain == signing]
    if any(k.selector == selector for k in old):
        raise ConfigError([f"dkim rotate: selector {selector!r} is already in use for {domain}"])
    path, record = generate_key(domain, selector, directory, bits=bits, algorithm=algorithm)
    retire = time.strftime("%Y-%m-%d", time.gmtime((now or time.time()) + grace))
    alg = "ed25519-sha256" if algorithm == "ed25519" else "rsa-sha256"
    lines = [
        f"new private key written to {path}",
        "",
        "1. Publish the new selector's DNS TXT record (keep the old one published):",
        f"   {record}",
        f"   and check it: dig +short TXT {selector}._domainkey.{domain}",
        "2. Once it answers (after the TTL of any earlier negative answer), put the new key in",
        "   config/heed.yaml `dkim:` in place of the old one and restart or reload heed:",
        f"   - {{domain: {domain}, selector: {selector}, key_file: {path}, algorithm: {alg}}}",
    ]
    if old:
        names = ", ".join(f"{k.selector}._domainkey.{k.domain}" for k in old)
        lines += [
            f"3. Keep the old record(s) {names} published for the grace period: mail signed",
            "   with the old key is still being delivered and verified (retries, heed's queue).",
            f"4. After {retire}, retire the old key: publish its TXT record with an empty p=",
            "   (\"v=DKIM1; p=\", RFC 6376 §3.6.1: the key is revoked) or delete it, and delete",
            "   the old private key file.",
        ]
    else:
        lines.append(f"3. No key signed {domain} before: nothing to retire.")
    return "\n".join(lines) + "\n"
