"""DKIM is required for marketing: each stream's From domains, and those without a key."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from proxy.dkim import key_domain
from proxy.policy import Policy
from proxy.settings import Settings

# A classify rule `sender: "*@news.example.com"` names the domain its stream sends from.
_SENDER_DOMAIN = re.compile(r"\*@([a-z0-9.-]+\.[a-z0-9-]+)\Z")


def sending_domains(policy: Policy) -> dict[str, tuple[str, ...]]:
    """Stream name -> the From domains the policy says it sends from (may be empty)."""
    out: dict[str, list[str]] = {n: list(s.bulk.from_domains) for n, s in policy.streams.items()}
    for rule in policy.classification:
        if rule.stream is None or rule.stream not in out:
            continue
        for glob in rule.senders:
            m = _SENDER_DOMAIN.match(glob)
            if m and m.group(1) not in out[rule.stream]:
                out[rule.stream].append(m.group(1))
    return {n: tuple(d) for n, d in out.items()}


@dataclass(frozen=True)
class SigningProblem:
    stream: str
    domain: str | None  # None: the policy names no From domain for the stream
    error: bool  # an error fails `heed check`; otherwise a warning

    def __str__(self) -> str:
        if self.domain is None:
            return (f"stream {self.stream!r} is marketing but the policy names no From domain "
                    "for it (add `from_domains:` or a `sender: \"*@domain\"` classify rule); "
                    "a copy without a DKIM key is still held at run time")
        return (f"stream {self.stream!r} sends From {self.domain} but no DKIM key in `dkim:` "
                f"signs {self.domain} or a parent domain: make one with `heed dkim keygen "
                f"{self.domain} SELECTOR`, publish the TXT record and add it to `dkim:` (or set "
                "`unsigned: allow` on the stream to send such mail unsigned)")


def signing_problems(policy: Policy, keyed: Collection[str]) -> list[SigningProblem]:
    """Each marketing stream's From domain that no configured key signs."""
    keyed = {d.lower() for d in keyed}
    out: list[SigningProblem] = []
    for name, domains in sending_domains(policy).items():
        stream = policy.streams[name]
        if not stream.marketing:
            continue
        if not domains:
            out.append(SigningProblem(name, None, error=False))
        for domain in domains:
            if key_domain(keyed, domain) is None:
                out.append(SigningProblem(name, domain, error=stream.bulk.unsigned != "allow"))
    return out


@dataclass(frozen=True)
class Problems:
    errors: list[str]
    warnings: list[str]


def bulk_problems(settings: Settings, policy: Policy) -> Problems:
    """What `heed check` says about signing: every key loads, every marketing domain has one."""
    from proxy.dkim import DkimSigner

    DkimSigner(settings.dkim)  # ConfigError names each key file that does not load
    found = signing_problems(policy, [k.domain for k in settings.dkim])
    return Problems([str(p) for p in found if p.error], [str(p) for p in found if not p.error])
