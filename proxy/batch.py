"""Group commit: the Redis pipelines of concurrent callers go out as one round trip.

``GroupCommit(redis)`` stands in for the client given to State, Audit and the mail
path. Its ``pipeline(transaction=False)`` records commands; ``execute()`` hands them
to a batch and waits for that batch's reply. A batch goes out as soon as the
previous one has been answered (natural batching: no timer adds latency), so a lone
caller pays one round trip and N concurrent callers share one. With Redis's
``appendfsync always`` one fsync then covers every write of the batch, and each
caller is answered only after its own commands were executed (and, for writes,
made durable) by Redis.

Write-behind (``linger`` > 0): a caller that need not wait for its writes (the
record of a delivery, made after the upstream said yes) hands them over with
``execute_behind()``. They go out at the front of the next batch, before any command
queued after them (so a later read in this process sees them), or after ``linger``
seconds when no batch comes; ``aclose()`` writes what is left. A lone message then
costs one round trip on its reply path, and under steady traffic the records ride
along with other sessions' reads. What it gives up, like PostgreSQL's
``synchronous_commit = off``: a process killed outright loses what was behind in its
last ``linger`` seconds; the mail path therefore writes a delivery's intent (its
counts and a "sending" audit entry) before the 250 and only the confirmation behind
(proxy/recorder.py). A write behind that meets a Redis outage (connection lost, a
failover's READONLY, a Cluster slot moving) is retried with backoff until Redis is
back, for up to ``RETRY_FOR`` seconds; only its commands that did not run are sent
again (a reply lost in transit may write one twice: counts then err towards the cap).

Everything else (single commands, MULTI pipelines, scripts) passes straight to the
real client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from redis.commands.core import CoreCommands
from redis.exceptions import ClusterDownError, ReadOnlyError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from proxy.redisconn import LeanPipeline

log = logging.getLogger("heed.redis")

# Commands per batch, at most: bounds one reply's size and the wait of the last caller.
MAX_COMMANDS = 2000
# A record written behind is retried this long while Redis is away (a Sentinel
# failover takes seconds, a restart with a large AOF minutes), with backoff up to
# RETRY_MAX between tries; then it is given up, logged and counted.
RETRY_FOR = 600.0
RETRY_FIRST, RETRY_MAX = 0.05, 2.0
# Errors after which the same commands may succeed: Redis away, or not yet master.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, ClusterDownError,
             TryAgainError, OSError)

Stack = list[tuple[tuple[Any, ...], dict[str, Any]]]


class CommandRecorder:
    """Records ``(args, options)`` the way redis-py's pipeline does, for a class that also
    takes redis-py's command mixin (its methods call ``execute_command``); shared by the
    group-commit pipeline here and the durable mirror's (proxy/durable/mirror.py)."""

    _event_dispatcher: Any = None  # declared by redis-py's command protocol; never used here

    def __init__(self) -> None:
        self.command_stack: Stack = []

    def execute_command(self, *args: Any, **options: Any) -> Self:
        self.command_stack.append((args, options))
        return self

    def __len__(self) -> int:
        return len(self.command_stack)


class BatchPipeline(CommandRecorder, CoreCommands):
    """Records ``(args, options)`` the way redis-py's pipeline does; ``execute`` joins a batch.

    The command methods (hgetall, xadd, …) come from redis-py's own command mixin, so
    argument checks fail in the caller, at the call, exactly as with a real pipeline.
    """

    def __init__(self, owner: GroupCommit) -> None:
        super().__init__()
        self._owner = owner

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """This pipeline's replies, in order, once its batch has been answered."""
        stack, self.command_stack = self.command_stack, []
        if not stack:
            return []
        replies = await self._owner.submit(stack)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies

    async def execute_behind(self, what: str) -> None:
        """Execute without waiting for the reply when the owner writes behind.

        Without write-behind this is ``execute()``. With it, the commands are queued for
        the next batch and this returns at once; a failure is logged, naming ``what``.
        """
        if not self.command_stack:
            return
        stack, self.command_stack = self.command_stack, []
        if self._owner.linger <= 0:
            started = time.monotonic()
            try:
                replies: list[Any] | BaseException = await self._owner.submit(stack)
            except Exception as exc:  # noqa: BLE001 - handed to the retry below
                replies = exc
            self._owner.settle(stack, replies, what, started)
            return
        self._owner.defer(stack, what)

    async def __aenter__(self) -> BatchPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.command_stack = []


