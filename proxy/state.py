"""Person state in Redis: consent with proof, refusals, engagement, sends, preferences."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.exceptions import RedisError

from proxy.audit import Audit, AuditEntry
from proxy.clock import Clock
from proxy.engagement import CLAIM, ENGAGE, UNCLAIM, asked, engagement
from proxy.errors import StateUnavailable
from proxy.keys import ENGAGED_AT, ENGAGED_MARK, Keys, normalise_address
from proxy.types import (
    ENGAGEMENT_KINDS,
    GLOBAL_SCOPE,
    REFUSAL_KINDS,
    Consent,
    PersonState,
    Preferences,
    Refusal,
)

SEND_WINDOW = 35 * 86400.0  # caps look back at most a month (31 days); the rest is margin
CSV_HEADER = ("email", "list", "granted_at", "source", "ip", "text")
CSV_BATCH = 500  # rows per Redis round trip
FREQUENCIES = (None, "weekly", "monthly")
_READS = 5  # commands per person in a snapshot pipeline
# One @, no whitespace, no control characters (CR LF would smuggle SMTP commands), a dotted domain.
_ADDRESS = re.compile(r"^[^\s@<>\x00-\x1f\x7f]+@[^\s@<>\x00-\x1f\x7f]+\.[^\s@<>\x00-\x1f\x7f]+$")
_UNSET: Any = object()


def is_address(text: str) -> bool:
    """One @, a dotted domain, no whitespace or control characters."""
    return bool(_ADDRESS.match(text))


@dataclass
class ImportReport:
    """What an import did: rows written, and "line N: message" for each row skipped."""

    imported: int = 0
    errors: list[str] = field(default_factory=list)


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _hash(raw: Any) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (raw or {}).items()}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _json(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _consents(raw: Any) -> dict[str, Consent]:
    out = {}
    for lst, text in _hash(raw).items():
        rec = _json(text)
        granted = rec.get("granted_at")
        # Revoked records stay in Redis as proof, but they are not consent.
        if rec.get("revoked_at") is None and isinstance(granted, int | float):
            out[lst] = Consent(lst, float(granted), str(rec.get("source", "")),
                               str(rec.get("ip", "")), str(rec.get("text", "")))
    return out


def _refusals(raw: Any) -> dict[str, Refusal]:
    out = {}
    for scope, text in _hash(raw).items():
        rec = _json(text)
        # An unreadable record still says no: failing closed beats mailing someone who left.
        at = rec.get("at")
        out[scope] = Refusal(scope, str(rec.get("kind", "manual")),
                             float(at) if isinstance(at, int | float) else 0.0,
                             str(rec.get("channel", "")))
    return out


def _prefs(raw: Any) -> Preferences:
    pr = _hash(raw)
    try:
        off = json.loads(pr.get("off", "[]"))
    except ValueError:
        off = []
    if not isinstance(off, list):
        off = []
    return Preferences(paused_until=_float(pr.get("paused_until")),
                       timezone=pr.get("timezone") or None,
                       off=frozenset(o for o in off if isinstance(o, str)),
                       frequency=pr.get("frequency") or None)


def _person(address: str, consent: Any, refusal: Any, engage: Any, prefs: Any,
            sends: Any) -> PersonState:
    eng = _hash(engage)
    by_stream: dict[str, list[float]] = {}
    for member, score in sends or []:
        by_stream.setdefault(_s(member).split("|", 1)[0], []).append(float(score))
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
    )


class State:
    """Reads one person in one round trip; every write leaves an audit "change" entry."""

    def __init__(self, redis: Any, keys: Keys, clock: Clock) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.audit = Audit(redis, keys)
        self._claim = redis.register_script(CLAIM)
        self._unclaim = redis.register_script(UNCLAIM)

    # --- reading --------------------------------------------------------------------
    async def snapshot(self, address: str) -> PersonState:
        """Everything the engine reads about one address: one pipeline, one round trip."""
        return (await self.snapshots([address]))[0]

    async def snapshots(self, addresses: Sequence[str]) -> list[PersonState]:
        """Several people in one round trip (one non-transactional pipeline)."""
        if not addresses:
            return []
        since = self.clock.now() - SEND_WINDOW
        norm = [normalise_address(a) for a in addresses]
        k = self.keys
        try:
            pipe = self.redis.pipeline(transaction=False)
            for a in norm:
                pipe.hgetall(k.consent(a))
                pipe.hgetall(k.refusal(a))
                pipe.hgetall(k.engagement(a))
                pipe.hgetall(k.prefs(a))
                pipe.zrangebyscore(k.sends(a), since, "+inf", withscores=True)
            raw = await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return [_person(a, *raw[i * _READS:(i + 1) * _READS]) for i, a in enumerate(norm)]

    # --- the hot path's write (queued on the caller's pipeline) ---------------------
    def record_sends(self, pipe: Any, stream: str, addresses: Iterable[str], at: float) -> None:
        """Count a delivered copy: silence counters and the send history for caps."""
        k = self.keys
        for address in addresses:
            a = normalise_address(address)
            pipe.hincrby(k.engagement(a), "sends_since", 1)
            pipe.hincrby(k.engagement(a), "total_sends", 1)
            pipe.hsetnx(k.engagement(a), "first_send", repr(at))
            # One ZSET for every stream: a snapshot reads all caps with one command.
            pipe.zadd(k.sends(a), {f"{stream}|{uuid.uuid4().hex[:12]}": at})
            pipe.zremrangebyscore(k.sends(a), "-inf", f"({at - SEND_WINDOW!r}")
            pipe.sadd(k.people, a)

    # --- audited changes -------------------------------------------------------------
    async def _change(self, address: str, outcome: str, detail: str, at: float,
                      writes: Callable[[Any, str], None], stream: str = "") -> list[Any]:
        a = normalise_address(address)
        entry = AuditEntry(at=at, kind="change", recipient=a, outcome=outcome, stream=stream,
                           detail=detail)
        try:
            # Not MULTI: the global audit stream and people set live in other Cluster slots.
            pipe = self.redis.pipeline(transaction=False)
            writes(pipe, a)
            pipe.sadd(self.keys.people, a)
            self.audit.add(pipe, [entry])
            return list(await pipe.execute())
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def grant(self, address: str, list: str, *, source: str = "", ip: str = "",
                    text: str = "", at: float | None = None) -> None:
        """Record consent with its proof (when, from where, from which IP, to what wording)."""
        at = self.clock.now() if at is None else at
        record = json.dumps({"list": list, "granted_at": at, "source": source, "ip": ip,
                             "text": text}, ensure_ascii=False)
        await self._change(address, "granted", _proof(source, ip, text), at,
                           lambda p, a: p.hset(self.keys.consent(a), list, record), list)

    async def revoke(self, address: str, list: str, *, source: str = "",
                     at: float | None = None) -> None:
        """Withdraw consent; the grant's proof stays, marked revoked, as proof of both."""
        at = self.clock.now() if at is None else at
        try:
            old = _json(_s(await self.redis.hget(self.keys.consent(address), list) or "{}"))
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        if old.get("revoked_at") is not None:
            # Already withdrawn: keep the first withdrawal's time; just note the repeat.
            await self._change(address, "revoked", f"already revoked; source {source or '-'}",
                               at, lambda p, a: None, list)
            return
        record = {"list": list, "granted_at": old.get("granted_at"),
                  "source": old.get("source", ""), "ip": old.get("ip", ""),
                  "text": old.get("text", ""), "revoked_at": at, "revoked_by": source}
        await self._change(address, "revoked", f"source {source or '-'}", at,
                           lambda p, a: p.hset(self.keys.consent(a), list, json.dumps(record)),
                           list)

    async def refuse(self, address: str, kind: str, *, list: str | None = None,
                     channel: str = "", at: float | None = None) -> bool:
        """Record a no; True if it is new. The first refusal of a scope keeps its time."""
        if kind not in REFUSAL_KINDS:
            raise ValueError(f"unknown refusal kind {kind!r}; one of {', '.join(REFUSAL_KINDS)}")
        at = self.clock.now() if at is None else at
        scope = list or GLOBAL_SCOPE
        record = json.dumps({"kind": kind, "at": at, "channel": channel})
        results = await self._change(
            address, "refused", f"{kind} of {_scope(scope)} via {channel or '-'}", at,
            lambda p, a: p.hsetnx(self.keys.refusal(a), scope, record), scope)
        return bool(results[0])

    async def unrefuse(self, address: str, list: str | None = None) -> None:
        """Lift a refusal (a manual correction; audited)."""
        scope = list or GLOBAL_SCOPE
        await self._change(address, "unrefused", f"refusal of {_scope(scope)} lifted",
                           self.clock.now(),
                           lambda p, a: p.hdel(self.keys.refusal(a), scope), scope)

    async def engage(self, address: str, *, kind: str = "click", at: float | None = None) -> None:
        """An answer (open, click, reply…), kept per kind: the policy says which kinds count."""
        if kind not in ENGAGEMENT_KINDS:
            raise ValueError(f"unknown engagement kind {kind!r}; one of "
                             f"{', '.join(ENGAGEMENT_KINDS)}")
        at = self.clock.now() if at is None else at
        k = self.keys

        def writes(p: Any, a: str) -> None:
            # EVAL, not EVALSHA: it rides on the change's pipeline, and no script cache to miss.
            p.eval(ENGAGE, 2, k.engagement(a), k.sends(a), repr(at), kind, k.engaged_at(kind),
                   k.engaged_mark(kind), ENGAGED_AT, ENGAGED_MARK)

        await self._change(address, "engaged", kind, at, writes)

    # --- re-permission -----------------------------------------------------------------
    async def claim_repermission(self, address: str, stream: str, *, since: float | None,
                                 message_id: str, at: float | None = None) -> bool:
        """Take the stream's one re-permission message for ``message_id``; False if taken.

        ``since`` is the person's last counted engagement: a claim older than that is
        spent and a new one may be taken.
        """
        at = self.clock.now() if at is None else at
        try:
            won = await self._claim(keys=[self.keys.engagement(address)],
                                    args=[self.keys.repermission(stream), repr(since or 0.0),
                                          repr(at), message_id])
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return bool(won)

    async def unclaim_repermission(self, address: str, stream: str, message_id: str) -> None:
        """Give the claim back when its copy did not go out (best effort)."""
        try:
            await self._unclaim(keys=[self.keys.engagement(address)],
                                args=[self.keys.repermission(stream), message_id])
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def soft_bounce(self, address: str, *, event_id: str, window: float,
                          at: float | None = None, detail: str = "") -> int:
        """Count a soft bounce; returns how many fell within ``window`` seconds up to ``at``.

        The event id is the member, so a webhook's retry of one bounce counts once.
        """
        at = self.clock.now() if at is None else at

        def writes(p: Any, a: str) -> None:
            key = self.keys.soft_bounces(a)
            p.zadd(key, {event_id: at})
            p.zremrangebyscore(key, "-inf", f"({at - window!r}")
            p.zcount(key, at - window, "+inf")

        results = await self._change(address, "soft-bounce", detail or "soft bounce", at, writes)
        return int(results[2])

    async def set_preferences(self, address: str, *, paused_until: float | None = _UNSET,
                              timezone: str | None = _UNSET, off: Iterable[str] = _UNSET,
                              frequency: str | None = _UNSET) -> None:
        """Change only the fields given; None clears paused_until, timezone, frequency."""
        given: dict[str, str | None] = {}
        if paused_until is not _UNSET:
            given["paused_until"] = None if paused_until is None else repr(float(paused_until))
        if timezone is not _UNSET:
            if timezone is not None:
                try:
                    ZoneInfo(timezone)
                except (ZoneInfoNotFoundError, ValueError) as exc:
                    raise ValueError(f"unknown time zone {timezone!r}") from exc
            given["timezone"] = timezone
        if off is not _UNSET:
            given["off"] = json.dumps(sorted(str(o) for o in off))
        if frequency is not _UNSET:
            if frequency not in FREQUENCIES:
                raise ValueError(f"unknown frequency {frequency!r}; weekly, monthly or None")
            given["frequency"] = frequency
        values = {k: v for k, v in given.items() if v is not None}
        cleared = [k for k, v in given.items() if v is None]
        detail = "; ".join(f"{k} {v if v is not None else 'cleared'}" for k, v in given.items())

        def writes(p: Any, a: str) -> None:
            if values:
                p.hset(self.keys.prefs(a), mapping=values)
            if cleared:
                p.hdel(self.keys.prefs(a), *cleared)

        await self._change(address, "preferences", detail, self.clock.now(), writes)

    # --- import ------------------------------------------------------------------------
    async def import_consent_csv(self, source: Path | str | TextIO, *,
                                 source_default: str = "import") -> ImportReport:
        """Import ``email,list,granted_at,source,ip,text`` rows; bad rows reported by line."""
        if isinstance(source, str | Path):
            try:
                stream: TextIO = io.StringIO(Path(source).read_text(encoding="utf-8-sig"))
            except (OSError, UnicodeDecodeError) as exc:
                return ImportReport(0, [f"line 0: cannot read the file ({type(exc).__name__})"])
        else:
            stream = source
        report = ImportReport()
        reader = csv.reader(stream)
        try:
            header = [h.strip().lstrip("\ufeff").lower() for h in next(reader, [])]
        except csv.Error as exc:
            return ImportReport(0, [f"line 1: unreadable CSV ({exc})"])
        problem = _header_problem(header)
        if problem:
            return ImportReport(0, [f"line 1: {problem}"])
        batch: list[tuple[str, str, str]] = []
        try:
            for row in reader:
                line = reader.line_num
                if not any(c.strip() for c in row):
                    continue  # blank lines are not rows
                parsed = _row(header, row, self.clock.now(), source_default)
                if isinstance(parsed, str):
                    report.errors.append(f"line {line}: {parsed}")
                    continue
                batch.append(parsed)
                if len(batch) >= CSV_BATCH:
                    report.imported += await self._write_grants(batch)
                    batch = []
        except csv.Error as exc:
            report.errors.append(f"line {reader.line_num}: unreadable CSV ({exc}); stopped here")
        report.imported += await self._write_grants(batch)
        return report

    async def _write_grants(self, rows: Sequence[tuple[str, str, str]]) -> int:
        if not rows:
            return 0
        now = self.clock.now()
        try:
            pipe = self.redis.pipeline(transaction=False)
            for address, lst, proof in rows:
                pipe.hset(self.keys.consent(address), lst, proof)
                pipe.sadd(self.keys.people, address)
                rec = json.loads(proof)
                self.audit.add(pipe, [AuditEntry(
                    at=now, kind="change", recipient=address, outcome="granted", stream=lst,
                    detail="csv import; " + _proof(rec["source"], rec["ip"], rec["text"]))])
            await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return len(rows)


