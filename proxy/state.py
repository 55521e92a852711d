"""Person state in Redis: consent with proof, refusals, engagement, sends, preferences."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from redis.exceptions import RedisError

from proxy.audit import Audit, AuditEntry
from proxy.clock import Clock
from proxy.consent_csv import ImportReport, proof_text, read_rows, write_grants
from proxy.consent_csv import parse_time as parse_time  # re-exported: events, webhooks
from proxy.durable.mirror import MirroredRedis
from proxy.errors import StateUnavailable
from proxy.keys import ENGAGED_AT, ENGAGED_MARK, Keys, domain_of, normalise_address, suppression_id
from proxy.keys import is_address as is_address  # re-exported: events, API, bounces
from proxy.person import json_record, person, text_of
from proxy.scripts import COUNT_SEND, READ_PERSON, READ_PERSON_KEYS
from proxy.signals.engagement import CLAIM, ENGAGE, UNCLAIM
from proxy.tell.comeback import lift, rejoin, resubscribe, unsubscribe_to_lift
from proxy.tell.outbox import Event, note
from proxy.types import (
    ENGAGEMENT_KINDS,
    GLOBAL_SCOPE,
    REFUSAL_KINDS,
    PersonState,
)

SEND_WINDOW = 35 * 86400.0  # caps look back at most a month (31 days); the rest is margin
CSV_BATCH = 500  # rows per Redis round trip
FREQUENCIES = (None, "weekly", "monthly")
# The domain guard's longest window plus pause (proxy/policy/conditions.py); complaints
# older than this are trimmed from a domain's set.
GUARD_LOOKBACK = 62 * 86400.0
_UNSET: Any = object()


class State:
    """Reads one person in one round trip; every write leaves an audit "change" entry."""

    def __init__(self, redis: Any, keys: Keys, clock: Clock, *, secret: bytes = b"",
                 audit: Audit | None = None) -> None:
        """``secret`` keys the suppression digests of erased addresses (see proxy/privacy.py);
        ``audit`` is where changes are recorded (default: the trail's default retention)."""
        self.redis = redis
        # Snapshots only read: past the durable mirror, straight to the serving Redis.
        self.reads = redis.inner if isinstance(redis, MirroredRedis) else redis
        self.keys = keys
        self.clock = clock
        self.secret = secret
        self.audit = audit or Audit(redis, keys)
        self._claim = redis.register_script(CLAIM)
        self._unclaim = redis.register_script(UNCLAIM)

    # --- reading --------------------------------------------------------------------
    async def snapshot(self, address: str, *, domains: bool = False) -> PersonState:
        """Everything the engine reads about one address: one pipeline, one round trip."""
        return (await self.snapshots([address], domains=domains))[0]

    async def snapshots(self, addresses: Sequence[str], *,
                        domains: bool = False) -> list[PersonState]:
        """Several people in one round trip (one non-transactional pipeline).

        ``domains`` adds each address's domain complaints (for a policy with a domain
        guard): the same round trip, but on a Cluster another slot (the domain's).
        """
        if not addresses:
            return []
        now = self.clock.now()
        since, guard_since = now - SEND_WINDOW, now - GUARD_LOOKBACK
        norm = [normalise_address(a) for a in addresses]
        # Each receiving domain's complaints once, however many of its people are here.
        doms = list(dict.fromkeys(domain_of(a) for a in norm)) if domains else []
        k = self.keys
        try:
            pipe = self.reads.pipeline(transaction=False)
            for a in norm:
                # One script for the person's five keys (one slot): one command to pack
                # and parse here instead of five (proxy/scripts.py).
                pipe.eval(READ_PERSON, READ_PERSON_KEYS, k.consent(a), k.refusal(a),
                          k.engagement(a), k.prefs(a), k.sends(a), repr(since))
            for d in doms:
                pipe.zrangebyscore(k.domain_complaints(d), guard_since, "+inf", withscores=True)
            # Erased addresses: one command for the whole batch, in the same round trip.
            pipe.smismember(k.suppressed, [self.suppression_id(a) for a in norm])
            raw = await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        people, flags = raw[:len(norm)], raw[-1]
        complaints = dict(zip(doms, raw[len(norm):-1], strict=True))
        out = []
        for a, (consent, refusal, engage, prefs, sends), flag in zip(norm, people, flags,
                                                                     strict=True):
            out.append(person(a, consent, refusal, engage, prefs, sends,
                              complaints.get(domain_of(a)), suppressed=flag))
        return out

    def suppression_id(self, address: str) -> str:
        """The digest an erased ``address`` is kept under in the suppression set."""
        return suppression_id(self.secret, address)

    # --- the hot path's write (queued on the caller's pipeline) ---------------------
    def record_sends(self, pipe: Any, stream: str, addresses: Iterable[str],
                     at: float) -> dict[str, str]:
        """Count a delivered copy: silence counters and the send history for caps.

        Returns each address's member in the send history, for ``unrecord_sends``."""
        k = self.keys
        first, window = repr(at), f"({at - SEND_WINDOW!r}"
        members: dict[str, str] = {}
        people = []
        for address in addresses:
            a = normalise_address(address)
            # One ZSET for every stream: a snapshot reads all caps with one command.
            # 48 random bits keep two sends of one instant apart (a uuid4's first 12
            # hex digits, without building the UUID).
            members[address] = member = f"{stream}|{os.urandom(6).hex()}"
            # Counters, first send and the send history in one script (proxy/scripts.py).
            pipe.eval(COUNT_SEND, 2, k.engagement(a), k.sends(a), first, member, window)
            people.append(a)
        if people:
            pipe.sadd(k.people, *people)
        return members

    def unrecord_sends(self, pipe: Any, members: dict[str, str]) -> None:
        """Take back sends counted before the upstream answered, for copies it did not take."""
        for address, member in members.items():
            a = normalise_address(address)
            pipe.hincrby(self.keys.engagement(a), "sends_since", -1)
            pipe.hincrby(self.keys.engagement(a), "total_sends", -1)
            pipe.zrem(self.keys.sends(a), member)

    # --- audited changes -------------------------------------------------------------
    async def _change(self, address: str, outcome: str, detail: str, at: float,
                      writes: Callable[[Any, str], None], stream: str = "",
                      event: Event | None = None,
                      then: Callable[[Any, str], None] | None = None,
                      behind: bool = False) -> list[Any]:
        """Apply ``writes`` with its audit entry (and the tool's outbox ``event``, if any).

        ``behind``: the caller need not wait (a click's record); with the group-commit
        client's write-behind (``redis.write_behind``) it rides on the next round trip
        and this returns no replies.
        """
        a = normalise_address(address)
        entry = AuditEntry(at=at, kind="change", recipient=a, outcome=outcome, stream=stream,
                           detail=detail)
        try:
            # Not MULTI: the global audit stream and people set live in other Cluster slots.
            pipe = self.redis.pipeline(transaction=False)
            writes(pipe, a)
            pipe.sadd(self.keys.people, a)
            self.audit.add(pipe, [entry])
            if event is not None:  # what the tool must hear, in the same round trip
                note(pipe, self.keys, replace(event, address=a, at=at))
            if then is not None:  # writes recorded after this change (their own audit)
                then(pipe, a)
            if behind and hasattr(pipe, "execute_behind"):
                await pipe.execute_behind(f"a change ({outcome})")
                return []
            return list(await pipe.execute())
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def grant(self, address: str, list: str, *, source: str = "", ip: str = "",
                    text: str = "", at: float | None = None) -> None:
        """Record consent with its proof (when, from where, from which IP, to what wording)."""
        at = self.clock.now() if at is None else at
        record = json.dumps({"list": list, "granted_at": at, "source": source, "ip": ip,
                             "text": text}, ensure_ascii=False)
        # A newer consent with proof lifts an older unsubscribe of the list (docs/tell.md).
        old = await unsubscribe_to_lift(self, normalise_address(address), list, at, source,
                                        text)
        await self._change(address, "granted", proof_text(source, ip, text), at,
                           lambda p, a: p.hset(self.keys.consent(a), list, record), list,
                           Event("consent.granted", list=list, channel=source),
                           then=None if old is None else
                           lambda p, a: resubscribe(self, p, a, list, old, at, source))

    async def revoke(self, address: str, list: str, *, source: str = "",
                     at: float | None = None) -> None:
        """Withdraw consent; the grant's proof stays, marked revoked, as proof of both."""
        at = self.clock.now() if at is None else at
        try:
            raw = await self.redis.hget(self.keys.consent(address), list)
            old = json_record(text_of(raw or "{}"))
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
                           list, Event("consent.revoked", list=list, channel=source))

    async def refuse(self, address: str, kind: str, *, list: str | None = None,
                     channel: str = "", at: float | None = None) -> bool:
        """Record a no; True if it is new. The first refusal of a scope keeps its time."""
        if kind not in REFUSAL_KINDS:
            raise ValueError(f"unknown refusal kind {kind!r}; one of {', '.join(REFUSAL_KINDS)}")
        at = self.clock.now() if at is None else at
        scope = list or GLOBAL_SCOPE
        record = json.dumps({"kind": kind, "at": at, "channel": channel})

        def writes(p: Any, a: str) -> None:
            p.hsetnx(self.keys.refusal(a), scope, record)
            if kind == "complaint":
                # Every complaint source (ARF, webhooks, API, CLI) passes here: the domain
                # guard counts people, so a repeat keeps the first time (NX).
                key = self.keys.domain_complaints(domain_of(a))
                p.zadd(key, {a: at}, nx=True)
                p.zremrangebyscore(key, "-inf", f"({at - GUARD_LOOKBACK!r}")

        results = await self._change(
            address, "refused", f"{kind} of {_scope(scope)} via {channel or '-'}", at,
            writes, scope, Event("refusal.created", list=scope, kind=kind, channel=channel))
        return bool(results[0])

    async def lift(self, address: str, list: str | None, reason: str) -> Sequence[str]:
        """Lift a refusal (and, for every list, an erasure) by hand; audited, with a reason."""
        return await lift(self, address, list, reason)

    async def rejoin(self, address: str, list: str | None, how: str) -> bool:
        """The person lifts their own unsubscribe (never a complaint or bounce); audited."""
        return await rejoin(self, address, list, how)

    async def engage(self, address: str, *, kind: str = "click", at: float | None = None,
                     source: str = "", why: str = "", stream: str = "",
                     behind: bool = False) -> None:
        """An answer (open, click, reply…), kept per kind: the policy says which kinds count.

        ``source`` is how heed heard it (tracked link, reply, webhook, api, import, …),
        ``why`` a note for people (why a click was taken for a machine's) and ``stream`` the
        stream of the copy answered, when known: all three are audited. ``behind``: written
        behind the reply (see ``_change``).
        """
        if kind not in ENGAGEMENT_KINDS:
            raise ValueError(f"unknown engagement kind {kind!r}; one of "
                             f"{', '.join(ENGAGEMENT_KINDS)}")
        at = self.clock.now() if at is None else at
        k = self.keys

        def writes(p: Any, a: str) -> None:
            # EVAL, not EVALSHA: it rides on the change's pipeline, and no script cache to miss.
            p.eval(ENGAGE, 2, k.engagement(a), k.sends(a), repr(at), kind, k.engaged_at(kind),
                   k.engaged_mark(kind), ENGAGED_AT, ENGAGED_MARK)

        detail = kind + (f" via {source}" if source else "") + (f" ({why})" if why else "")
        await self._change(address, "engaged", detail, at, writes, stream, behind=behind)

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

        await self._change(address, "preferences", detail, self.clock.now(), writes, "",
                           Event("preferences.changed", data={
                               k: json.loads(v) if k == "off" and v else v
                               for k, v in given.items()}))

    # --- import ------------------------------------------------------------------------
    async def import_consent_csv(self, source: Path | str | TextIO, *,
                                 source_default: str = "import") -> ImportReport:
        """Import ``email,list,granted_at,source,ip,text`` rows; bad rows reported by line."""
        report = ImportReport()
        batch: list[tuple[str, str, str]] = []
        for parsed in read_rows(source, self.clock.now, source_default, report):
            batch.append(parsed)
            if len(batch) >= CSV_BATCH:
                report.imported += await write_grants(self, batch)
                batch = []
        report.imported += await write_grants(self, batch)
        return report


def _scope(scope: str) -> str:
    return "every list" if scope == GLOBAL_SCOPE else f"list {scope}"