class _Request:
    """One caller's commands and the future its replies are set on."""

    __slots__ = ("stack", "reply")  # one per pipeline on the hot path: kept small and quick

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.reply: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()


class GroupCommit:
    """A Redis client whose non-transactional pipelines are executed together."""

    def __init__(self, redis: Any, *, lane: Any = None, timeout: float | None = None,
                 max_commands: int = MAX_COMMANDS, linger: float = 0.0,
                 on_written: Callable[[float], None] | None = None,
                 on_retry: Callable[[], None] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 retry_for: float = RETRY_FOR) -> None:
        self.redis = redis
        # The client batches go out on (default: ``redis``). heed gives one without a
        # per-reply read timeout and bounds each batch's round trip with ``timeout``.
        self.lane = lane if lane is not None else redis
        self.timeout = timeout
        self.max_commands = max_commands
        self.linger = linger
        # Told, for each execute_behind, the seconds from hand-over until Redis had it.
        self.on_written = on_written
        # Told of each write behind sent again after a Redis error, and of each given up.
        self.on_retry, self.on_lost, self.retry_for = on_retry, on_lost, retry_for
        self._retries: dict[asyncio.TimerHandle, tuple[Stack, str, float, float]] = {}
        self._closing = False
        self._pending: deque[_Request] = deque()
        self._behind: list[_Request] = []  # written behind: nobody waits for these
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        # For benchmarks and tests: batches sent, and caller pipelines they carried.
        self.batches = 0
        self.requests = 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        if transaction:
            return self.redis.pipeline(transaction=True, shard_hint=shard_hint)
        return BatchPipeline(self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)

    async def flush(self) -> None:
        """Write what is behind now; return once every batch so far has been answered."""
        self._due()
        if self._flusher is not None:
            await asyncio.wait([self._flusher])

    @property
    def retrying(self) -> int:
        """Writes behind waiting to be sent again after a Redis error."""
        return len(self._retries)

    async def aclose(self) -> None:
        """Write what is behind (a last try for any being retried), then close the client."""
        self._closing = True
        for handle, (stack, what, started, _delay) in list(self._retries.items()):
            handle.cancel()
            del self._retries[handle]
            self.defer(stack, what, started=started)
        await self.flush()
        if self.lane is not self.redis:
            await self.lane.aclose()
        await self.redis.aclose()

    async def submit(self, stack: Stack) -> list[Any]:
        """Queue one caller's commands; their replies (errors in place) once executed."""
        request = _Request(stack)
        self._pending.append(request)
        self._start()
        return await request.reply

    def defer(self, stack: Stack, what: str, *, started: float | None = None,
              delay: float = 0.0) -> None:
        """Queue commands nobody waits for: with the next batch, or in ``linger`` seconds."""
        request = _Request(stack)
        began = time.monotonic() if started is None else started

        def done(reply: asyncio.Future[list[Any]]) -> None:
            if reply.cancelled():
                self.settle(stack, RedisConnectionError("cancelled"), what, began, delay)
            else:
                self.settle(stack, reply.exception() or reply.result(), what, began, delay)

        request.reply.add_done_callback(done)
        self._behind.append(request)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(max(self.linger, 0.001),
                                                                self._due)

    def settle(self, stack: Stack, replies: list[Any] | BaseException, what: str,
               started: float, delay: float = 0.0) -> None:
        """The outcome of a write nobody awaits: timed, or its failed commands retried."""
        again = _to_retry(stack, replies, what)
        if not again:
            if not isinstance(replies, BaseException) and not any(
                    isinstance(r, Exception) for r in replies):
                self.written(time.monotonic() - started)  # timed only when written whole
            return
        waited = time.monotonic() - started
        if self._closing or waited + delay > self.retry_for:
            log.error("could not record %s: gave up after %.0f s", what, waited)
            if self.on_lost is not None:
                self.on_lost()
            return
        delay = min(RETRY_MAX, max(RETRY_FIRST, delay * 2))
        if self.on_retry is not None:
            self.on_retry()
        loop = asyncio.get_running_loop()

        def retry() -> None:
            self._retries.pop(handle, None)
            self.defer(again, what, started=started, delay=delay)

        handle = loop.call_later(delay, retry)
        self._retries[handle] = (again, what, started, delay)

    def written(self, seconds: float) -> None:
        if self.on_written is not None:
            self.on_written(seconds)

    def _due(self) -> None:
        """The linger is over (or the client closes): what is behind goes out now."""
        if self._bring_forward():
            self._start()

    def _bring_forward(self) -> bool:
        """Put what is behind at the front of the queue, before every caller queued after
        it (a read there must see it), and stop its linger; whether there was any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._behind:
            return False
        self._pending.extendleft(reversed(self._behind))
        self._behind = []
        return True

    def _start(self) -> None:
        if self._flusher is None:
            # A task, not the caller itself: a caller that is cancelled (its client
            # went away) must not cancel the batch the others are waiting on; its
            # commands still run, as they would have in a pipeline of its own.
            self._flusher = asyncio.get_running_loop().create_task(self._flush_all())

    async def _flush_all(self) -> None:
        try:
            while self._pending:
                await self._flush(self._take())
        finally:
            self._flusher = None
            # Anything left (the task was cancelled at shutdown) is not silently dropped.
            while self._pending:
                _fail(self._pending.popleft(), RedisConnectionError("redis client closed"))

    def _take(self) -> list[_Request]:
        self._bring_forward()  # records written behind ride with this batch, first
        batch = [self._pending.popleft()]
        size = len(batch[0].stack)
        while self._pending and size + len(self._pending[0].stack) <= self.max_commands:
            request = self._pending.popleft()
            batch.append(request)
            size += len(request.stack)
        return batch

    async def _flush(self, batch: list[_Request]) -> None:
        self.batches += 1
        self.requests += len(batch)
        try:
            stack = [command for request in batch for command in request.stack]
            try:
                # Cancelled by the timeout, the connection is dropped mid-reply rather
                # than reused out of step.
                async with asyncio.timeout(self.timeout):
                    replies = await _pipeline(self.lane, stack)
            except TimeoutError:
                raise RedisTimeoutError("redis did not answer in time") from None
        except BaseException as exc:
            # The whole round trip failed (connection lost, timeout): every caller of
            # this batch gets the error, so each answers 451 rather than guessing.
            # Those who queued behind it while it hung fail with it: Redis was not
            # answering, and they would otherwise wait out a second timeout in turn.
            # Callers arriving from now on start a fresh batch.
            error = exc if isinstance(exc, Exception) else RedisConnectionError(
                "redis round trip interrupted")
            batch.extend(self._pending)
            self._pending.clear()
            for request in batch:
                _fail(request, error)
            if not isinstance(exc, Exception):
                raise
            return
        start = 0
        for request in batch:
            end = start + len(request.stack)
            if not request.reply.done():
                request.reply.set_result(list(replies[start:end]))
            start = end


async def _pipeline(client: Any, stack: Stack) -> list[Any]:
    """The replies of ``stack`` as one non-transactional pipeline of ``client``."""
    pipe = client.pipeline(transaction=False)
    if isinstance(pipe, LeanPipeline):  # queues (args, options) as recorded: handed over whole
        pipe.command_stack.extend(stack)
    else:  # a Cluster's pipeline routes each command by slot
        for args, options in stack:
            pipe.execute_command(*args, **options)
    return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]


def _to_retry(stack: Stack, replies: list[Any] | BaseException, what: str) -> Stack:
    """The commands of a write nobody awaits to send again; other errors are logged here."""
    if isinstance(replies, BaseException):
        if isinstance(replies, TRANSIENT):
            log.warning("record of %s not written (%s): will retry", what,
                        type(replies).__name__)
            return stack
        log.error("could not record %s: %s", what, type(replies).__name__)
        return []
    again = [c for c, r in zip(stack, replies, strict=True) if isinstance(r, TRANSIENT)]
    failed = [r for r in replies if isinstance(r, Exception) and not isinstance(r, TRANSIENT)]
    if failed:  # a command Redis refused (a wrong type …): sending it again cannot help
        log.error("could not record %s: %s", what, type(failed[0]).__name__)
    if again:
        log.warning("record of %s partly not written (%s): will retry", what,
                    type(next(r for r in replies if isinstance(r, TRANSIENT))).__name__)
    return again


def _fail(request: _Request, exc: Exception) -> None:
    if not request.reply.done():
        request.reply.set_exception(exc)
        request.reply.exception()  # retrieved: a caller that went away leaves no warning


__all__ = ["BatchPipeline", "GroupCommit"]
