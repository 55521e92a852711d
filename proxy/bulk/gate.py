"""The last check before a marketing copy leaves: DKIM-signed, with a body link if required."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy import Stream
from proxy.types import Action, Decision, DropMode, Reason

# A copy held for want of a key or a body link waits this long before it is tried
# again (re-checked then, like all held mail); the queue's max_hold ends the wait.
HOLD_RETRY = 900.0


@dataclass(frozen=True)
class CopyFacts:
    """What the gate needs to know about one message for one stream."""

    from_domain: str | None
    signing_domain: str | None  # the d= that will sign it; None: no key signs it
    body_link: str  # "yes" (the tool wrote one), "inserted" (heed adds one), "no"


def gate(stream: Stream, decision: Decision, facts: CopyFacts, now: float) -> Decision:
    """The decision, or a hold/reject in its place when the copy breaks a bulk-sender rule."""
    if decision.action is not Action.DELIVER or not stream.marketing:
        return decision
    if facts.signing_domain is None and stream.bulk.unsigned != "allow":
        why = Reason("unsigned", f"no DKIM key signs mail From {facts.from_domain or '(none)'}; "
                                 "marketing is never sent unsigned (add the key to `dkim:`)")
        if stream.bulk.unsigned == "reject":
            return Decision(Action.DROP, stream.name, (why,), drop_mode=DropMode.REJECT)
        return Decision(Action.DELAY, stream.name, (why,), until=now + HOLD_RETRY)
    if facts.body_link == "no" and stream.bulk.body_unsubscribe == "require":
        why = Reason("no_body_link", "no visible unsubscribe link in the message body "
                                     "(`body_unsubscribe: require`)")
        return Decision(Action.DELAY, stream.name, (why,), until=now + HOLD_RETRY)
    return decision
