"""A person's rights over their data: a copy of everything held (export) and erasure."""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from proxy.audit import AuditEntry
from proxy.errors import StateUnavailable
from proxy.keys import domain_of, normalise_address
from proxy.settings import Settings
from proxy.state import SEND_WINDOW, State
from proxy.tell.outbox import Event, note

log = logging.getLogger("heed")

EXPORT_DECISIONS = 200  # the person's audit stream is capped at 200 entries anyway
FORMAT = "heed-personal-data-v1"


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


def _records(raw: Any) -> dict[str, Any]:
    """A hash of JSON records, each parsed (kept as text when it is not JSON)."""
    out: dict[str, Any] = {}
    for k, v in (raw or {}).items():
        try:
            out[_text(k)] = json.loads(_text(v))
        except ValueError:
            out[_text(k)] = _text(v)
    return out


async def export(state: State, address: str) -> dict[str, Any]:
    """Everything heed holds about ``address`` (GDPR Art. 15 and 20), as plain JSON data."""
    a = normalise_address(address)
    k = state.keys
    try:
        pipe = state.redis.pipeline(transaction=False)
        pipe.hgetall(k.consent(a))
        pipe.hgetall(k.refusal(a))
        pipe.hgetall(k.prefs(a))
        pipe.hgetall(k.engagement(a))
        pipe.zrangebyscore(k.sends(a), "-inf", "+inf", withscores=True)
        pipe.sismember(k.suppressed, state.suppression_id(a))
        consent, refusal, prefs, engage, sends, suppressed = await pipe.execute()
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    decisions = await state.audit.recent(a, EXPORT_DECISIONS)
    return {
        "format": FORMAT,
        "address": a,
        "exported_at": state.clock.now(),
        # Revoked consents are included: the record of the grant and of its withdrawal.
        "consents": _records(consent),
        "refusals": _records(refusal),
        "preferences": {_text(f): _text(v) for f, v in (prefs or {}).items()},
        "engagement": {_text(f): _text(v) for f, v in (engage or {}).items()},
        "sends": {"kept_days": SEND_WINDOW / 86400,
                  "recent": [{"stream": _text(m).split("|", 1)[0], "at": float(t)}
                             for m, t in sends]},
        "recent_decisions": [
            {"at": e.at, "kind": e.kind, "outcome": e.outcome, "stream": e.stream,
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
