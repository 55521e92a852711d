"""`heed explain`: what heed holds about a person and why they did or didn't get mail."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from proxy.audit import Audit, AuditEntry
from proxy.queue import HeldMail
from proxy.state import State
from proxy.types import GLOBAL_SCOPE, Decision, PersonState

# The outcomes the mail path and the state module record, in words for people.
OUTCOME_WORDS = {
    "deliver": "delivered",
    "delivered": "delivered",
    "sending": "handed to the upstream (its outcome follows, if heed lived to hear it)",
    "drop": "dropped",
    "reject": "dropped (rejected at RCPT)",
    "rejected": "dropped (rejected at RCPT)",
    "discard": "dropped (accepted, not sent)",
    "discarded": "dropped (accepted, not sent)",
    "delay": "delayed",
    "queued": "delayed (held in the delay queue)",
    "released": "delivered from the delay queue",
    "dropped-at-release": "dropped when due (a no came while it was held)",
    "refused-upstream": "refused by the upstream mail server",
    "tempfail-upstream": "not taken by the upstream mail server this time (4xx or no answer)",
    "failed": "refused by the upstream mail server when released",
    "expired": "given up after the maximum hold",
    "granted": "consent granted",
    "revoked": "consent revoked",
    "refused": "refused mail (said no)",
    "unrefused": "refusal lifted by hand",
    "lifted": "refusal lifted by hand",
    "re-subscribed": "subscribed again (an unsubscribe lifted)",
    "tool-told": "the tool was told",
    "tool-not-told": "the tool was not told",
    "engaged": "engaged",  # "click via tracked link", "machine-click via … (why)", …
    "preferences": "changed preferences",
    # Events in (proxy/signals/events.py): what was reported, then what it did.
    "soft-bounce": "soft bounce counted",
    "open": "open reported",
    "click": "click reported",
    "reply": "reply reported",
    "preference-visit": "preference centre visited",
    "bounce": "bounce reported",
    "complaint": "complaint reported",
    "unsubscribe": "unsubscribe reported",
    "grant": "consent reported",
    "revoke": "withdrawal reported",
}

Decide = Callable[[str, PersonState], Decision]
Sources = Callable[[Any], list[str]]  # a stream -> where its answers can come from


def when(ts: float | None) -> str:
    """A time as people read it, in UTC."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "never"


def _ago(ts: float, now: float) -> str:
    days = (now - ts) / 86400
    return "today" if abs(days) < 1 else f"{days:.0f} days ago" if days > 0 else "in the future"


def _reason(text: str) -> str:
    # Reasons are stored as "code: detail"; the detail alone is the plain-words part.
    code, sep, detail = text.partition(": ")
    return detail if sep and code and " " not in code else text


def _scope(scope: str) -> str:
    return "every marketing list" if scope == GLOBAL_SCOPE else f"list '{scope}'"


def _holds_nothing(snap: PersonState, recent: Sequence[AuditEntry]) -> bool:
    return not (snap.consents or snap.refusals or recent or snap.last_engaged
                or snap.first_send or snap.sends)


def _refused_at(e: AuditEntry) -> float | None:
    for r in e.reasons:  # proxy/tell/worker.py writes "refused_at=<time>"
        if r.startswith("refused_at="):
            try:
                return float(r.partition("=")[2])
            except ValueError:
                return None
    return None


def _told(recent: Sequence[AuditEntry], scope: str) -> str:
    """Whether and when the tool heard of the refusal of ``scope`` (newest word first)."""
    for e in recent:
        if e.outcome in ("tool-told", "tool-not-told") and (
                e.stream == scope or scope == GLOBAL_SCOPE):
            return f"    {OUTCOME_WORDS[e.outcome]} {when(e.at)}: {e.detail}"
    return "    the tool: not told yet (no word in the recent trail)"


def _facts(snap: PersonState, now: float, recent: Sequence[AuditEntry] = ()) -> list[str]:
    lines = ["consent (who agreed to what, when and how):"]
    for c in sorted(snap.consents.values(), key=lambda c: c.list):
        lines.append(f"  list '{c.list}': granted {when(c.granted_at)}, source {c.source or '-'},"
                     f" from IP {c.ip or '-'}, wording {c.text or '-'}")
    if not snap.consents:
        lines.append("  no consent on record: no marketing list may mail this address")
    lines.append("refusals (when and how this person said no):")
    for r in sorted(snap.refusals.values(), key=lambda r: r.at):
        lines.append(f"  {r.kind} of {_scope(r.scope)} on {when(r.at)}"
                     f" via {r.channel or '-'}")
        lines.append(_told(recent, r.scope))
    if not snap.refusals:
        lines.append("  none")
    if snap.last_engaged:
        engaged = f"last engaged {when(snap.last_engaged)} ({_ago(snap.last_engaged, now)})"
    else:
        engaged = "never engaged"
    lines.append(f"engagement: {engaged}; {snap.sends_since_engagement} mail(s) since;"
                 f" first mail {when(snap.first_send)}")
    if snap.engagement:
        kinds = ", ".join(f"{e.kind} {when(e.at)} ({e.sends_since} mail(s) since)"
                          for e in sorted(snap.engagement.values(), key=lambda e: -e.at))
        lines.append(f"  by kind (latest of each): {kinds}")
    sent = ", ".join(f"{s} {sum(1 for t in ts if t > now - 31 * 86400)}"
                     for s, ts in sorted(snap.sends.items()))
    lines.append(f"mails in the last 31 days: {sent or 'none'}")
    p = snap.prefs
    paused = (f"paused until {when(p.paused_until)}" if p.paused_until and p.paused_until > now
              else "not paused")
    lines.append(f"preferences: {paused}; time zone {p.timezone or '-'};"
                 f" switched off: {', '.join(sorted(p.off)) or 'nothing'};"
                 f" frequency {p.frequency or 'as sent'}")
    return lines


