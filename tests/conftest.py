"""Shared fixtures: a real redis-server process, a real aiosmtpd upstream, a movable clock."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from aiosmtpd.controller import Controller

from proxy.clock import ManualClock
from proxy.embedded_redis import EmbeddedRedis, free_port
from proxy.keys import Keys

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One private redis-server for the session (never a shared instance)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), durable=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The server's URL, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def clock() -> ManualClock:
    # 2027-01-15 08:00:00 UTC (a Friday).
    return ManualClock(1_800_000_000.0)


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class CaptureHandler:
    """An upstream MTA that keeps what it accepts; ``reply`` forces an answer to DATA."""

    received: list[Received] = field(default_factory=list)
    reply: str | None = None
    rcpt_reply: dict[str, str] = field(default_factory=dict)
    arrived: asyncio.Event | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
        if address.lower() in self.rcpt_reply:
            return self.rcpt_reply[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
        if self.reply:
            return self.reply
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 2.0.0 queued"


@dataclass
class Upstream:
    host: str
    port: int
    handler: CaptureHandler

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def recipients(self) -> list[str]:
        return [r for m in self.handler.received for r in m.recipients]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    """A real aiosmtpd server on loopback standing in for the real MTA."""
    handler = CaptureHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield Upstream("127.0.0.1", port, handler)
    controller.stop()
