"""Waits that end at once when the worker is told to stop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or less when ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def unless_stopped(stop: asyncio.Event | None, read: Awaitable[T], empty: T) -> T:
    """``read``, or ``empty`` as soon as ``stop`` is set (``read`` is then cancelled).

    An idle worker's blocking read must not outlast the stop: the Redis it waits on may
    be stopping with heed (systemd signals every process of the unit at once, a
    terminal's Ctrl-C the whole group), and a read that meets it closing fails."""
    if stop is None:
        return await read
    task = asyncio.ensure_future(read)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not task.done():
            task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        return empty


def stopped(stop: asyncio.Event, what: str, exc: BaseException, log: logging.Logger) -> bool:
    """Whether ``exc`` ended ``what`` because heed is stopping (then it is said at info).

    What was under way is left as at any stop: a claim to its lease, an outbox entry
    pending, a lifecycle pass to the next worker once its lock ends."""
    if not stop.is_set():
        return False
    log.info("%s cut short by the stop: %s", what, exc)
    return True
