"""The report's bulk-sender figures: body-link share, domains blind to complaints, pauses."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy import Policy
from proxy.policy.conditions import Context, ProviderGuard
from proxy.providers.catalog import Catalog
from proxy.providers.guard import Throttles
from proxy.providers.lookup import ProviderLookup
from proxy.types import PersonState

# MX lookups at report time are for the busiest domains only (the rest: known domains).
LOOKUP_LIMIT = 200
BLIND = "complaints not reported per message"


@dataclass(frozen=True)
class Pause:
    provider: str
    start: float
    until: float
    cause: str


async def blind_domains(domains: list[str], catalog: Catalog,
                        lookup: ProviderLookup | None) -> dict[str, str]:
    """Receiving domain -> provider label, for domains whose provider sends no per-message
    complaints (Gmail, Google Workspace by MX, iCloud): their 0 complaints mean nothing."""
    found = {d: catalog.by_domain(d) for d in domains}
    if lookup is not None:
        unknown = [d for d in domains if found[d] is None][:LOOKUP_LIMIT]
        found.update(await lookup.providers_of(unknown))
    return {d: p.label for d, p in found.items() if p is not None and not p.per_message_feedback}


def pauses(policy: Policy, throttles: Throttles, since: float, now: float) -> list[Pause]:
    """Each provider pause that overlapped the window, as the policy's provider_guard rule
    (the first marketing stream's) computes it from the recorded push-backs."""
    rule = next((r.condition for s in policy.streams.values() if s.marketing for r in s.rules
                 if isinstance(r.condition, ProviderGuard)), None)
    if rule is None:
        return []
    stream = next(s for s in policy.streams.values() if s.marketing)
    out: list[Pause] = []
    for provider, events in sorted(throttles.items()):
        seen: set[float] = set()
        for i in range(1, len(events) + 1):
            # The pause as it stood after the i-th push-back (each is a new state).
            state = PersonState(address=f"@{provider}", provider=provider,
                                provider_throttles=events[:i])
            at = events[i - 1][0]
            match = rule.check(Context(stream, state, at))
            if match is None or match.until is None or match.until in seen:
                continue
            seen.add(match.until)
            if match.until >= since and at <= now:
                out.append(Pause(provider, at, match.until, events[i - 1][1]))
    return out
