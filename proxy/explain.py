"""`heed explain`: what heed holds about a person and why they did or didn't get mail."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from proxy.audit import Audit
from proxy.state import State
from proxy.types import Decision, PersonState


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "never"


OUTCOME_WORDS = {
    "reject": "refused at RCPT (550 5.7.1)",
    "discarded": "dropped (accepted, not sent)",
    "delivered": "delivered",
    "released": "delivered from the delay queue",
    "queued": "held in the delay queue",
    "dropped-at-release": "dropped when it was due (a no came meanwhile)",
    "refused-upstream": "refused by the upstream MTA",
    "expired": "given up after the maximum hold",
    "failed": "refused by the upstream when released",
}


async def explain(state: State, audit: Audit, address: str, *, now: float,
                  decide: Callable[[str, PersonState], Decision] | None = None,
                  streams: Sequence[str] = ()) -> str:
    """Plain words: consent, refusals, engagement, preferences, recent decisions."""
    snap = await state.snapshot(address)
    recent = await audit.recent(address, 20)
    lines = [f"{snap.address}"]
    if not (snap.consents or snap.refusals or recent or snap.last_engaged or snap.first_send):
        lines.append("  heed holds nothing about this address: no consent, so no marketing mail.")
    lines.append("consent:")
    for c in snap.consents.values():
        lines.append(f"  list {c.list}: granted {_when(c.granted_at)} via {c.source or '-'}"
                     f" from {c.ip or '-'} (wording: {c.text or '-'})")
    if not snap.consents:
        lines.append("  none on record")
    lines.append("refusals (how and when this person said no):")
    for r in snap.refusals.values():
        scope = "every list" if r.scope == "*" else f"list {r.scope}"
        lines.append(f"  {r.kind} of {scope} on {_when(r.at)} via {r.channel or '-'}")
    if not snap.refusals:
        lines.append("  none")
    lines.append(f"engagement: last {_when(snap.last_engaged)}; "
                 f"{snap.sends_since_engagement} mails since; first mail {_when(snap.first_send)}")
    p = snap.prefs
    lines.append(f"preferences: paused until {_when(p.paused_until)}; zone {p.timezone or '-'};"
                 f" off: {', '.join(sorted(p.off)) or '-'}; frequency {p.frequency or 'as sent'}")
    if decide is not None:
        lines.append("if a message came now:")
        for stream in streams:
            d = decide(stream, snap)
            why = "; ".join(f"{r.code}: {r.detail}" for r in d.reasons) or "no rule objects"
            lines.append(f"  {stream}: would {d.action.value} ({why})")
    lines.append("recent decisions and changes (newest first):")
    for e in recent:
        words = OUTCOME_WORDS.get(e.outcome, e.outcome)
        why = "; ".join(e.reasons) or e.detail
        stream = f" {e.stream}" if e.stream else ""
        lines.append(f"  {_when(e.at)}{stream}  {words}" + (f": {why}" if why else ""))
    if not recent:
        lines.append("  none")
    return "\n".join(lines)
