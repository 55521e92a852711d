"""When a person comes back: a newer consent with proof lifts their unsubscribe of that list;
a complaint, a hard bounce or an erasure is lifted only by hand (`heed suppression lift`)."""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import RedisError

from proxy.audit import AuditEntry
from proxy.errors import StateUnavailable
from proxy.keys import normalise_address
from proxy.tell.outbox import Event, note
from proxy.types import GLOBAL_SCOPE

# Delete the refusal only if it is still the one read (a newer "no" that came in
# between stays): KEYS[1] refusal hash; ARGV[1] scope, ARGV[2] the record read.
LIFT_IF_SAME = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _record(raw: Any) -> dict[str, Any]:
    try:
        rec = json.loads(_s(raw)) if raw else {}
    except ValueError:
        return {}
    return rec if isinstance(rec, dict) else {}


async def unsubscribe_to_lift(state: Any, address: str, lst: str, at: float, source: str,
                              text: str) -> str | None:
    """The stored unsubscribe of ``lst`` that a consent granted at ``at`` lifts, or None.

    Only an unsubscribe of that very list, only when it is older than the consent, and
    only when the consent carries its proof (source and the wording shown): a grant
    without proof, an import, or a complaint/bounce/global "no" never lifts anything.
    """
    if not (source.strip() and text.strip()):
        return None
    try:
        raw = await state.redis.hget(state.keys.refusal(address), lst)
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    rec = _record(raw)
    refused_at = rec.get("at")
    if rec.get("kind") != "unsubscribe" or not isinstance(refused_at, int | float):
        return None
    return _s(raw) if refused_at < at else None


def resubscribe(state: Any, pipe: Any, address: str, lst: str, old: str, at: float,
                source: str) -> None:
    """Queue the lift of ``old`` (audit "re-subscribed", outbox event) on ``pipe``."""
    k = state.keys
    pipe.eval(LIFT_IF_SAME, 1, k.refusal(address), lst, old)
    pipe.delete(k.tool_told(address))  # a later "no" is told to the tool again
    since = _record(old).get("at")
    state.audit.add(pipe, [AuditEntry(
        at=at, kind="change", recipient=address, outcome="re-subscribed", stream=lst,
        detail=f"unsubscribe of list {lst} (at {since}) lifted by a newer consent from "
               f"{source}")])
    note(pipe, k, Event("person.resubscribed", address, lst, channel=source, at=at))


async def lift(state: Any, address: str, lst: str | None, reason: str) -> list[str]:
    """Lift by hand the refusal of ``lst`` (or every list, and an erasure); audited.

    Returns what was lifted (empty: nothing to lift). ``reason`` is required.
    """
    if not reason.strip():
        raise ValueError("a reason is required to lift a refusal")
    a = normalise_address(address)
    scope = lst or GLOBAL_SCOPE
    k = state.keys
    digest = state.suppression_id(a)
    try:
        pipe = state.redis.pipeline(transaction=False)
        pipe.hget(k.refusal(a), scope)
        pipe.sismember(k.suppressed, digest)
        raw, erased = await pipe.execute()
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    erased = bool(erased) and lst is None
    lifted = []
    if raw:
        rec = _record(raw)
        where = "every list" if scope == GLOBAL_SCOPE else f"list {scope}"
        lifted.append(f"{rec.get('kind', 'refusal')} of {where}")
    if erased:
        lifted.append(f"erasure (suppression {digest[:12]})")
    if not lifted:
        return []

    def writes(p: Any, a: str) -> None:
        if raw:
            p.eval(LIFT_IF_SAME, 1, k.refusal(a), scope, _s(raw))
        if erased:
            p.srem(k.suppressed, digest)
        p.delete(k.tool_told(a))

    await state._change(a, "lifted", f"{', '.join(lifted)} lifted by hand: {reason}",
                        state.clock.now(), writes, scope,
                        Event("refusal.lifted", list=scope,
                              data={"reason": reason, "lifted": lifted}))
    return lifted


async def rejoin(state: Any, address: str, lst: str | None, how: str) -> bool:
    """The person's own unsubscribe of ``lst`` (or every list) lifted by the person
    (``how``: where they asked), audited "re-subscribed"; False if it was not one."""
    a = normalise_address(address)
    scope = lst or GLOBAL_SCOPE
    try:
        raw = await state.redis.hget(state.keys.refusal(a), scope)
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    if _record(raw).get("kind") != "unsubscribe":
        return False  # a complaint or a bounce is lifted only by hand

    def writes(p: Any, a: str) -> None:
        p.eval(LIFT_IF_SAME, 1, state.keys.refusal(a), scope, _s(raw))
        p.delete(state.keys.tool_told(a))

    where = "every list" if scope == GLOBAL_SCOPE else f"list {scope}"
    await state._change(a, "re-subscribed", f"unsubscribe of {where} lifted: {how}",
                        state.clock.now(), writes, scope,
                        Event("person.resubscribed", list=scope, channel=how))
    return True