def _scope(scope: str) -> str:
    return "every list" if scope == GLOBAL_SCOPE else f"list {scope}"


def _proof(source: str, ip: str, text: str) -> str:
    return f"source {source or '-'}; ip {ip or '-'}; text {text or '-'}"


def _header_problem(header: list[str]) -> str:
    if not header:
        return f"empty file; the header must be {','.join(CSV_HEADER)}"
    missing = [c for c in ("email", "list") if c not in header]
    unknown = sorted(set(header) - set(CSV_HEADER))
    if missing:
        return f"header lacks {', '.join(missing)} (expected {','.join(CSV_HEADER)})"
    if unknown:
        return f"unknown columns {', '.join(unknown)} (expected {','.join(CSV_HEADER)})"
    if len(set(header)) != len(header):
        return "a column is named twice"
    return ""


def _row(header: list[str], row: list[str], now: float,
         source_default: str) -> tuple[str, str, str] | str:
    """A row as (address, list, proof JSON), or what is wrong with it."""
    if len(row) != len(header):
        return f"expected {len(header)} columns, got {len(row)}"
    rec = dict(zip(header, (c.strip() for c in row), strict=True))
    if not _ADDRESS.match(rec["email"].strip("<>")):
        return f"not an email address: {rec['email']!r}"
    if not rec["list"]:
        return "list is empty"
    try:
        at = parse_time(rec.get("granted_at", ""), now)
    except ValueError as exc:
        return f"bad granted_at {rec.get('granted_at')!r}: {exc}"
    proof = json.dumps({"list": rec["list"], "granted_at": at,
                        "source": rec.get("source") or source_default,
                        "ip": rec.get("ip", ""), "text": rec.get("text", "")},
                       ensure_ascii=False)
    return normalise_address(rec["email"]), rec["list"], proof


def parse_time(value: str, default: float) -> float:
    """ISO 8601 (UTC when no zone) or epoch seconds; empty means ``default``."""
    if not value:
        return default
    try:
        at = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("use ISO 8601 or epoch seconds") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        at = parsed.timestamp()
    if not math.isfinite(at) or at < 0:
        raise ValueError("not a time")
    if at > default + 86400:
        raise ValueError("in the future")  # a typo or a wrong zone, not a real agreement
    return at
