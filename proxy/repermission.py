"""Re-permission at send time: claim the one message for real, give it back if it did not go.

The engine is pure: it says "deliver, and this spends the person's one re-ask"
(``Decision.repermission``) from a snapshot that two concurrent messages may both
have read. So the claim is taken here, at decision time, with an atomic script on
the person's hash (proxy/signals/engagement.py CLAIM): one message wins; the other is decided
again as if the claim were already made, which is the truth, and is discarded. It is
claimed at decision time rather than written when the copy is delivered because the
gap between deciding and delivering (a relay round trip) is exactly where two copies
would both pass. A copy that then does not go out gives its claim back (a held retry
claims again when released). Should Redis fail between the claim and the delivery,
the re-ask stays spent and nothing goes: fail closed, never one message too many.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace

from proxy.errors import StateUnavailable
from proxy.policy import Policy, decide
from proxy.state import State
from proxy.types import Action, Decision

log = logging.getLogger("heed.repermission")

Claimed = list[tuple[str, str]]  # (recipient, stream) whose re-ask this message holds


def _wants(decision: Decision) -> bool:
    # Shadow mode records what would happen; it must not spend the real re-ask.
    return decision.repermission and decision.action is Action.DELIVER and not decision.shadow


async def claim(state: State, policy: Policy, decisions: Mapping[str, Decision],
                message_id: str, now: float) -> tuple[dict[str, Decision], Claimed]:
    """Take the re-ask for every decision that spends one; losers get their decision again."""
    out = dict(decisions)
    wanted = [r for r, d in decisions.items() if _wants(d)]
    if not wanted:
        return out, []
    claimed: Claimed = []
    # A fresh read: the claim is compared with the person's last counted engagement.
    for r, snap in zip(wanted, await state.snapshots(wanted), strict=True):
        name = decisions[r].stream
        stream = policy.streams[name]
        decision = decide(policy, name, snap, now)
        if _wants(decision):
            since = stream.silence.assess(snap, now).last_engaged
            if await state.claim_repermission(r, name, since=since, message_id=message_id,
                                              at=now):
                claimed.append((r, name))
            else:
                asked = replace(snap, repermission={**snap.repermission, name: now})
                decision = decide(policy, name, asked, now)
        out[r] = decision
    return out, claimed


async def give_back(state: State, claimed: Claimed, sent: Iterable[str],
                    message_id: str) -> None:
    """Free the claims of copies that did not go out (best effort: logged when it fails)."""
    delivered = set(sent)
    for recipient, stream in claimed:
        if recipient in delivered:
            continue
        try:
            await state.unclaim_repermission(recipient, stream, message_id)
        except StateUnavailable:
            log.error("could not give back the re-permission claim of %s (%s)", recipient,
                      stream)
