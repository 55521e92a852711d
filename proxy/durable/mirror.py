"""Writes that must be durable go to the fsynced Redis first, then to the serving one.

heed reads every decision from the *serving* Redis (``appendfsync everysec``: its
fsync runs in a background thread, so a slow disk never holds a read). What a reply
promises is durable (a one-click 200: the refusal; a consent change) is first written
to the *durable* Redis (``appendfsync always``, answered only once on disk), then the
same commands go to the serving Redis. Which keys are durable is decided by
``Keys.is_durable``; the serving Redis counts each mirrored change (``Keys.durable_seq``)
so that a start finds out whether it lost any (proxy/durable/reconcile.py).
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import AsyncCoreCommands

from proxy.batch import CommandRecorder, Stack
from proxy.keys import Keys

# Commands that change a key, and where their keys are: (first key, last key) as
# argument positions (-1: to the end). Reads are never mirrored.
_KEYED_WRITES = {
    "HSET": (1, 1), "HSETNX": (1, 1), "HMSET": (1, 1), "HDEL": (1, 1), "HINCRBY": (1, 1),
    "SADD": (1, 1), "SREM": (1, 1), "ZADD": (1, 1), "ZREM": (1, 1),
    "ZREMRANGEBYSCORE": (1, 1), "SET": (1, 1), "EXPIRE": (1, 1), "PEXPIRE": (1, 1),
    "DEL": (1, -1), "UNLINK": (1, -1),
}
_STR = (str, bytes)


def _name(args: tuple[Any, ...]) -> str:
    first = args[0]
    return (first.decode() if isinstance(first, bytes) else str(first)).upper()


def durable_part(keys: Keys, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The part of one command the durable Redis must run too, or None."""
    name = _name(args)
    if name in ("EVAL", "EVALSHA"):
        if name == "EVALSHA":  # a registered script: heed's touch no durable key (see keys.py)
            return None
        numkeys = int(args[2])
        touched = args[3:3 + numkeys]
        return args if any(keys.is_durable(_text(k)) for k in touched) else None
    where = _KEYED_WRITES.get(name)
    if where is None or len(args) < 2:
        return None
    if where[1] == -1:  # DEL k1 k2 …: only the durable keys among them
        durable = [k for k in args[1:] if isinstance(k, _STR) and keys.is_durable(_text(k))]
        return (args[0], *durable) if durable else None
    return args if keys.is_durable(_text(args[1])) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Mirror:
    """The durable Redis, and how a stack of commands is made durable on it first."""

    def __init__(self, durable: Any, keys: Keys) -> None:
        self.durable = durable
        self.keys = keys

    def picked(self, stack: Stack) -> Stack:
        return [(part, opts) for args, opts in stack
                if (part := durable_part(self.keys, args)) is not None]

    async def write(self, picked: Stack) -> None:
        """Run ``picked`` on the durable Redis (fsynced before it answers), with the count.

        A Redis error propagates: the caller's reply must not promise what is not on disk."""
        pipe = self.durable.pipeline(transaction=False)
        for args, opts in picked:
            pipe.execute_command(*args, **opts)
        pipe.incr(self.keys.durable_seq)
        await pipe.execute()


class _MirroredPipeline(CommandRecorder, AsyncCoreCommands):  # type: ignore[misc]
    """Records commands like a pipeline; ``execute`` writes the durable part first."""

    def __init__(self, owner: MirroredRedis, transaction: bool, shard_hint: Any) -> None:
        super().__init__()
        self._owner, self._transaction, self._hint = owner, transaction, shard_hint

    async def __aenter__(self) -> _MirroredPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.command_stack = []

    def _inner(self) -> tuple[Any, bool]:
        stack, self.command_stack = self.command_stack, []
        picked = self._owner.mirror.picked(stack)
        inner = self._owner.inner.pipeline(transaction=self._transaction,
                                           shard_hint=self._hint)
        for args, opts in stack:
            inner.execute_command(*args, **opts)
        if picked:
            inner.incr(self._owner.mirror.keys.durable_seq)
        self._picked = picked
        return inner, bool(picked)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        inner, counted = self._inner()
        if counted:
            await self._owner.mirror.write(self._picked)
        replies = list(await inner.execute(raise_on_error=raise_on_error))
        return replies[:-1] if counted else replies

    async def execute_behind(self, what: str) -> None:
        inner, counted = self._inner()
        if counted:
            await self._owner.mirror.write(self._picked)
        await inner.execute_behind(what)


class MirroredRedis(AsyncCoreCommands):  # type: ignore[misc]
    """The serving client (plain or group commit) with durable writes made durable first.

    Reads and every other write go to ``inner`` unchanged; ``durable`` is the client of
    the fsynced Redis (the delay queue lives there whole, proxy/app.py)."""

    _event_dispatcher: Any = None

    def __init__(self, inner: Any, mirror: Mirror) -> None:
        self.inner = inner
        self.mirror = mirror
        self.durable = mirror.durable

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> _MirroredPipeline:
        return _MirroredPipeline(self, transaction, shard_hint)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        part = durable_part(self.mirror.keys, args)
        if part is None:
            return await self.inner.execute_command(*args, **options)
        await self.mirror.write([(part, options)])
        pipe = self.inner.pipeline(transaction=False)
        pipe.execute_command(*args, **options)
        pipe.incr(self.mirror.keys.durable_seq)
        return (await pipe.execute())[0]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def aclose(self) -> None:
        await self.inner.aclose()
        await self.durable.aclose()
