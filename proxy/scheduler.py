"""The scheduler: releases due held mail through the mail path; retries, expires, recovers."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from proxy.clock import Clock
from proxy.errors import StateUnavailable
from proxy.queue import DelayQueue, HeldMail
from proxy.settings import QueueSettings

log = logging.getLogger("heed.scheduler")


class ReleaseOutcome(enum.Enum):
    DELIVERED = "delivered"
    DROPPED = "dropped"  # policy said no at release (a "no" that came meanwhile wins)
    DELAYED = "delayed"  # policy says: not yet
    TEMPFAIL = "tempfail"  # upstream or Redis trouble: retry with backoff
    PERMFAIL = "permfail"  # the upstream refused for good


@dataclass(frozen=True)
class Release:
    outcome: ReleaseOutcome
    until: float | None = None
    error: str = ""


Hook = Callable[[HeldMail, str], Awaitable[None]]


class Scheduler:
    """Claims due copies (atomically, with a lease) and settles each one."""

    def __init__(self, queue: DelayQueue, release: Callable[[HeldMail], Awaitable[Release]],
                 clock: Clock, settings: QueueSettings, *, on_expire: Hook | None = None,
                 on_permfail: Hook | None = None, concurrency: int = 16) -> None:
        self.queue = queue
        self.release = release
        self.clock = clock
        self.settings = settings
        self.on_expire = on_expire
        self.on_permfail = on_permfail
        self._slots = asyncio.Semaphore(concurrency)

    async def run_once(self) -> int:
        """Recover dead workers' claims, then release every due copy; returns how many."""
        now = self.clock.now()
        recovered = await self.queue.recover(now)
        if recovered:
            log.warning("recovered %d held copies from a worker that stopped", recovered)
        items = await self.queue.claim(now, self.settings.batch, self.settings.lease)
        await asyncio.gather(*(self._settle(item) for item in items))
        return len(items)

    async def _settle(self, item: HeldMail) -> None:
        async with self._slots:
            try:
                result = await self.release(item)
            except Exception as exc:  # noqa: BLE001 - never lose a held copy to a bug
                log.exception("release of %s failed", item.id)
                result = Release(ReleaseOutcome.TEMPFAIL, error=type(exc).__name__)
            now = self.clock.now()
            if result.outcome in (ReleaseOutcome.DELIVERED, ReleaseOutcome.DROPPED):
                await self.queue.done(item.id)
            elif result.outcome is ReleaseOutcome.DELAYED:
                due = result.until if result.until and result.until > now else now + 60
                if due - item.first_queued > self.settings.max_hold:
                    await self._give_up(item, "held longer than queue.max_hold")
                else:
                    await self.queue.reschedule(item.id, due)
            elif result.outcome is ReleaseOutcome.PERMFAIL:
                if self.on_permfail is not None:
                    await self.on_permfail(item, result.error)
                await self.queue.done(item.id)
            else:
                backoff = self.settings.backoff[min(item.attempts, len(self.settings.backoff) - 1)]
                if now + backoff - item.first_queued > self.settings.max_hold:
                    await self._give_up(item, f"upstream kept failing: {result.error}")
                else:
                    await self.queue.retry(item.id, now + backoff, item.attempts + 1, result.error)

    async def _give_up(self, item: HeldMail, why: str) -> None:
        if self.on_expire is not None:
            await self.on_expire(item, why)
        await self.queue.done(item.id)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; Redis trouble is logged and waited out."""
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except StateUnavailable:
                log.warning("scheduler: redis unavailable, retrying")
                busy = 0
            except Exception:  # noqa: BLE001 - the loop must survive
                log.exception("scheduler round failed")
                busy = 0
            if busy < self.settings.batch:
                try:
                    await asyncio.wait_for(stop.wait(), self.settings.poll_interval)
                except TimeoutError:
                    pass
