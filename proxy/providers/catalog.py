"""The mailbox providers heed knows: their domains, MX hosts, and what "slow down" looks like."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from proxy.settings import ProviderSettings


@dataclass(frozen=True)
class Signal:
    """A reply or DSN text that means "slow down or stop" (``cause`` is for people)."""

    pattern: re.Pattern[str]
    cause: str


@dataclass(frozen=True)
class Provider:
    name: str  # stable: Redis keys, reports, metrics
    label: str
    domains: frozenset[str] = frozenset()  # consumer domains (no MX lookup needed)
    mx: tuple[str, ...] = ()  # MX host suffixes (a business domain hosted by the provider)
    # Whether complaints arrive per message (an ARF feedback loop). Gmail has none: its
    # feedback loop is aggregate, by Feedback-ID, in Postmaster Tools; iCloud offers none.
    per_message_feedback: bool = True
    signals: tuple[Signal, ...] = ()

    def names_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return any(host == s or host.endswith("." + s) for s in self.mx)


_WORD = re.compile(r"[a-z0-9.-]+")
_HOST = re.compile(r"[a-z0-9][a-z0-9.-]*\.[a-z]{2,}")


def _signals(*pairs: tuple[str, str]) -> tuple[Signal, ...]:
    return tuple(Signal(re.compile(p, re.IGNORECASE), c) for p, c in pairs)


# Codes from the providers' postmaster pages, as they appear in real replies and DSNs
# (tests/test_providers.py reads them from the sisimai/set-of-emails corpus).
BUILTIN = (
    Provider(
        "google", "Google (Gmail, Workspace)",
        frozenset({"gmail.com", "googlemail.com"}), ("google.com", "googlemail.com"),
        per_message_feedback=False,
        signals=_signals(
            (r"\b4\.7\.28\b", "Gmail 4.7.28: unusual rate of mail, or a reputation problem"),
            (r"\b5\.7\.26\b", "Gmail 5.7.26: mail failed authentication (DKIM/SPF/DMARC)"),
            (r"\b4\.7\.0\b.{0,120}unusual\s+rate",
             "Gmail 4.7.0: unusual rate of unsolicited mail"),
        )),
    Provider(
        "yahoo", "Yahoo and AOL",
        frozenset({"yahoo.com", "ymail.com", "rocketmail.com", "aol.com", "aim.com",
                   "yahoo.co.uk", "yahoo.fr", "yahoo.de", "yahoo.co.jp", "yahoo.com.br",
                   "yahoo.ca", "yahoo.es", "yahoo.it", "yahoo.in", "verizon.net"}),
        ("yahoodns.net", "aol.com"),
        signals=_signals(
            (r"\[TS(?:S)?0\d\]", "Yahoo TSS04/TS0x: deferred for volume or complaints"),
        )),
    Provider(
        "microsoft", "Microsoft (Outlook.com, Hotmail, Microsoft 365)",
        frozenset({"outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk",
                   "hotmail.fr", "hotmail.de", "live.co.uk", "outlook.de", "outlook.fr"}),
        ("outlook.com", "hotmail.com"),
        signals=_signals(
            (r"\bS843\b", "Outlook.com S843: sender IP or domain blocked for reputation"),
            (r"\b5\.7\.515\b", "Outlook.com 5.7.515: sender fails the authentication level "
                               "required of bulk senders"),
        )),
    Provider(
        "apple", "Apple iCloud",
        frozenset({"icloud.com", "me.com", "mac.com"}), ("icloud.com", "apple.com"),
        per_message_feedback=False),
)


class Catalog:
    """The built-in providers and the configured ones (configured names replace built-ins)."""

    def __init__(self, extra: Iterable[ProviderSettings] = ()) -> None:
        found = {p.name: p for p in BUILTIN}
        for cfg in extra:
            found[cfg.name] = Provider(
                cfg.name, cfg.label or cfg.name, frozenset(cfg.domains), tuple(cfg.mx),
                cfg.per_message_feedback,
                _signals(*((p, f"{cfg.label or cfg.name}: {p}") for p in cfg.signals)))
        self.providers = found
        self._by_domain = {d: p for p in found.values() for d in p.domains}

    def by_domain(self, domain: str) -> Provider | None:
        return self._by_domain.get(domain.lower().rstrip("."))

    def by_host(self, host: str) -> Provider | None:
        return next((p for p in self.providers.values() if p.names_host(host)), None)

    def in_text(self, text: str) -> Provider | None:
        """A provider named by a host in the text ("mta6.am0.yahoodns.net said: …")."""
        # Word by word (linear): one regex over the whole text rescanned a long run from
        # each of its characters, and a DSN's text is anyone's to write.
        for word in _WORD.findall(text.lower()):
            if len(word) > 253:  # RFC 1035 §2.3.4: longer is no host name
                continue
            for host in _HOST.findall(word):
                found = self.by_host(host)
                if found is not None:
                    return found
        return None

    def signal(self, text: str, hint: Provider | None = None) -> tuple[Provider, str] | None:
        """(provider, cause) when ``text`` is a provider's "slow down": the hinted provider's
        own codes first, then any provider whose code it is and whose host it names."""
        candidates = [hint] if hint is not None else []
        candidates += [p for p in self.providers.values() if p is not hint]
        for provider in candidates:
            for sig in provider.signals:
                if sig.pattern.search(text) and (provider is hint or hint is None):
                    return provider, sig.cause
        return None
