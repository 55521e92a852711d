"""The engine: walk a stream's rule table; the first rule with an opinion decides."""

from __future__ import annotations

from dataclasses import replace

from proxy.policy.conditions import Context, Match, when
from proxy.policy.model import Policy, Rule, Stream
from proxy.types import Action, Decision, PersonState, Reason

# A delay rule whose condition matched without a release time (none of the shipped
# conditions does this): hold for an hour and ask again, rather than guess "now".
FALLBACK_DELAY = 3600.0


def decide(policy: Policy, stream_name: str, state: PersonState, now: float) -> Decision:
    """The decision for one person and one stream (a name in ``policy.streams``); no I/O."""
    stream = policy.streams[stream_name]
    if stream.marketing and state.suppressed:
        # Erasure leaves only a hashed "no"; no rule table, shadow mode included, may
        # override it (GDPR Art. 17 and 21(3): no more marketing to that person).
        why = Reason("erased", "the person's data was erased; the suppression entry holds")
        return Decision(Action.DROP, stream.name, (why,), drop_mode=stream.drop)
    ctx = Context(stream, state, now)
    for rule in stream.rules:
        if rule.stages and ctx.stage not in rule.stages:
            continue
        match = rule.condition.check(ctx)
        if match is not None:
            return _shadowed(stream, _act(stream, rule, match, now, ctx.repermission))
    if stream.default is Action.DELIVER:
        if ctx.repermission is not None:
            return _shadowed(stream, Decision(Action.DELIVER, stream.name, (ctx.repermission,),
                                              repermission=True))
        return _shadowed(stream, Decision(Action.DELIVER, stream.name, ()))
    why = Reason("default", "no rule had an opinion; the stream's default is drop")
    return _shadowed(stream, Decision(Action.DROP, stream.name, (why,), drop_mode=stream.drop))


def _act(stream: Stream, rule: Rule, match: Match, now: float,
         repermission: Reason | None) -> Decision:
    if rule.action is Action.DROP:
        return Decision(Action.DROP, stream.name, (match.reason,),
                        drop_mode=rule.drop_mode or stream.drop)
    if rule.action is Action.DELAY:
        if rule.delay is not None:
            until = now + rule.delay
        else:
            until = match.until if match.until is not None else now + FALLBACK_DELAY
        return Decision(Action.DELAY, stream.name, (match.reason,), until=until)
    if repermission is not None:
        return Decision(Action.DELIVER, stream.name, (match.reason, repermission),
                        repermission=True)
    return Decision(Action.DELIVER, stream.name, (match.reason,))


def _shadowed(stream: Stream, decision: Decision) -> Decision:
    """In shadow mode the mail goes out; the decision says what would have happened."""
    if not stream.shadow:
        return decision
    if decision.action is Action.DELIVER:
        return replace(decision, shadow=True)
    verb = decision.action.value
    if decision.drop_mode is not None:
        verb += f" ({decision.drop_mode.value})"
    if decision.until is not None:
        verb += f" until {when(decision.until)}"
    why = "; ".join(str(r) for r in decision.reasons)
    return Decision(Action.DELIVER, stream.name, (Reason("shadow", f"would {verb}: {why}"),),
                    shadow=True)
