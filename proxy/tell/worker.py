"""The tell worker inside `heed serve`: outbox entries become jobs, due jobs are sent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import socket
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from proxy.audit import Audit, AuditEntry
from proxy.clock import Clock
from proxy.errors import StateUnavailable, UpstreamError
from proxy.keys import Keys
from proxy.policy_store import PolicyStore
from proxy.settings import TellSettings
from proxy.state import State
from proxy.stopping import sleep, stopped, unless_stopped
from proxy.tell.jobs import Job, Jobs, job_id
from proxy.tell.lifecycle import lifecycle_pass
from proxy.tell.mailto import BadMailto, unsubscribe_mail
from proxy.tell.offer import Offer
from proxy.tell.oneclick import OneClick, Outcome
from proxy.tell.outbox import Event, Outbox
from proxy.tell.webhook import WebhookSender, payload
from proxy.types import GLOBAL_SCOPE

log = logging.getLogger("heed.tell")
BATCH = 50  # jobs per round
# Outbox entries per round: read, decoded and expanded in one step of the loop when
# they make no job (no webhook, no sync-back); 50 made steps of up to 9 ms of CPU on a
# busy machine while heed drained an import's consent.granted events (bench.latency
# --watch-ms, 3 Dec 2026). A busy outbox is drained round after round without a wait.
OUTBOX_BATCH = 20
BLOCK_MAX = 2.0  # longest outbox wait: under the Redis client's 3 s read timeout
# The job counts for /metrics are read this often (and after a round that sent): the
# queue's gauges are as fresh (proxy/app.py), and an idle worker need not read them a second.
GAUGES_EVERY = 5.0
PLAIN = "plain https link without one-click: not fetched (a GET is not an unsubscribe, RFC 8058)"
NO_LINK = "no unsubscribe link of the tool kept for this person and list"
OFF = "sync_back is off for this list's stream"
STATUS = "list:"  # list:<list> -> "told <time>" | "not-told <time>" in the person's told hash


class Upstream(Protocol):
    async def send(self, sender: str, recipients: Sequence[str],
                   data: bytes) -> dict[str, tuple[int, str]]: ...


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def mark(target: str) -> str:
    """The field of a link in the person's told hash (the link itself is not repeated)."""
    return "link:" + hashlib.sha256(target.encode()).hexdigest()[:16]


