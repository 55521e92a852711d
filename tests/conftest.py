"""Shared fixtures: a real redis-server process, a real aiosmtpd upstream, a movable clock."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller

from proxy.clock import ManualClock
from proxy.embedded_redis import EmbeddedRedis, free_port
from proxy.http.app import make_app
from proxy.keys import Keys
from proxy.metrics import Metrics
from proxy.policy_store import PolicyStore
from proxy.redisconn import connect_redis, warm_up
from proxy.settings import UnsubscribeKey
from proxy.state import State
from proxy.tokens import TokenSigner
from tests.dkim_keys import ed_key, keydir, opendkim, rsa_key, zone  # noqa: F401 - fixtures
from tests.topologies import LocalCluster, LocalSentinel
from tests.unfaked import SHIM, under_faketime

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# `heed serve` notes where it runs for management commands run elsewhere (proxy/locate.py):
# in the tests' own place, never the user's.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="heed-state-")
if under_faketime():
    # Every redis-server a test or a `heed serve` it runs starts goes through the shim.
    os.environ.setdefault("HEED_REDIS_SERVER", str(SHIM))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One private redis-server for the session (never a shared instance)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), durable=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A local 3-master Redis Cluster, started only when a test asks for it."""
    cluster = LocalCluster.start(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A master and a Sentinel watching it, started only when a test asks for it."""
    sentinel = LocalSentinel.start(tmp_path_factory.mktemp("sentinel"))
    yield sentinel
    sentinel.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``cluster`` run once on one Redis and once on the local Cluster."""
    if "redis_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker("cluster"):
        metafunc.parametrize("redis_kind", ["single", "cluster"])


@pytest.fixture
def redis_kind() -> str:
    return "single"


@pytest.fixture
def redis_url(request: pytest.FixtureRequest, redis_kind: str) -> str:
    """The URL of an emptied Redis: the session's server, or the Cluster for ``cluster`` runs."""
    if redis_kind == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    server: EmbeddedRedis = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    return server.url


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    # A Cluster URL gets heed's own client (RedisCluster); its API is the same.
    client = (connect_redis(redis_url) if redis_url.startswith("redis+")
              else aioredis.Redis.from_url(redis_url))
    await warm_up(client)
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


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A real headless Chromium (Debian's) driven by Playwright, for the page tests."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright's Python package (pip install playwright)"
                    " or HEED_SKIP_BROWSER=1")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM} (bash .ci/run installs it)"
                    " or HEED_SKIP_BROWSER=1")
    async with async_playwright() as p:
        try:
            b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        except Exception as exc:  # noqa: BLE001 - say plainly why, then fail
            pytest.fail(f"Chromium at {CHROMIUM} would not start: {exc}")
        yield b
        await b.close()


# The HTTP side's server and what stands behind it: state, token signer, shipped policies.
Site = tuple[TestServer, State, TokenSigner, PolicyStore]


@pytest.fixture
async def site(aredis: aioredis.Redis, keys: Keys, clock: ManualClock) -> AsyncIterator[Site]:
    """heed's HTTP side (pages, preference centre) on loopback with the shipped policies."""
    tokens = TokenSigner([UnsubscribeKey("t1", b"test-secret-0123456789abcdef")], clock,
                         90 * 86400.0)
    state = State(aredis, keys, clock, secret=b"browser-erase-secret-0123456789")
    store = PolicyStore(ROOT / "policies")
    server = TestServer(make_app(tokens=tokens, state=state, metrics=Metrics(), policies=store),
                        host="127.0.0.1")
    await server.start_server()
    yield server, state, tokens, store
    await server.close()
