"""A person's state read back: the raw Redis replies of their keys made into a PersonState.

Consent and refusal records are JSON in a hash field each (proxy/state.py writes them);
an unreadable refusal still says no, an unreadable consent is no consent.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.signals.engagement import asked, engagement
from proxy.types import Consent, PersonState, Preferences, Refusal


def text_of(value: Any) -> str:
    """A reply's bytes (or str) as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _hash(raw: Any) -> dict[str, str]:
    """A hash as redis-py gives it (a dict) or as a script returns it (a flat list)."""
    if not raw:  # most people have no refusal, preferences or engagement yet
        return {}
    if isinstance(raw, list):
        it = iter(raw)
        return {text_of(k): text_of(v) for k, v in zip(it, it, strict=True)}
    return {text_of(k): text_of(v) for k, v in raw.items()}


def _scored(raw: Any) -> list[tuple[Any, float]]:
    """(member, score) pairs as redis-py gives them (``withscores``) or a flat list."""
    if not raw or isinstance(raw[0], tuple | list):
        return [(m, float(score)) for m, score in raw or []]
    it = iter(raw)
    return [(m, float(score)) for m, score in zip(it, it, strict=True)]


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def json_record(raw: str) -> dict[str, Any]:
    """A JSON record kept in a hash field; {} when unreadable."""
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _consents(raw: Any) -> dict[str, Consent]:
    out = {}
    for lst, text in _hash(raw).items():
        rec = json_record(text)
        granted = rec.get("granted_at")
        # Revoked records stay in Redis as proof, but they are not consent.
        if rec.get("revoked_at") is None and isinstance(granted, int | float):
            out[lst] = Consent(lst, float(granted), str(rec.get("source", "")),
                               str(rec.get("ip", "")), str(rec.get("text", "")))
    return out


def _refusals(raw: Any) -> dict[str, Refusal]:
    out = {}
    for scope, text in _hash(raw).items():
        rec = json_record(text)
        # An unreadable record still says no: failing closed beats mailing someone who left.
        at = rec.get("at")
        out[scope] = Refusal(scope, str(rec.get("kind", "manual")),
                             float(at) if isinstance(at, int | float) else 0.0,
                             str(rec.get("channel", "")))
    return out


# What a person who never visited the preference centre has (frozen: one is enough).
_NO_PREFERENCES = Preferences()


def _prefs(raw: Any) -> Preferences:
    if not raw:
        return _NO_PREFERENCES
    pr = _hash(raw)
    try:
        off = json.loads(pr["off"]) if pr.get("off") else []
    except ValueError:
        off = []
    if not isinstance(off, list):
        off = []
    return Preferences(paused_until=_float(pr.get("paused_until")),
                       timezone=pr.get("timezone") or None,
                       off=frozenset(o for o in off if isinstance(o, str)),
                       frequency=pr.get("frequency") or None)


def person(address: str, consent: Any, refusal: Any, engage: Any, prefs: Any,
           sends: Any, complaints: Any = None, *, suppressed: Any = False) -> PersonState:
    """One person's state from the raw replies of their reads (see ``State.snapshots``)."""
    eng = _hash(engage)
    by_stream: dict[str, list[float]] = {}
    for member, score in _scored(sends):
        by_stream.setdefault(text_of(member).split("|", 1)[0], []).append(score)
    last = _float(eng.get("last_engaged"))
    since = int(_float(eng.get("sends_since")) or 0)
    total = int(_float(eng.get("total_sends")) or 0)
    return PersonState(
        address=address, consents=_consents(consent), refusals=_refusals(refusal),
        last_engaged=last, sends_since_engagement=since,
        first_send=_float(eng.get("first_send")),
        sends={s: tuple(sorted(t)) for s, t in by_stream.items()},
        prefs=_prefs(prefs), engagement=engagement(eng, last, since, total),
        total_sends=total, repermission=asked(eng),
        domain_complaints=tuple(sorted(score for _, score in _scored(complaints))),
        suppressed=bool(suppressed),
    )