class Teller:
    """Turns changes into jobs and sends them; several workers share the queue safely."""

    def __init__(self, *, redis: Any, keys: Keys, clock: Clock, settings: TellSettings,
                 policies: PolicyStore, upstream: Upstream, audit: Audit, sender: str,
                 hostname: str, metrics: Any = None) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.settings = settings
        self.policies = policies
        self.upstream = upstream
        self.audit = audit
        self.sender = sender
        self.hostname = hostname
        self.metrics = metrics
        self.jobs = Jobs(redis, keys)
        self.outbox = Outbox(redis, keys, f"{socket.gethostname()}-{os.getpid()}-{id(self):x}")
        self.oneclick = OneClick(settings.allow, settings.timeout)
        self.webhooks = WebhookSender(settings.webhooks, settings.timeout)
        self.expanded = 0  # outbox entries turned into jobs by this worker
        self.people = State(redis, keys, clock)  # the lifecycle pass's reads
        self._next_pass = 0.0
        # An idle worker wakes on work, not on a timer: a new outbox entry ends its
        # XREADGROUP BLOCK; the jobs it made, and the retries it set, come due at times
        # it knows (``_due``, also learnt from each claim: the first job left). Only what a
        # dead worker left (its outbox entries, its claims, jobs it made and never
        # claimed) is looked for on a timer, every quarter lease (``_recover_at``): it is
        # taken over within tell.lease plus a quarter of it.
        self._due = 0.0
        self._recover_at = 0.0
        self._gauges_at = 0.0
        self._stop: asyncio.Event | None = None  # run()'s: it ends an idle wait at once

    # --- outbox -> jobs --------------------------------------------------------------
    async def expand(self, event: Event) -> None:
        """Every job one change makes: sync-back requests, then a webhook per endpoint."""
        now = self.clock.now()
        if event.address and event.type in ("refusal.created", "preferences.changed"):
            await self._sync_back(event, now)
        body = payload(event)
        for url, _secrets in self.settings.webhooks:
            await self._make(Job(job_id(event.id, "webhook", url), "webhook", url, event.id,
                                 event.address, event.list, event.at, body, created=now), now)

    async def _make(self, job: Job, now: float) -> None:
        """Make ``job``, due ``now``: this round claims it."""
        self._due = min(self._due, now)
        await self.jobs.make(job, now)

    async def _sync_back(self, event: Event, now: float) -> None:
        a = event.address
        refusal, offers, told = await self._read(a, event.list or GLOBAL_SCOPE, now)
        is_refusal = event.type == "refusal.created"
        # A repeat keeps the first refusal's time (HSETNX), and a lifted one is gone:
        # only the refusal this event recorded is told, once.
        if is_refusal and (refusal is None or refusal.get("at") != event.at):
            return
        policy = self.policies.current
        syncing = {s.list for s in policy.streams.values() if s.sync_back}
        notes: list[AuditEntry] = []
        for lst in _lists(event, offers, policy):
            offer = offers.get(lst)
            link = _link(offer) if lst in syncing else None
            if link is None:
                if is_refusal:
                    why = OFF if lst not in syncing and lst != GLOBAL_SCOPE else (
                        NO_LINK if offer is None else PLAIN)
                    notes.append(self._note(a, lst, "tool-not-told", why, event.at, now))
                continue
            kind, target = link
            if mark(target) in told:
                continue  # told through this link already: one request per link
            await self._make(Job(job_id(event.id, kind, target), kind, target, event.id, a, lst,
                                 event.at, created=now), now)
            try:
                await self.redis.hset(self.keys.tool_told(a), mapping={
                    mark(target): repr(now), STATUS + lst: f"pending {now!r}"})
            except RedisError as exc:
                raise StateUnavailable("redis unavailable") from exc
        await self._record(notes)

    async def _read(self, a: str, scope: str, now: float
                    ) -> tuple[dict[str, Any] | None, dict[str, Offer], set[str]]:
        """The person's refusal of ``scope``, the tool's links still fresh, the links told."""
        k = self.keys
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hget(k.refusal(a), scope)
            pipe.hgetall(k.tool_offers(a))
            pipe.hgetall(k.tool_told(a))
            raw_refusal, raw_offers, raw_told = await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        try:
            refusal = json.loads(_s(raw_refusal)) if raw_refusal else None
        except ValueError:
            refusal = None
        offers: dict[str, Offer] = {}
        for lst, text in (raw_offers or {}).items():
            got = Offer.from_json(_s(text))
            if got is not None and now - got[1] <= self.settings.offer_ttl:
                offers[_s(lst)] = got[0]
        return (refusal if isinstance(refusal, dict) else None, offers,
                {_s(f) for f in (raw_told or {})})

    def _note(self, address: str, lst: str, outcome: str, detail: str, refused_at: float,
              now: float) -> AuditEntry:
        return AuditEntry(at=now, kind="change", recipient=address, outcome=outcome, stream=lst,
                          detail=detail, reasons=(f"refused_at={refused_at!r}",))

    async def _record(self, notes: Sequence[AuditEntry]) -> None:
        """The person's audit entries and, per list, the word the export shows."""
        if not notes:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            self.audit.add(pipe, notes)
            for n in notes:
                pipe.hset(self.keys.tool_told(n.recipient), STATUS + n.stream,
                          f"{n.outcome.removeprefix('tool-')} {n.at!r}")
            await pipe.execute()
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    # --- jobs -> requests --------------------------------------------------------------
    async def send(self, job: Job) -> Outcome:
        if job.kind == "one-click":
            return await self.oneclick.post(job.target)
        if job.kind == "mailto":
            return await self._mail(job)
        if job.kind == "webhook":
            return await self.webhooks.send(job.target, job.event, job.body, self.clock.now())
        return Outcome(False, detail=f"unknown job kind {job.kind!r}")

    async def _mail(self, job: Job) -> Outcome:
        try:
            to, data = unsubscribe_mail(job.target, self.sender, job.id, self.clock.now(),
                                        self.hostname)
        except BadMailto as exc:
            return Outcome(False, detail=str(exc))
        try:
            refused = await self.upstream.send(self.sender, [to], data)
        except UpstreamError as exc:
            return Outcome(False, retry=exc.temporary, detail=f"{exc.code} {exc.message}")
        if to in refused:
            code, text = refused[to]
            return Outcome(False, retry=code < 500, detail=f"{code} {text}")
        return Outcome(True, detail=f"mail to {to} accepted upstream")

    async def _finish(self, job: Job, outcome: Outcome) -> None:
        now = self.clock.now()
        attempt = job.attempts + 1
        if outcome.ok:
            ended = await self.jobs.end(job, "sent", now, outcome.detail)
            if ended and job.kind != "webhook":
                await self._record([self._note(
                    job.address, job.scope, "tool-told",
                    f"{job.kind} to {_where(job)}: {outcome.detail}", job.refused_at, now)])
            return
        if outcome.retry and attempt < self.settings.max_attempts:
            delays = self.settings.backoff
            due = now + delays[min(attempt - 1, len(delays) - 1)]
            await self.jobs.retry(job, due, outcome.detail)
            self._due = min(self._due, due)
            return
        why = f"given up after {attempt} attempt(s): {outcome.detail}"
        log.warning("tell job %s (%s to %s) %s", job.id, job.kind, _where(job), why)
        if await self.jobs.end(job, "dead", now, outcome.detail) and job.kind != "webhook":
            await self._record([self._note(job.address, job.scope, "tool-not-told",
                                                f"{job.kind} to {_where(job)} {why}",
                                                job.refused_at, now)])

    # --- the loop -----------------------------------------------------------------------
    async def run_once(self, wait: float = 0.0) -> int:
        """One round: expand the outbox (waiting up to ``wait`` seconds for an entry, less
        when a job comes due sooner), then send what is due. Returns the jobs handled."""
        now = self.clock.now()
        every = max(self.settings.poll_interval, self.settings.lease / 4)
        recover = not now < self._recover_at <= now + every  # also when the clock went back
        if recover:
            self._recover_at = now + every
        wait = max(0.0, min(wait, self._due - now, self._recover_at - now))
        taking = self.outbox.take(OUTBOX_BATCH, self.settings.lease, wait, stale=recover)
        # An entry the cancelled read took stays pending: taken over after the lease.
        entries = await (unless_stopped(self._stop, taking, []) if wait else taking)
        handled = []
        for entry_id, event in entries:
            try:
                await self.expand(event)
            except StateUnavailable:
                break  # the rest stay pending: taken over again after the lease
            except Exception:  # noqa: BLE001 - one unreadable entry must not stop the others
                log.exception("outbox entry %s (%s) could not be turned into jobs; dropped",
                              entry_id, event.type)
            handled.append(entry_id)
        await self.outbox.done(handled)
        self.expanded += len(handled)
        now = self.clock.now()
        if not recover and now < self._due:
            return 0  # no entry made a job, none is due, nothing to take over: no need to look
        jobs, first = await self.jobs.claim_due(now, BATCH, self.settings.lease, recover)
        self._due = math.inf if first is None else first
        if not jobs:
            return 0
        # return_exceptions: one job that raises must not leave the whole batch unfinished
        # (claimed again after the lease, raising again: every "no" behind it stalled).
        results = await asyncio.gather(*(self.send(j) for j in jobs), return_exceptions=True)
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation
                log.error("tell job %s (%s) raised", job.id, job.kind, exc_info=result)
                result = Outcome(False, retry=True, detail=f"{type(result).__name__}: {result}"
                                 [:300])
            await self._finish(job, result)
        return len(jobs)

    async def lifecycle(self) -> int:
        """The lifecycle pass, when due (a period after the last complete one began, or
        never made) and no other worker is making it; returns the events it wrote."""
        every, now = self.settings.lifecycle_every, self.clock.now()
        if every <= 0 or now < self._next_pass:
            return 0
        k = self.keys
        try:
            last = await self.redis.get(k.tell_lifecycle_last)
            due = _float(last) + every if last is not None else now
            if now < due:  # a restart within the period: the pass waits for its time
                self._next_pass = due
                return 0
            # The lock lasts a period: a pass that fails half-way is made again after it.
            mine = await self.redis.set(k.tell_lifecycle_lock, self.outbox.consumer,
                                        nx=True, ex=max(1, int(every)))
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        if not mine:  # another worker's pass: look again (for its end) at the next tick
            return 0
        self._next_pass = now + every
        events = await lifecycle_pass(self.people, self.policies.current, now, self._stop)
        if self._stop is not None and self._stop.is_set():
            return events  # cut short: not made, made again once the lock ends
        try:
            await self.redis.set(k.tell_lifecycle_last, repr(now))
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        return events

    async def _round(self, wait: float) -> int:
        """run_once, plus the entries it expanded (a busy outbox is drained without a wait);
        the job gauges after it, when it sent or they are GAUGES_EVERY old."""
        before = self.expanded
        done = await self.run_once(wait)
        now = self.clock.now()
        if done or now >= self._gauges_at:
            self._gauges_at = now + GAUGES_EVERY
            await self.refresh_gauges()
        return done + self.expanded - before

    async def refresh_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.set_tell(await self.jobs.stats())

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``: an idle round blocks on the outbox (a new refusal wakes
        it) until the next job comes due, the next look for a dead worker's work, or
        BLOCK_MAX."""
        busy = 0
        self._stop = stop
        # Beside the rounds, not in them: a pass over every person must not hold up a "no".
        passes = asyncio.create_task(self._lifecycle_loop(stop))
        while not stop.is_set():
            try:
                busy = await self._round(0.0 if busy else BLOCK_MAX)
            except Exception as exc:  # noqa: BLE001 - the worker must outlive a Redis hiccup
                if stopped(stop, "tell round", exc, log):
                    break
                log.warning("tell round failed; trying again", exc_info=True)
                busy = 0
                await sleep(stop, self.settings.poll_interval)
        await passes

    async def _lifecycle_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.lifecycle()
            except Exception as exc:  # noqa: BLE001 - the next period tries again
                if not stopped(stop, "lifecycle pass", exc, log):
                    log.warning("lifecycle pass failed", exc_info=True)
            await sleep(stop, max(1.0, min(60.0, self.settings.lifecycle_every or 60.0)))

    async def close(self) -> None:
        await self.oneclick.close()
        await self.webhooks.close()


def _float(value: Any) -> float:
    try:
        return float(_s(value))
    except ValueError:
        return 0.0  # unreadable: as if long ago, so the pass is due


def _lists(event: Event, offers: dict[str, Offer], policy: Any) -> list[str]:
    """The lists whose tool links this event concerns."""
    if event.type == "preferences.changed":  # streams (or lists) switched off
        named = event.data.get("off") or []
        return sorted({policy.streams[n].list if n in policy.streams else n
                       for n in named if isinstance(n, str)} & set(offers))
    scope = event.list or GLOBAL_SCOPE
    if scope == GLOBAL_SCOPE:  # every list the tool gave this person a link for
        return sorted(offers) or [GLOBAL_SCOPE]
    return [scope]


def _link(offer: Offer | None) -> tuple[str, str] | None:
    """What a mail client would use: the one-click URL, else the mailto; never a plain GET."""
    if offer is None:
        return None
    if offer.one_click:
        return "one-click", offer.url
    return ("mailto", offer.mailto) if offer.mailto else None


def _where(job: Job) -> str:
    if job.kind == "mailto":
        return job.target.partition("?")[0]
    try:
        return urlsplit(job.target).hostname or "?"
    except ValueError:  # the tool's link was not a URL at all
        return "?"
