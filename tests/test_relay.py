"""The upstream client against real aiosmtpd servers, with and without PIPELINING."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtplib.email import quote_address
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.errors import UpstreamError
from proxy.relay import SmtpUpstream
from proxy.settings import UpstreamSettings
from proxy.smtp.address import PLAIN_ADDRESS
from tests.conftest import CaptureHandler, Upstream
from tests.harness import HeedThread, make_settings, policy_dir
from tests.test_smtp_mailpath import NOON

TRANSACTIONAL = """
default_stream: transactional
streams:
  transactional: {kind: transactional}
"""

DATA = b"From: a@news.example.com\r\nSubject: x\r\n\r\nbody\r\n"
SENDER = "a@news.example.com"


def client(port: int, timeout: float = 5, pool_size: int = 4) -> SmtpUpstream:
    return SmtpUpstream(UpstreamSettings(host="127.0.0.1", port=port, timeout=timeout,
                                         pool_size=pool_size))


def count_sessions(handler: CaptureHandler) -> list[int]:
    """Count EHLOs the upstream sees: one per connection."""
    ehlos = [0]
    offer = getattr(handler, "handle_EHLO", None)

    async def handle_EHLO(server, session, envelope, hostname, responses):  # noqa: ANN001,ANN202,N802
        ehlos[0] += 1
        if offer is not None:
            responses = await offer(server, session, envelope, hostname, responses)
        session.host_name = hostname  # what aiosmtpd's own EHLO would have recorded
        return responses

    handler.handle_EHLO = handle_EHLO  # type: ignore[attr-defined]
    return ehlos


class Pipelining(CaptureHandler):
    """aiosmtpd reads pipelined commands line by line; this one also says so (RFC 2920)."""

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001,ANN201,N802
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


@pytest.fixture(params=["lock-step", "pipelining"])
def upstream(request: pytest.FixtureRequest) -> Iterator[Upstream]:
    """Every test here against an aiosmtpd that offers PIPELINING and one that does not."""
    handler = Pipelining() if request.param == "pipelining" else CaptureHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield Upstream("127.0.0.1", port, handler)
    controller.stop()


@pytest.fixture
async def relay(upstream: Upstream) -> AsyncIterator[SmtpUpstream]:
    c = client(upstream.port)
    yield c
    await c.close()


async def test_delivers_and_reuses_one_connection(upstream: Upstream,
                                                  relay: SmtpUpstream) -> None:
    ehlos = count_sessions(upstream.handler)
    for i in range(5):
        assert await relay.send(SENDER, [f"r{i}@example.org"], DATA) == {}
    assert [m.recipients for m in upstream.received] == [[f"r{i}@example.org"] for i in range(5)]
    assert upstream.received[0].data == DATA and upstream.received[0].sender == SENDER
    assert ehlos[0] == 1  # one pooled connection served all five


async def test_pool_bounds_concurrent_connections(upstream: Upstream) -> None:
    ehlos = count_sessions(upstream.handler)
    c = client(upstream.port, pool_size=2)
    await asyncio.gather(*(c.send(SENDER, [f"r{i}@example.org"], DATA) for i in range(10)))
    await c.close()
    assert len(upstream.received) == 10 and 1 <= ehlos[0] <= 2


async def test_refused_recipient_is_returned(upstream: Upstream, relay: SmtpUpstream) -> None:
    upstream.handler.rcpt_reply["bad@example.org"] = "550 5.1.1 no such user"
    upstream.handler.rcpt_reply["full@example.org"] = "452 4.2.2 mailbox full"
    refused = await relay.send(SENDER, ["ok@example.org", "bad@example.org",
                                        "full@example.org"], DATA)
    assert refused == {"bad@example.org": (550, "5.1.1 no such user"),
                       "full@example.org": (452, "4.2.2 mailbox full")}
    assert upstream.recipients() == ["ok@example.org"]


@pytest.mark.parametrize(("reply", "temporary"), [("451 4.3.0 try later", True),
                                                  ("554 5.7.1 no", False)])
async def test_data_replies_map_to_upstream_error(upstream: Upstream, relay: SmtpUpstream,
                                                  reply: str, temporary: bool) -> None:
    ehlos = count_sessions(upstream.handler)
    upstream.handler.reply = reply
    with pytest.raises(UpstreamError) as info:
        await relay.send(SENDER, ["r@example.org"], DATA)
    assert info.value.temporary is temporary
    assert (info.value.code, info.value.message) == (int(reply[:3]), reply[4:])
    # The envelope was reset, so the same connection carries the next message.
    upstream.handler.reply = None
    assert await relay.send(SENDER, ["r@example.org"], DATA) == {}
    assert ehlos[0] == 1


@pytest.mark.parametrize(("reply", "temporary"), [("451 4.7.1 greylisted", True),
                                                  ("553 5.7.1 sender rejected", False)])
async def test_mail_replies_map_to_upstream_error(upstream: Upstream, relay: SmtpUpstream,
                                                  reply: str, temporary: bool) -> None:
    async def handle_MAIL(server, session, envelope, address, options):  # noqa: ANN001,ANN202,N802
        return reply

    upstream.handler.handle_MAIL = handle_MAIL  # type: ignore[attr-defined]
    with pytest.raises(UpstreamError) as info:
        await relay.send(SENDER, ["r@example.org"], DATA)
    assert (info.value.code, info.value.temporary) == (int(reply[:3]), temporary)
    assert upstream.received == []


@pytest.mark.parametrize(("replies", "code", "temporary"), [
    (("450 4.2.1 busy", "451 4.3.0 later"), 450, True),
    (("550 5.1.1 unknown", "551 5.1.6 moved"), 550, False),
])
async def test_every_recipient_refused_fails_the_transaction(
        upstream: Upstream, relay: SmtpUpstream, replies: tuple[str, str], code: int,
        temporary: bool) -> None:
    upstream.handler.rcpt_reply.update({"a@example.org": replies[0],
                                        "b@example.org": replies[1]})
    with pytest.raises(UpstreamError) as info:
        await relay.send(SENDER, ["a@example.org", "b@example.org"], DATA)
    assert (info.value.code, info.value.temporary) == (code, temporary)
    assert upstream.received == []


async def test_stale_pooled_connection_is_retried_once(upstream: Upstream,
                                                       relay: SmtpUpstream) -> None:
    ehlos = count_sessions(upstream.handler)
    closing: list[bool] = []

    async def handle_MAIL(server, session, envelope, address, options):  # noqa: ANN001,ANN202,N802
        if closing and closing.pop():
            return "421 4.4.2 idle too long, closing"  # RFC 5321 §4.5.3.2.7
        envelope.mail_from = address
        return "250 OK"

    # aiosmtpd looks its hooks up when a connection opens: install before the first.
    upstream.handler.handle_MAIL = handle_MAIL  # type: ignore[attr-defined]
    assert await relay.send(SENDER, ["r1@example.org"], DATA) == {}
    closing.append(True)
    assert await relay.send(SENDER, ["r2@example.org"], DATA) == {}
    assert upstream.recipients() == ["r1@example.org", "r2@example.org"]
    assert ehlos[0] == 2  # the stale connection was replaced, the copy sent once


async def test_upstream_restart_replaces_idle_connection() -> None:
    handler = CaptureHandler()
    ehlos = count_sessions(handler)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    c = client(port)
    try:
        assert await c.send(SENDER, ["r1@example.org"], DATA) == {}
        controller.stop()  # drops the pooled connection
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        assert await c.send(SENDER, ["r2@example.org"], DATA) == {}
        assert [m.recipients[0] for m in handler.received] == ["r1@example.org", "r2@example.org"]
        assert ehlos[0] == 2
    finally:
        await c.close()
        controller.stop()


async def test_ping(upstream: Upstream, relay: SmtpUpstream) -> None:
    ehlos = count_sessions(upstream.handler)
    assert await relay.ping() is True
    assert await relay.send(SENDER, ["r@example.org"], DATA) == {}
    assert ehlos[0] == 1  # the ping's connection went back to the pool
    assert await client(free_port()).ping() is False


async def test_down_upstream_is_temporary() -> None:
    with pytest.raises(UpstreamError) as info:
        await client(free_port()).send("a@x.test", ["r@example.org"], DATA)
    assert info.value.temporary and info.value.code == 421
    assert "Errno" not in str(info.value) and "refused" not in str(info.value).lower()


async def test_silent_upstream_times_out_as_temporary() -> None:
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()  # accept, then never greet: a hung upstream
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamError) as info:
            await client(port, timeout=0.3).send("a@x.test", ["r@example.org"], DATA)
        assert info.value.temporary and info.value.code == 421
        assert info.value.message == "4.4.1 upstream not reachable"
    finally:
        done.set()
        server.close()
        await server.wait_closed()


# 300 examples: 3,000 took 96 s on this 2-core machine under the other suites' load,
# near pytest-timeout's 120 s (it timed out once); the property is a fixed pattern.
@settings(max_examples=300, deadline=None)
@given(st.from_regex(PLAIN_ADDRESS, fullmatch=True))
def test_a_plain_path_is_written_as_aiosmtplib_would_quote_it(address: str) -> None:
    """relay.py writes "<address>" itself for a plain mailbox; aiosmtplib's quote_address
    (parseaddr and an injection check) gives exactly that for every such mailbox."""
    assert quote_address(address) == f"<{address}>"


@pytest.mark.parametrize("sender", ["", SENDER, "bounce+abcdefghij234567klmn@heed.test",
                                    '"odd sender"@example.com'])
async def test_paths_reach_the_upstream_as_given(upstream: Upstream, relay: SmtpUpstream,
                                                 sender: str) -> None:
    # Plain paths are written directly; the quoted ones go through aiosmtplib's mail/rcpt.
    rcpts = ["plain.user+tag@example.org", '"quoted rcpt"@example.org', "x@[192.0.2.1]"]
    assert await relay.send(sender, rcpts, DATA) == {}
    # (aiosmtpd shows the null reverse-path as "<>".)
    assert [(m.sender, m.recipients) for m in upstream.received] == [(sender or "<>", rcpts)]
    # A refused plain recipient is told apart as before (RFC 5321 §3.3).
    upstream.handler.rcpt_reply["gone@example.org"] = "550 5.1.1 no such user"
    assert await relay.send(sender, ["gone@example.org", "here@example.org"], DATA) == {
        "gone@example.org": (550, "5.1.1 no such user")}


class LateAccept(CaptureHandler):
    """An upstream that answers the final dot only after ``delay`` seconds, then accepts."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001,ANN201
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize("on_failure", ["tempfail", "queue"])
def test_a_late_accept_after_the_command_timeout_is_one_copy(
        on_failure: str, redis_url: str, tmp_path: Path) -> None:
    """upstream.timeout 2 s, the final dot answered after 3 s: with the default
    upstream.data_timeout (10 min, RFC 5321 §4.5.3.2.6) the copy goes once, answered 250."""
    handler = LateAccept(3.0)
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    settings = make_settings(redis_url=redis_url, upstream_port=port,
                             policies=policy_dir(tmp_path, TRANSACTIONAL),
                             upstream={"timeout": "2s", "on_failure": on_failure})
    assert settings.upstream.data_timeout == 600
    h = HeedThread(settings, ManualClock(NOON)).start()
    try:
        with smtplib.SMTP("127.0.0.1", h.port, timeout=60) as c:
            assert c.sendmail("receipts@shop.example.com", ["r@example.org"], DATA) == {}
        assert h.heed is not None
        assert h.call(h.heed.queue.depth()) == 0  # nothing held for a second try
    finally:
        h.stop()
        controller.stop()
    assert [m.recipients for m in handler.received] == [["r@example.org"]]
