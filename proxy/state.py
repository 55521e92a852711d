"""Person state in Redis: consent with proof, refusals, engagement, sends, preferences."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from proxy.audit import Audit, AuditEntry
from proxy.clock import Clock
from proxy.errors import StateUnavailable
from proxy.keys import Keys, normalise_address
from proxy.types import (
    GLOBAL_SCOPE,
    REFUSAL_KINDS,
    Consent,
    PersonState,
    Preferences,
    Refusal,
)

SEND_WINDOW = 35 * 86400.0  # caps look back at most a month (31 days) plus margin
CSV_HEADER = ("email", "list", "granted_at", "source", "ip", "text")
_ADDRESS = re.compile(r"^[^\s@<>\x00-\x1f]+@[^\s@<>\x00-\x1f]+\.[^\s@<>\x00-\x1f]+$")


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[str] = field(default_factory=list)  # "line N: message"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode_hash(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (raw or {}).items()}


class State:
    """Reads one person in one round trip; writes audited changes."""

    def __init__(self, redis: Any, keys: Keys, clock: Clock) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.audit = Audit(redis, keys)

    # --- reading -----------------------------------------------------------------
    def _queue_reads(self, pipe: Any, address: str, now: float) -> None:
        k = self.keys
        pipe.hgetall(k.consent(address))
        pipe.hgetall(k.refusal(address))
        pipe.hgetall(k.engagement(address))
        pipe.hgetall(k.prefs(address))
        pipe.zrangebyscore(k.sends(address), now - SEND_WINDOW, "+inf", withscores=True)

    @staticmethod
    def _build(address: str, consent: Any, refusal: Any, engage: Any, prefs: Any,
               sends: Any) -> PersonState:
        consents = {}
        for lst, raw in _decode_hash(consent).items():
            rec = json.loads(raw)
            if rec.get("revoked_at") is None:
                consents[lst] = Consent(lst, float(rec["granted_at"]), rec.get("source", ""),
                                        rec.get("ip", ""), rec.get("text", ""))
        refusals = {}
        for scope, raw in _decode_hash(refusal).items():
            rec = json.loads(raw)
            refusals[scope] = Refusal(scope, rec["kind"], float(rec["at"]), rec.get("channel", ""))
        eng = _decode_hash(engage)
        pr = _decode_hash(prefs)
        by_stream: dict[str, list[float]] = {}
        for member, score in sends or []:
            by_stream.setdefault(_s(member).split("|", 1)[0], []).append(float(score))
        return PersonState(
            address=address,
            consents=consents,
            refusals=refusals,
            last_engaged=float(eng["last_engaged"]) if "last_engaged" in eng else None,
            sends_since_engagement=int(eng.get("sends_since", 0)),
            first_send=float(eng["first_send"]) if "first_send" in eng else None,
            sends={s: tuple(sorted(t)) for s, t in by_stream.items()},
            prefs=Preferences(
                paused_until=float(pr["paused_until"]) if pr.get("paused_until") else None,
                timezone=pr.get("timezone") or None,
                off=frozenset(json.loads(pr.get("off", "[]"))),
                frequency=pr.get("frequency") or None,
            ),
        )

    async def snapshot(self, address: str) -> PersonState:
        """Everything the engine reads about one address: one pipeline, one round trip."""
        return (await self.snapshots([address]))[0]

    async def snapshots(self, addresses: Sequence[str]) -> list[PersonState]:
        """Several people in one round trip (one non-transactional pipeline)."""
        now = self.clock.now()
        norm = [normalise_address(a) for a in addresses]
        try:
            pipe = self.redis.pipeline(transaction=False)
            for a in norm:
                self._queue_reads(pipe, a, now)
            raw = await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return [self._build(a, *raw[i * 5:(i + 1) * 5]) for i, a in enumerate(norm)]

    # --- the hot path's write (added to the caller's pipeline) -----------------------
    def record_sends(self, pipe: Any, stream: str, addresses: Sequence[str], at: float) -> None:
        """Count a delivered copy: silence counters and the send history for caps."""
        for address in addresses:
            k = self.keys
            a = normalise_address(address)
            pipe.hincrby(k.engagement(a), "sends_since", 1)
            pipe.hincrby(k.engagement(a), "total_sends", 1)
            pipe.hsetnx(k.engagement(a), "first_send", repr(at))
            pipe.zadd(k.sends(a), {f"{stream}|{uuid.uuid4().hex[:12]}": at})
            pipe.zremrangebyscore(k.sends(a), "-inf", at - SEND_WINDOW)
            pipe.sadd(k.people, a)

    # --- audited changes ---------------------------------------------------------------
    async def _change(self, address: str, outcome: str, detail: str, at: float,
                      writes: Any, stream: str = "") -> None:
        a = normalise_address(address)
        try:
            pipe = self.redis.pipeline(transaction=True)
            writes(pipe, a)
            pipe.sadd(self.keys.people, a)
            self.audit.add(pipe, [AuditEntry(at=at, kind="change", recipient=a, outcome=outcome,
                                             stream=stream, detail=detail)])
            await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def grant(self, address: str, list: str, *, source: str = "", ip: str = "",
                    text: str = "", at: float | None = None) -> None:
        """Record consent with its proof (who, when, from where, to what wording)."""
        at = self.clock.now() if at is None else at
        record = json.dumps({"list": list, "granted_at": at, "source": source, "ip": ip,
                             "text": text})
        await self._change(address, "granted", f"list {list}; source {source or '-'}; "
                           f"ip {ip or '-'}; text {text or '-'}", at,
                           lambda p, a: p.hset(self.keys.consent(a), list, record), list)

    async def revoke(self, address: str, list: str, *, source: str = "",
                     at: float | None = None) -> None:
        """Withdraw consent; the old record stays, marked revoked, as proof of both."""
        at = self.clock.now() if at is None else at
        snap = await self.snapshot(address)
        old = snap.consents.get(list)
        record = {"list": list, "granted_at": old.granted_at if old else None,
                  "source": old.source if old else "", "ip": old.ip if old else "",
                  "text": old.text if old else "", "revoked_at": at, "revoked_by": source}
        await self._change(address, "revoked", f"list {list}; source {source or '-'}", at,
                           lambda p, a: p.hset(self.keys.consent(a), list, json.dumps(record)),
                           list)

    async def refuse(self, address: str, kind: str, *, list: str | None = None,
                     channel: str = "", at: float | None = None) -> None:
        """Record a no. Idempotent: the first refusal of a scope keeps its time."""
        if kind not in REFUSAL_KINDS:
            raise ValueError(f"unknown refusal kind {kind!r}")
        at = self.clock.now() if at is None else at
        scope = list or GLOBAL_SCOPE
        record = json.dumps({"kind": kind, "at": at, "channel": channel})
        await self._change(address, "refused", f"{kind} of {scope if list else 'every list'} "
                           f"via {channel or '-'}", at,
                           lambda p, a: p.hsetnx(self.keys.refusal(a), scope, record), scope)

    async def unrefuse(self, address: str, list: str | None = None) -> None:
        """Remove a refusal (manual correction; audited)."""
        scope = list or GLOBAL_SCOPE
        await self._change(address, "unrefused", f"scope {scope}", self.clock.now(),
                           lambda p, a: p.hdel(self.keys.refusal(a), scope), scope)

    async def engage(self, address: str, *, kind: str = "click", at: float | None = None) -> None:
        """An answer: resets the silence counter."""
        at = self.clock.now() if at is None else at

        def writes(p: Any, a: str) -> None:
            p.hset(self.keys.engagement(a), mapping={"last_engaged": repr(at), "sends_since": 0,
                                                     "last_kind": kind})

        await self._change(address, "engaged", kind, at, writes)

    async def set_preferences(self, address: str, **changes: Any) -> None:
        """Change only the given fields: paused_until, timezone, off (a set), frequency."""
        values = {}
        for name, value in changes.items():
            if name not in ("paused_until", "timezone", "off", "frequency"):
                raise ValueError(f"unknown preference {name!r}")
            values[name] = json.dumps(sorted(value)) if name == "off" else (
                "" if value is None else str(value))
        await self._change(address, "preferences", json.dumps(changes, default=list),
                           self.clock.now(),
                           lambda p, a: p.hset(self.keys.prefs(a), mapping=values))

    # --- import ------------------------------------------------------------------------------
    async def import_consent_csv(self, source: Path | io.TextIOBase,
                                 *, source_default: str = "import") -> ImportReport:
        """Import ``email,list,granted_at,source,ip,text`` rows; bad rows reported by line."""
        if isinstance(source, Path):
            try:
                text = source.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                return ImportReport(0, [f"line 0: cannot read file: {exc}"])
            stream: Any = io.StringIO(text)
        else:
            stream = source
        report = ImportReport()
        reader = csv.reader(stream)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header][:2] != ["email", "list"]:
            report.errors.append(f"line 1: header must be {','.join(CSV_HEADER)}")
            return report
        cols = [h.strip().lower() for h in header]
        unknown = set(cols) - set(CSV_HEADER)
        if unknown:
            report.errors.append(f"line 1: unknown columns {', '.join(sorted(unknown))}")
            return report
        rows: list[tuple[str, str, str]] = []
        for row in reader:
            line = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if len(row) != len(cols):
                report.errors.append(f"line {line}: expected {len(cols)} columns, got {len(row)}")
                continue
            rec = dict(zip(cols, (c.strip() for c in row), strict=True))
            email_ = normalise_address(rec["email"])
            if not _ADDRESS.match(email_):
                report.errors.append(f"line {line}: not an email address: {rec['email']!r}")
                continue
            if not rec["list"]:
                report.errors.append(f"line {line}: list is empty")
                continue
            try:
                at = _parse_time(rec.get("granted_at", ""), self.clock.now())
            except ValueError:
                report.errors.append(f"line {line}: bad granted_at {rec.get('granted_at')!r} "
                                     "(ISO 8601 or epoch seconds)")
                continue
            proof = json.dumps({"list": rec["list"], "granted_at": at,
                                "source": rec.get("source") or source_default,
                                "ip": rec.get("ip", ""), "text": rec.get("text", "")})
            rows.append((email_, rec["list"], proof))
        for i in range(0, len(rows), 500):
            try:
                pipe = self.redis.pipeline(transaction=False)
                for email_, lst, proof in rows[i:i + 500]:
                    pipe.hset(self.keys.consent(email_), lst, proof)
                    pipe.sadd(self.keys.people, email_)
                    self.audit.add(pipe, [AuditEntry(at=self.clock.now(), kind="change",
                                                     recipient=email_, outcome="granted",
                                                     stream=lst, detail="csv import")])
                await pipe.execute()
            except RedisError as exc:
                raise StateUnavailable("redis unavailable") from exc
            report.imported += len(rows[i:i + 500])
        return report


def _parse_time(value: str, default: float) -> float:
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
