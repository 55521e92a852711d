"""The ``dns``, ``doctor`` and ``providers`` sections: mailbox providers and their rules."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.settings.values import Reader, lower_texts, nameserver, parse_duration, texts


@dataclass(frozen=True)
class DnsSettings:
    """The resolver heed asks (MX of receiving domains, `heed doctor`)."""

    nameservers: tuple[str, ...] = ()  # "IP" or "IP:PORT"; empty: /etc/resolv.conf
    timeout: float = 3.0
    mx_cache: float = 3600.0  # how long a domain's mailbox provider (from its MX) is kept


@dataclass(frozen=True)
class DoctorSettings:
    """What `heed doctor` checks the DNS against (docs/bulk-senders.md)."""

    egress: tuple[str, ...] = ()  # the upstream's outbound IPs or host names (SPF, PTR)
    domains: tuple[str, ...] = ()  # sending domains beyond the policy's
    reply_to: tuple[str, ...] = ()  # Reply-To domains: replies must reach a mailbox (MX)


@dataclass(frozen=True)
class ProviderSettings:
    """A mailbox provider beyond the built-in ones (proxy/providers/catalog.py)."""

    name: str
    label: str = ""
    domains: tuple[str, ...] = ()
    mx: tuple[str, ...] = ()  # MX host suffixes
    per_message_feedback: bool = True
    signals: tuple[str, ...] = ()  # regular expressions of its "slow down" replies


def dns(r: Reader) -> DnsSettings:
    return r.take(DnsSettings, "dns", {
        "nameservers": lambda v: tuple(nameserver(str(n)) for n in (v or [])),
        "timeout": parse_duration, "mx_cache": parse_duration})


def doctor(r: Reader) -> DoctorSettings:
    return r.take(DoctorSettings, "doctor", {
        "egress": texts, "domains": lower_texts, "reply_to": lower_texts})


def providers(r: Reader) -> tuple[ProviderSettings, ...]:
    out: list[ProviderSettings] = []
    for i, entry in enumerate(r.raw.get("providers") or []):
        try:
            out.append(ProviderSettings(
                name=str(entry["name"]), label=str(entry.get("label", "")),
                domains=lower_texts(entry.get("domains")),
                mx=lower_texts(entry.get("mx")),
                per_message_feedback=bool(entry.get("per_message_feedback", True)),
                signals=texts(entry.get("signals"))))
        except (KeyError, TypeError, AttributeError) as exc:
            r.error(f"'providers[{i}]' needs a name ({exc})")
    return tuple(out)
