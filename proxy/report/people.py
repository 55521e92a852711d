"""Known people's state for the report: every one, or a uniform sample with its error stated."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.state import State
from proxy.types import PersonState

# People read for the lifecycle figures when there are more: 10,000 people put every
# count within ±0.98 % of everyone (95 %, the worst case p = 0.5), at a millionth of
# the cost of reading a million people's state (docs/report.md, "Lifecycle").
SAMPLE = 10_000
Z95 = 1.959964  # two-sided 95 % quantile of the normal distribution
SCAN = 5000  # addresses per SSCAN round trip
BATCH = 500  # people per snapshot round trip


@dataclass(frozen=True)
class Population:
    """How many people the figures stand for, and how many were read to make them."""

    total: int  # members of keys.people when the report began
    read: int  # people whose state was read (everyone, or the sample)
    exact: bool

    def scale(self, count: int) -> int:
        """A count among the people read, as a count among everyone."""
        if self.exact or not self.read:
            return count
        return round(count * self.total / self.read)

    @property
    def margin(self) -> int:
        """Half-width of the 95 % interval of any scaled count (0 when exact).

        The worst case over proportions (p = 0.5), with the finite-population correction:
        z · N · sqrt(p(1-p)/n · (N-n)/(N-1)).
        """
        if self.exact or not self.read or self.total < 2:
            return 0
        n, big = self.read, self.total
        return math.ceil(Z95 * big * math.sqrt(0.25 / n * (big - n) / (big - 1)))


def _picked(members: list[Any], threshold: int | None) -> list[str]:
    """The addresses chosen, fixed and uniform: those whose hash is below the threshold (of
    2**64; None: every one). The digest's 8 bytes compared as they are, big-endian."""
    found = [m if isinstance(m, bytes) else str(m).encode() for m in members]
    if threshold is None:
        return [b.decode() for b in found]
    limit, blake2b = threshold.to_bytes(8, "big"), hashlib.blake2b
    return [b.decode() for b in found if blake2b(b, digest_size=8).digest() < limit]


async def everyone(state: State, batch: int = BATCH) -> AsyncIterator[PersonState]:
    """Each address in ``keys.people``, once per scan (SSCAN may repeat one; rarely)."""
    async for person in _scan(state, None, batch):
        yield person


async def _scan(state: State, threshold: int | None,
                batch: int) -> AsyncIterator[PersonState]:
    cursor: Any = 0
    pending: list[str] = []
    while True:
        try:
            cursor, members = await state.redis.sscan(
                state.keys.people, cursor, count=batch if threshold is None else SCAN)
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc
        pending += _picked(members, threshold)
        done = int(cursor) == 0
        while len(pending) >= batch or (done and pending):
            for person in await state.snapshots(pending[:batch]):
                yield person
            del pending[:batch]
        if done:
            return


async def survey(state: State, fold: Callable[[PersonState], None], *,
                 sample: int | None = SAMPLE, batch: int = BATCH) -> Population:
    """Give ``fold`` every person, or (over ``sample`` people) each with chance sample/N.

    The choice hashes the address (BLAKE2b), so it is uniform, independent of anyone's
    state, and the same people are read by each report while the set is unchanged.
    """
    try:
        total = int(await state.redis.scard(state.keys.people))
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    exact = sample is None or total <= sample
    threshold = None if exact else (sample or 0) * 2**64 // total
    read = 0
    async for person in _scan(state, threshold, batch):
        fold(person)
        read += 1
    return Population(total=total if not exact else read, read=read, exact=exact)