def _lifecycle(policy: Any, snap: PersonState, now: float,
               sources: Sources | None = None) -> list[str]:
    """Each marketing stream's stage for this person, and why: the facts and the thresholds."""
    from proxy.policy.lifecycle import repermission_due  # only when a policy is given

    lines = ["lifecycle (silence counts only the engagement kinds each stream names):"]
    for stream in policy.streams.values():
        if not stream.marketing:
            continue
        silence = stream.silence
        heard = sources(stream) if sources is not None else None
        if heard is not None and not heard and (silence.lapsing or silence.inactive):
            # Silence heed cannot break is heed's deafness, not the person's answer.
            lines.append(f"  {stream.name}: no engagement source is configured for this "
                         f"stream, so its silence says nothing about this person "
                         f"(the rules still count {silence.assess(snap, now).describe()})")
            lines.append(f"    thresholds: {silence.describe()}")
            continue
        lines.append(f"  {stream.name}: {silence.assess(snap, now).describe()}")
        if heard:
            lines.append(f"    heard through: {', '.join(heard)}")
        lines.append(f"    thresholds: {silence.describe()}")
        if not any(getattr(r.condition, "repermission", False) for r in stream.rules):
            continue
        asked = snap.repermission.get(stream.name)
        if repermission_due(silence, stream.name, snap, now):
            lines.append("    re-permission: due; the next message asks whether they still "
                         "want this mail")
        elif asked is not None:
            lines.append(f"    re-permission: asked {when(asked)}")
    return lines


def _provider(provider: Any) -> str:
    """The person's mailbox provider, and whether a complaint of theirs could reach heed."""
    if provider.per_message_feedback:
        return f"mailbox provider: {provider.label}; complaints reported per message"
    return (f"mailbox provider: {provider.label}; complaints not reported per message: a "
            "complaint from this person never reaches heed (Google's feedback loop is "
            "aggregate, by Feedback-ID, in Postmaster Tools), so none on record means nothing")


def _would(stream: str, decision: Decision) -> str:
    why = ("; ".join(r.detail or r.code for r in decision.reasons)
           or "no rule objects (the stream's default)")
    until = f" until {when(decision.until)}" if decision.until else ""
    shadow = " (shadow mode: recorded, not enforced)" if decision.shadow else ""
    return f"  {stream}: would be: {decision.action.value}{until} because {why}{shadow}"


def _entry(e: AuditEntry) -> str:
    words = OUTCOME_WORDS.get(e.outcome, e.outcome)
    refused_at = _refused_at(e)
    if refused_at is not None:
        why = f"{e.detail} ({e.at - refused_at:.0f} s after the refusal)"
    else:
        why = "; ".join(_reason(r) for r in e.reasons) or e.detail
    stream = "every list" if e.stream == GLOBAL_SCOPE else e.stream or "-"
    return f"  {when(e.at)}  {stream}  {words}" + (f": {why}" if why else "")


def _held(held: Sequence[HeldMail]) -> list[str]:
    lines = ["waiting in the delay queue (each copy is checked again when due):"]
    for item in held:
        why = "; ".join(_reason(r) for r in item.reasons) or "-"
        lines.append(f"  {item.stream} from {item.sender or '<>'}: due {when(item.due)}"
                     f" (held since {when(item.first_queued)}): {why}")
    return lines


async def explain(state: State, audit: Audit, address: str, *, now: float,
                  policy: Any = None, decide: Decide | None = None,
                  streams: Sequence[str] = (), count: int = 20, provider: Any = None,
                  held: Sequence[HeldMail] = (), sources: Sources | None = None) -> str:
    """Plain words: consent, refusals, engagement, preferences, then recent decisions.

    With ``decide`` (and ``streams``), or a ``policy`` (``proxy.policy.decide`` is
    used), each stream gets a "would be: …" line for a message arriving ``now``;
    ``held`` are the person's copies in the delay queue.
    """
    snap = await state.snapshot(address)
    recent = await audit.recent(address, count)
    lines = [f"{snap.address} (as of {when(now)})"]
    if snap.suppressed:
        lines.append("erased at the person's request: heed keeps only a keyed hash of the"
                     " address, and no marketing stream will mail it again")
    if _holds_nothing(snap, recent):
        lines.append("heed holds nothing about this address: no consent, no refusal, no mail"
                     " sent, no decision recorded. Without consent it gets no marketing mail.")
    else:
        lines.extend(_facts(snap, now, recent))
    if provider is not None:
        lines.append(_provider(provider))
    if policy is not None and decide is None:
        from proxy.policy import decide as policy_decide  # only when a policy is given

        def decide(stream: str, person: PersonState) -> Decision:
            return policy_decide(policy, stream, person, now)

        streams = streams or list(policy.streams)
    if policy is not None and not _holds_nothing(snap, recent):
        lines.extend(_lifecycle(policy, snap, now, sources))
    if decide is not None:
        lines.append("if a message came now:")
        lines.extend(_would(s, decide(s, snap)) for s in streams)
    if held:
        lines.extend(_held(held))
    if recent:
        lines.append("recent decisions and changes (newest first):")
        lines.extend(_entry(e) for e in recent)
    return "\n".join(lines)
