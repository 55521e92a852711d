"""A person's rights over their data: a copy of everything held (export) and erasure."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from proxy.audit import AuditEntry
from proxy.errors import StateUnavailable
from proxy.keys import domain_of, normalise_address
from proxy.policy import Policy
from proxy.settings import Settings
from proxy.state import SEND_WINDOW, State
from proxy.tell.outbox import Event, note
from proxy.types import GLOBAL_SCOPE

log = logging.getLogger("heed")

EXPORT_DECISIONS = 200  # the person's audit stream is capped at 200 entries anyway
FORMAT = "heed-personal-data-v2"  # v2: ISO 8601 times, nested objects, lists by label


def key_file(path: Path, what: str) -> bytes:
    """A random secret kept in ``path`` (made 0600 on first use), for the embedded default."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: with `--workers N` every worker
        # gets here at once, and each must read the one complete secret that won.
        spare = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        try:
            os.link(spare, path)
            log.info("generated an %s at %s", what, path)
        except FileExistsError:
            pass
        finally:
            spare.unlink()
    return path.read_text().strip().encode()


def erase_secret(settings: Settings) -> bytes:
    """The configured erase secret, or one random secret kept beside the embedded Redis data."""
    if settings.unsubscribe.erase_secret:
        return settings.unsubscribe.erase_secret
    return key_file(settings.redis.data_dir.parent / "erase.key", "erase secret")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def iso(at: Any) -> str | None:
    """ISO 8601 in UTC (``2027-01-15T08:00:00Z``), or None for no time."""
    if isinstance(at, bool) or not isinstance(at, int | float) or at <= 0:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _records(raw: Any) -> dict[str, dict[str, Any]]:
    """A hash of JSON records, each parsed (an unreadable one is kept as its text)."""
    out: dict[str, dict[str, Any]] = {}
    for k, v in (raw or {}).items():
        try:
            rec = json.loads(_text(v))
        except ValueError:
            rec = None
        out[_text(k)] = rec if isinstance(rec, dict) else {"unreadable": _text(v)}
    return out


def _consent(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    return {"granted_at": iso(rec.get("granted_at")), "source": rec.get("source", ""),
            "ip": rec.get("ip", ""), "text": rec.get("text", ""),
            "revoked_at": iso(rec.get("revoked_at")), "revoked_by": rec.get("revoked_by")}


def _refusal(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    if rec is None:
        return None
    return {"kind": rec.get("kind", "manual"), "at": iso(rec.get("at")),
            "channel": rec.get("channel", "")}


async def export(state: State, address: str, policy: Policy | None = None,
                 lang: str = "en") -> dict[str, Any]:
    """Everything heed holds about ``address`` (GDPR Art. 15 and 20), as plain JSON data:
    ISO 8601 times, nested objects, the field names of docs/preferences.md; lists are
    named by the policy's labels in ``lang``."""
    a = normalise_address(address)
    k = state.keys
    try:
        pipe = state.redis.pipeline(transaction=False)
        pipe.hgetall(k.consent(a))
        pipe.hgetall(k.refusal(a))
        pipe.zrangebyscore(k.sends(a), "-inf", "+inf", withscores=True)
        pipe.sismember(k.suppressed, state.suppression_id(a))
        consent, refusal, sends, suppressed = await pipe.execute()
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    person = await state.snapshot(a)
    decisions = await state.audit.recent(a, EXPORT_DECISIONS)
    consents, refusals = _records(consent), _records(refusal)
    lists = []
    # Revoked consents are included: the record of the grant and of its withdrawal.
    for name in sorted((set(consents) | set(refusals)) - {GLOBAL_SCOPE}):
        label = policy.list_label(name, lang).text if policy is not None else name
        stream = policy.stream_of_list(name) if policy is not None else None
        lists.append({"list": name, "label": label,
                      "description": stream.description(lang).text if stream else "",
                      "consent": _consent(consents.get(name)),
                      "refusal": _refusal(refusals.get(name))})
    prefs, eng = person.prefs, person.engagement
    return {
        "format": FORMAT,
        "address": a,
        "exported_at": iso(state.clock.now()),
        "language": lang,
        "lists": lists,
        "all_marketing": {"refusal": _refusal(refusals.get(GLOBAL_SCOPE))},
        "preferences": {"frequency": prefs.frequency, "paused_until": iso(prefs.paused_until),
                        "timezone": prefs.timezone, "off": sorted(prefs.off)},
        "engagement": {
            "last_at": iso(person.last_engaged), "first_send": iso(person.first_send),
            "total_sends": person.total_sends,
            "by_kind": [{"kind": e.kind, "at": iso(e.at), "sends_since": e.sends_since}
                        for e in sorted(eng.values(), key=lambda e: e.kind)]},
        "sends": {"kept_days": SEND_WINDOW / 86400,
                  "recent": [{"stream": _text(m).split("|", 1)[0], "at": iso(float(t))}
                             for m, t in sends]},
        "recent_decisions": [
            {"at": iso(e.at), "kind": e.kind, "outcome": e.outcome, "stream": e.stream,
             "reasons": list(e.reasons), "detail": e.detail, "message_id": e.message_id}
            for e in decisions
        ],
        "suppressed": bool(suppressed),
    }


async def erase(state: State, address: str, verp_tokens: Sequence[str] = ()) -> str:
    """Delete the person's keys, keeping only the keyed hash that stops all marketing.

    Returns the first characters of the suppression digest (for the audit and the page).
    The suppression entry is written first: if the connection fails half way, the "no"
    already holds. The global audit trail keeps its entries (capped, it ages out) and
    held copies in the delay queue stay until release, where the suppression drops them.
    ``verp_tokens``: the person's VERP tokens (TokenSigner.verp_all per marketing list);
    their mappings name the address but live outside its hash tag, so are deleted here.
    """
    a = normalise_address(address)
    digest = state.suppression_id(a)
    k = state.keys
    # The address is not in this entry: the erasure itself must not keep the person.
    entry = AuditEntry(at=state.clock.now(), kind="change", recipient="", outcome="erased",
                       detail=f"person erased at their request; suppression {digest[:12]}")
    guard = k.domain_complaints(domain_of(a))
    try:
        complained = await state.redis.zscore(guard, a)
        pipe = state.redis.pipeline(transaction=False)
        pipe.sadd(k.suppressed, digest)
        pipe.zadd(k.erasures, {digest: entry.at}, nx=True)  # when, for the export
        pipe.delete(*k.person_keys(a))  # one hash tag: one slot, one command
        pipe.srem(k.people, a)
        for token in verp_tokens:
            pipe.delete(k.verp(token))  # other slots: one command each
        if complained is not None:
            # The domain guard counts complaints; it keeps the count, not the address.
            pipe.zadd(guard, {digest: complained})
            pipe.zrem(guard, a)
        state.audit.add(pipe, [entry])
        # The tool hears of it by the keyed hash only (a webhook; no address leaves heed).
        note(pipe, k, Event("person.erased", at=entry.at, data={"suppression_id": digest}))
        await pipe.execute()
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    return digest[:12]
