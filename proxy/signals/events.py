"""Events in: one type for every signal (API, webhooks, DSN, ARF) and one way to apply it.

Every adapter (proxy/http/api.py, proxy/signals/webhooks/, proxy/signals/bounces.py)
turns what it received into ``Event`` values; ``apply`` maps each onto the person's state and
leaves an audit entry naming the channel it came by.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.audit import AuditEntry
from proxy.keys import normalise_address
from proxy.settings import BounceSettings
from proxy.state import State, is_address, parse_time

ENGAGEMENTS = ("open", "click", "reply", "preference-visit")
KINDS = (*ENGAGEMENTS, "bounce", "complaint", "unsubscribe", "grant", "revoke")
CHANNELS = ("api", "ses", "sendgrid", "mailgun", "postmark", "dsn", "arf")
BOUNCES = ("hard", "soft")
_FIELDS = ("kind", "address", "at", "list", "bounce", "proof", "id", "detail")
_PROOF = ("source", "ip", "text")
MAX_TEXT = 1000  # detail and proof text: enough for a diagnostic line or consent wording


@dataclass(frozen=True)
class Event:
    """One signal about one address. ``list`` None means every marketing list."""

    kind: str
    address: str
    channel: str
    at: float | None = None  # when it happened; None -> now
    list: str | None = None  # unsubscribe scope; required for grant/revoke
    bounce: str | None = None  # "hard" | "soft" for kind bounce
    source: str = ""  # consent proof (grant/revoke): where...
    ip: str = ""  # ...from which IP...
    text: str = ""  # ...to what wording
    id: str = ""  # the sender's event id: a retried soft bounce counts once
    detail: str = ""  # diagnostic code, feedback type…: for people reading the audit


@dataclass(frozen=True)
class Applied:
    """What an event did: refused (new), repeat (refused before), counted, engaged…"""

    event: Event
    outcome: str
    count: int | None = None  # soft bounces within the window, for kind bounce/soft


class EventRules:
    """What a bounce means, from the ``bounces:`` settings (docs/events.md)."""

    def __init__(self, settings: BounceSettings | None = None) -> None:
        s = settings or BounceSettings()
        self.hard_bounce_all = s.hard_bounce == "all"
        self.soft_limit = s.soft_bounce_limit
        self.soft_window = s.soft_bounce_window


def parse_event(data: Any, channel: str, now: float) -> Event | dict[str, str]:
    """An Event from a JSON object, or ``{field: problem}`` for everything wrong with it."""
    if not isinstance(data, Mapping):
        return {"": "expected a JSON object"}
    errors: dict[str, str] = {}
    for name in data:
        if name not in _FIELDS:
            errors[str(name)] = "unknown field"
    kind = data.get("kind")
    if kind not in KINDS:
        errors["kind"] = f"required, one of {', '.join(KINDS)}"
    address = data.get("address")
    if not isinstance(address, str) or not is_address(address.strip().strip("<>")):
        errors["address"] = "required, an email address"
    at: float | None = None
    if data.get("at") is not None:
        raw = data["at"]
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            errors["at"] = "epoch seconds or ISO 8601"
        else:
            try:
                at = parse_time(str(raw), now)
            except ValueError as exc:
                errors["at"] = str(exc)
    lst = data.get("list")
    if lst is not None and (not isinstance(lst, str) or not 0 < len(lst.encode()) <= 255):
        errors["list"] = "a list name of 1 to 255 bytes"
    if kind in ("grant", "revoke") and lst is None:
        errors["list"] = f"required for {kind}"
    bounce = data.get("bounce")
    if kind == "bounce" and bounce not in BOUNCES:
        errors["bounce"] = "required for kind bounce: hard or soft"
    elif kind != "bounce" and bounce is not None:
        errors["bounce"] = "only for kind bounce"
    proof = data.get("proof") or {}
    if not isinstance(proof, Mapping):
        errors["proof"] = "an object with source, ip, text"
        proof = {}
    for name, value in proof.items():
        if name not in _PROOF:
            errors[f"proof.{name}"] = "unknown field"
        elif not isinstance(value, str) or len(value) > MAX_TEXT:
            errors[f"proof.{name}"] = f"a string of at most {MAX_TEXT} characters"
    if isinstance(proof.get("ip"), str) and proof["ip"] and not _is_ip(proof["ip"]):
        errors["proof.ip"] = "an IPv4 or IPv6 address"
    if kind == "grant" and not (isinstance(proof.get("source"), str) and proof["source"]):
        errors["proof.source"] = "required for grant: where the consent was given"
    if proof and kind not in ("grant", "revoke"):
        errors["proof"] = "only for grant and revoke"
    for name in ("id", "detail"):
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            errors[name] = f"a string of at most {MAX_TEXT} characters"
    if errors:
        return errors
    return Event(kind=str(kind), address=normalise_address(str(address)), channel=channel,
                 at=at, list=lst, bounce=bounce, source=str(proof.get("source", "")),
                 ip=str(proof.get("ip", "")), text=str(proof.get("text", "")),
                 id=str(data.get("id") or ""), detail=str(data.get("detail") or ""))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _describe(event: Event) -> str:
    parts = [f"channel {event.channel}"]
    if event.bounce:
        parts.append(event.bounce)
    if event.list:
        parts.append(f"list {event.list}")
    if event.id:
        parts.append(f"id {event.id}")
    if event.detail:
        parts.append(event.detail[:200])
    return "; ".join(parts)


async def apply(state: State, event: Event, rules: EventRules | None = None,
                metrics: Any = None) -> Applied:
    """Map one event onto the state; StateUnavailable when Redis cannot take it (retry)."""
    rules = rules or EventRules()
    at = state.clock.now() if event.at is None else event.at
    address = event.address
    applied = await _apply(state, event, rules, address, at)
    # The event's own record: what came in, by which channel, and what it did.
    await state.audit.record([AuditEntry(
        at=at, kind="event", recipient=address, outcome=event.kind,
        stream=event.list or "", reasons=(applied.outcome, _describe(event)),
        detail=_describe(event))])
    if metrics is not None:
        metrics.events.labels(event.channel, event.kind, applied.outcome).inc()
    return applied


async def _apply(state: State, event: Event, rules: EventRules, address: str,
                 at: float) -> Applied:
    kind, channel = event.kind, event.channel
    if kind in ENGAGEMENTS:
        # Which kinds count as engagement is the policy's business (proxy/state.py).
        await state.engage(address, kind=kind, at=at,
                           source="api" if channel == "api" else f"webhook {channel}")
        return Applied(event, "engaged")
    if kind == "grant":
        assert event.list is not None
        await state.grant(address, event.list, source=event.source or channel, ip=event.ip,
                          text=event.text, at=at)
        return Applied(event, "granted")
    if kind == "revoke":
        assert event.list is not None
        await state.revoke(address, event.list, source=event.source or channel, at=at)
        return Applied(event, "revoked")
    if kind == "complaint":
        # A complaint is the strongest no there is: every marketing list, at once.
        return await _refuse(state, event, "complaint", None, at)
    if kind == "unsubscribe":
        return await _refuse(state, event, "unsubscribe", event.list, at)
    if event.bounce == "hard":
        scope = None if rules.hard_bounce_all else event.list
        return await _refuse(state, event, "bounce", scope, at)
    count = await state.soft_bounce(address, event_id=event.id or uuid.uuid4().hex,
                                    window=rules.soft_window, at=at, detail=_describe(event))
    if rules.soft_limit and count >= rules.soft_limit:
        applied = await _refuse(state, event, "bounce", None if rules.hard_bounce_all
                                else event.list, at)
        return Applied(event, applied.outcome, count)
    return Applied(event, "counted", count)


async def _refuse(state: State, event: Event, kind: str, scope: str | None,
                  at: float) -> Applied:
    new = await state.refuse(event.address, kind, list=scope, channel=event.channel, at=at)
    return Applied(event, "refused" if new else "repeat")
