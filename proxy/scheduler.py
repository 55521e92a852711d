"""The scheduler: releases due held mail through the mail path; retries, expires, recovers."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.clock import Clock
from proxy.errors import StateUnavailable
from proxy.queue import DelayQueue, HeldMail
from proxy.settings import QueueSettings
from proxy.stopping import stopped

log = logging.getLogger("heed.scheduler")

# Longest pause between rounds while Redis is unreachable.
MAX_OUTAGE_BACKOFF = 30.0


class ReleaseOutcome(enum.Enum):
    DELIVERED = "delivered"
    DROPPED = "dropped"  # policy said no at release (a "no" that came meanwhile wins)
    DELAYED = "delayed"  # policy says: not yet (``until``)
    TEMPFAIL = "tempfail"  # upstream or Redis trouble: retry with backoff (``error``)
    PERMFAIL = "permfail"  # the upstream refused for good (``error``)


@dataclass(frozen=True)
class Release:
    """What became of one release attempt."""

    outcome: ReleaseOutcome
    until: float | None = None
    error: str = ""
    settled: bool = False  # the copy was marked done already (as soon as the upstream took it)


Hook = Callable[[HeldMail, str], Awaitable[None]]


class Scheduler:
    """Claims due copies (atomically, with a lease) and settles each one."""

    def __init__(self, queue: DelayQueue, release: Callable[[HeldMail], Awaitable[Release]],
                 clock: Clock, settings: QueueSettings, *, on_expire: Hook | None = None,
                 on_permfail: Hook | None = None, concurrency: int = 16) -> None:
        """``release`` sends one copy; ``on_expire``/``on_permfail`` hear of copies given up."""
        self.queue = queue
        self.release = release
        self.clock = clock
        self.settings = settings
        self.on_expire = on_expire
        self.on_permfail = on_permfail
        self._slots = asyncio.Semaphore(max(1, concurrency))
        # A dead worker's claims come back once their lease ended: looking for them a
        # quarter lease apart (not every round) takes them over within 1.25 leases.
        self._recover_at = 0.0
        # An idle scheduler wakes on work, not on a timer: it sleeps until the first copy
        # left comes due (``_due``, learnt from each claim, from the copies it retries or
        # delays, and from every copy this process puts: ``wake``), or until the next look
        # for a dead worker's claims, whichever is first.
        self._due = 0.0
        self._heard = math.inf  # the earliest copy put while a claim was under way
        self._alarm = asyncio.Event()

    def wake(self, due: float) -> None:
        """A copy due at ``due`` is in the queue: put by this process, or seen by the gauges."""
        self._heard = min(self._heard, due)
        if due < self._due:
            self._due = due
            self._alarm.set()

    def _every(self) -> float:
        return max(self.settings.poll_interval, self.settings.lease / 4)

    async def run_once(self) -> int:
        """Recover dead workers' claims (when it is time to look), then release every due
        copy; returns how many."""
        now = self.clock.now()
        every = self._every()
        if not now < self._recover_at <= now + every:  # due, or the clock went back
            recovered = await self.queue.recover(now)
            self._recover_at = now + every
            if recovered:
                log.warning("recovered %d held copies from a worker that stopped", recovered)
        self._heard = math.inf
        items, first = await self.queue.claim_next(now, self.settings.batch,
                                                   self.settings.lease)
        self._due = min(math.inf if first is None else first, self._heard)
        if not items:
            return 0
        working = {item.id: item for item in items}
        heartbeat = asyncio.ensure_future(self._heartbeat(working))
        try:
            results = await asyncio.gather(*(self._settle(item, working) for item in items),
                                           return_exceptions=True)
        finally:
            heartbeat.cancel()
        for item, result in zip(items, results, strict=True):
            if isinstance(result, StateUnavailable):
                # The claim stays; once its lease ends, recover() hands it out again.
                log.warning("held copy %s not settled: redis unavailable", item.id)
            elif isinstance(result, BaseException):
                log.error("held copy %s not settled", item.id, exc_info=result)
        if any(isinstance(r, StateUnavailable) for r in results):
            raise StateUnavailable("redis unavailable while settling held copies")
        return len(items)

    async def _heartbeat(self, working: dict[str, HeldMail]) -> None:
        """Renew the leases of the copies still being worked on, every third of a lease, so
        a slow upstream never lets another worker take (and send) a copy a second time."""
        while working:
            await asyncio.sleep(self.settings.lease / 3)
            try:
                lost = await self.queue.renew(list(working.values()),
                                              self.clock.now() + self.settings.lease)
            except StateUnavailable:
                log.warning("held copies' leases not renewed: redis unavailable")
                continue
            for item_id in lost:
                log.warning("held copy %s: lease lost to another worker", item_id)

    async def _settle(self, item: HeldMail, working: dict[str, HeldMail]) -> None:
        try:
            await self._settle_one(item)
        finally:
            working.pop(item.id, None)

    async def _settle_one(self, item: HeldMail) -> None:
        async with self._slots:
            try:
                result = await self.release(item)
            except StateUnavailable as exc:
                result = Release(ReleaseOutcome.TEMPFAIL, error=str(exc) or "redis unavailable")
            except Exception as exc:  # noqa: BLE001 - never lose a held copy to a bug
                log.exception("release of held copy %s failed", item.id)
                error = f"internal error ({type(exc).__name__})"
                result = Release(ReleaseOutcome.TEMPFAIL, error=error)
        now = self.clock.now()
        outcome = result.outcome
        if outcome in (ReleaseOutcome.DELIVERED, ReleaseOutcome.DROPPED):
            if not result.settled and not await self.queue.done(item.id, item.claim):
                log.warning("held copy %s: lease lost before it was marked done", item.id)
        elif outcome is ReleaseOutcome.DELAYED:
            due = result.until if result.until and result.until > now else (
                now + self.settings.backoff[0])
            if due - item.first_queued > self.settings.max_hold:
                await self._give_up(item, self.on_expire, "held longer than queue.max_hold")
            elif await self.queue.reschedule(item, due):
                self._due = min(self._due, due)
            else:
                log.warning("held copy %s was reclaimed before it was rescheduled", item.id)
        elif outcome is ReleaseOutcome.PERMFAIL:
            await self._give_up(item, self.on_permfail, result.error)
        else:
            backoff = self.settings.backoff[min(item.attempts, len(self.settings.backoff) - 1)]
            if now - item.first_queued + backoff > self.settings.max_hold:
                await self._give_up(item, self.on_expire,
                                    f"held longer than queue.max_hold; last error: {result.error}")
            elif await self.queue.retry(item, now + backoff, item.attempts + 1, result.error):
                self._due = min(self._due, now + backoff)
            else:
                log.warning("held copy %s was reclaimed before its retry was set", item.id)

    async def _give_up(self, item: HeldMail, hook: Hook | None, why: str) -> None:
        if hook is not None:
            try:
                await hook(item, why)
            except Exception:  # noqa: BLE001 - the copy ends either way; say so in the log
                log.exception("hook for held copy %s failed (%s)", item.id, why)
        await self.queue.done(item.id, item.claim)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; Redis trouble is logged and waited out."""
        outage = 0.0
        relay = asyncio.ensure_future(_relay(stop, self._alarm))
        try:
            while not stop.is_set():
                self._alarm.clear()  # a copy put from here on ends the wait below
                busy, pause = 0, self._pause()
                if pause <= 0:  # a copy is due, or it is time to look for a dead worker's
                    try:
                        busy = await self.run_once()
                        outage, pause = 0.0, self._pause()
                    except StateUnavailable as exc:
                        if stopped(stop, "scheduler round", exc, log):
                            break
                        outage = min(MAX_OUTAGE_BACKOFF,
                                     max(self.settings.poll_interval, outage * 2))
                        log.warning("scheduler: redis unavailable, next try in %.0f s", outage)
                        self._due, pause = 0.0, outage  # a round again after the pause
                    except Exception:  # noqa: BLE001 - the loop must survive
                        log.exception("scheduler round failed")
                        self._due, pause = 0.0, self.settings.poll_interval
                if busy >= self.settings.batch:
                    continue  # a full batch: more may be due already
                try:
                    await asyncio.wait_for(self._alarm.wait(), pause)
                except TimeoutError:
                    pass
        finally:
            relay.cancel()

    def _pause(self) -> float:
        """Until the first copy this process knows of comes due, or the next look for a
        dead worker's claims; never longer than a look's interval (a quarter lease): a
        copy another process put, earlier than any this one knows, and did not claim
        itself (it died, or runs no scheduler) waits no longer than a dead worker's
        claims are looked for."""
        now, every = self.clock.now(), self._every()
        look = self._recover_at - now
        if look > every:
            look = 0.0  # the clock went back: look now (run_once does), not a step later
        return max(0.0, min(self._due - now, look, every))


async def _relay(stop: asyncio.Event, alarm: asyncio.Event) -> None:
    """``stop`` also ends the scheduler's sleep: it waits on one event."""
    await stop.wait()
    alarm.set()
