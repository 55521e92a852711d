"""Every known person's state, read in batches (SSCAN of the people set, then snapshots)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.state import State
from proxy.types import PersonState


async def everyone(state: State, batch: int = 500) -> AsyncIterator[PersonState]:
    """Each address in ``keys.people``, once per scan (SSCAN may repeat one; rarely)."""
    cursor: Any = 0
    while True:
        try:
            cursor, members = await state.redis.sscan(state.keys.people, cursor, count=batch)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        people = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
        for person in await state.snapshots(people) if people else []:
            yield person
        if int(cursor) == 0:
            return
