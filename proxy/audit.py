"""The audit trail: every decision and change, in a global stream and a capped one per person."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.keys import Keys, normalise_address

AUDIT_KINDS = ("decision", "intent", "change", "release", "expire", "upstream", "event")
_PAGE = 500  # entries read per round trip when tail() filters by time
# What json.dumps(ensure_ascii=False) builds on every call, built once (an entry's
# reasons are encoded once or twice per recipient).
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _json_strings(values: tuple[str, ...]) -> str:
    """``json.dumps(list(values), ensure_ascii=False)``, byte for byte, a third of its cost
    for the usual case (every value a string: the encoder's own string escaping)."""
    try:
        return "[" + ", ".join(map(encode_basestring, values)) + "]"
    except TypeError:  # not all strings: the encoder says how
        return _ENCODER.encode(list(values))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class AuditEntry:
    """One recorded fact: who, stream, outcome, reasons, policy version, when."""

    at: float
    kind: str  # decision | intent (a copy handed to the upstream) | change | release | …
    recipient: str
    outcome: str  # deliver, drop, reject, discarded, queued, delivered, granted, refused, …
    stream: str = ""
    reasons: tuple[str, ...] = ()
    message_id: str = ""
    sender: str = ""
    policy_version: str = ""
    correlation_id: str = ""
    detail: str = ""
    # For a delivered marketing copy: "signed" when it went out with a one-click
    # List-Unsubscribe covered by DKIM (RFC 8058 §4), "unsigned" when not; else "".
    one_click: str = ""
    # For a delivered marketing copy: a visible unsubscribe link in its body, "yes" (the
    # tool's), "inserted" (heed's footer) or "no"; else "".
    body_link: str = ""

    # Both maps are spelt out field by field (in declaration order, as asdict gave
    # them): written once or twice per recipient, asdict's deep copy was a visible
    # share of a message's CPU time. tests/test_audit.py checks they name every field.
    def log_fields(self) -> dict[str, Any]:
        """The entry for a JSON log line (reasons as a list; same correlation id as the trail)."""
        return {
            "at": self.at, "kind": self.kind, "recipient": self.recipient,
            "outcome": self.outcome, "stream": self.stream, "reasons": list(self.reasons),
            "message_id": self.message_id, "sender": self.sender,
            "policy_version": self.policy_version, "correlation_id": self.correlation_id,
            "detail": self.detail, "one_click": self.one_click, "body_link": self.body_link,
        }

    def to_fields(self) -> dict[str, str]:
        """The flat field map XADD stores."""
        flat = iter(self.flat_fields())
        return dict(zip(flat, flat, strict=True))

    def flat_fields(self) -> list[str]:
        """XADD's field/value arguments, ``to_fields`` as one list (what the audit writes:
        no dict to build and take apart again, twice per recipient)."""
        return [
            "at", repr(float(self.at)),  # repr keeps every digit of the float
            "kind", str(self.kind), "recipient", str(self.recipient),
            "outcome", str(self.outcome), "stream", str(self.stream),
            "message_id", str(self.message_id), "sender", str(self.sender),
            "policy_version", str(self.policy_version),
            "correlation_id", str(self.correlation_id), "detail", str(self.detail),
            "one_click", str(self.one_click), "body_link", str(self.body_link),
            "reasons", _json_strings(self.reasons),
        ]

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> AuditEntry:
        """Rebuild an entry from XRANGE fields; unknown fields (newer writers) are ignored."""
        data = {_text(k): _text(v) for k, v in raw.items()}
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        try:
            kwargs["at"] = float(kwargs.get("at", 0))
        except ValueError:
            kwargs["at"] = 0.0
        try:
            kwargs["reasons"] = tuple(str(r) for r in json.loads(kwargs.get("reasons", "[]")))
        except (ValueError, TypeError):
            kwargs["reasons"] = (kwargs["reasons"],)
        kwargs.setdefault("kind", "")
        kwargs.setdefault("recipient", "")
        kwargs.setdefault("outcome", "")
        return cls(**kwargs)


class Audit:
    """Appends entries (in the caller's pipeline) and reads them back."""

    def __init__(self, redis: Any, keys: Keys, *, maxlen_global: int = 1_000_000,
                 maxlen_person: int = 200, max_age: float = 0.0) -> None:
        """The global trail keeps about ``maxlen_global`` entries and, with ``max_age``
        (seconds), none older (``audit.max_entries``, ``audit.max_age``)."""
        self.redis = redis
        self.keys = keys
        self.maxlen_global = maxlen_global
        self.maxlen_person = maxlen_person
        self.max_age = max_age

    def add(self, pipe: Any, entries: Sequence[AuditEntry]) -> None:
        """Queue XADDs on the caller's pipeline (executed with the caller's other writes)."""
        # XADD's arguments built once per entry for both streams (what redis-py's xadd
        # builds: approximate trimming, MAXLEN ~ lets Redis drop whole nodes, O(1)).
        audit, most, most_person = self.keys.audit, str(self.maxlen_global), \
            str(self.maxlen_person)
        for entry in entries:
            fields_ = entry.flat_fields()
            pipe.execute_command("XADD", audit, "MAXLEN", "~", most, "*", *fields_)
            if entry.recipient:
                pipe.execute_command("XADD", self.keys.person_audit(entry.recipient), "MAXLEN",
                                     "~", most_person, "*", *fields_)
        if self.max_age > 0 and entries:
            # Stream ids are milliseconds of Redis's clock; heed's stands in for it here.
            oldest = int((max(e.at for e in entries) - self.max_age) * 1000)
            pipe.xtrim(self.keys.audit, minid=f"{max(0, oldest)}-0", approximate=True)

    async def oldest(self) -> AuditEntry | None:
        """The oldest entry the global trail still keeps (what retention left), or None."""
        try:
            raw = await self.redis.xrange(self.keys.audit, "-", "+", count=1)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return AuditEntry.from_fields(raw[0][1]) if raw else None

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        """Write entries now, in one round trip."""
        if not entries:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            self.add(pipe, entries)
            await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def recent(self, address: str, count: int = 20) -> list[AuditEntry]:
        """This person's newest entries first."""
        try:
            raw = await self.redis.xrevrange(
                self.keys.person_audit(normalise_address(address)), count=count)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return [AuditEntry.from_fields(f) for _, f in raw]

    async def tail(self, count: int = 100, since: float | None = None) -> list[AuditEntry]:
        """The newest entries of the global trail, newest first; ``since`` bounds ``at``.

        Stream ids carry the Redis server's time, not heed's clock, so ``since`` is
        compared with each entry's ``at``; reading stops at the first older entry
        because the trail is appended in time order.
        """
        if since is None:
            try:
                raw = await self.redis.xrevrange(self.keys.audit, count=count)
            except RedisError as exc:
                raise StateUnavailable("redis unavailable") from exc
            return [AuditEntry.from_fields(f) for _, f in raw]
        out: list[AuditEntry] = []
        end = "+"
        while len(out) < count:
            try:
                raw = await self.redis.xrevrange(self.keys.audit, end, "-", count=_PAGE)
            except RedisError as exc:
                raise StateUnavailable("redis unavailable") from exc
            for _id, f in raw:
                entry = AuditEntry.from_fields(f)
                if entry.at < since:
                    return out
                out.append(entry)
                if len(out) == count:
                    return out
            if len(raw) < _PAGE:
                return out
            end = "(" + _text(raw[-1][0])  # exclusive: continue below the last id read
        return out
