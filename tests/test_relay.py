"""The upstream client against a real aiosmtpd server: pooling and failure mapping."""

from __future__ import annotations

import asyncio

import pytest

from proxy.embedded_redis import free_port
from proxy.errors import UpstreamError
from proxy.relay import SmtpUpstream
from proxy.settings import UpstreamSettings
from tests.conftest import Upstream

DATA = b"From: a@news.example.com\r\nSubject: x\r\n\r\nbody\r\n"


def client(port: int, timeout: float = 5) -> SmtpUpstream:
    return SmtpUpstream(UpstreamSettings(host="127.0.0.1", port=port, timeout=timeout,
                                         pool_size=4))


async def test_delivers_and_reuses_connections(upstream: Upstream) -> None:
    ehlos = 0
    original = getattr(upstream.handler, "handle_EHLO", None)
    assert original is None

    async def handle_EHLO(server, session, envelope, hostname, responses):  # noqa: ANN001,ANN202,N802
        nonlocal ehlos
        ehlos += 1
        session.host_name = hostname  # what aiosmtpd's own EHLO would have recorded
        return responses

    upstream.handler.handle_EHLO = handle_EHLO  # type: ignore[attr-defined]
    c = client(upstream.port)
    for i in range(5):
        assert await c.send("a@news.example.com", [f"r{i}@example.org"], DATA) == {}
    await c.close()
    assert len(upstream.received) == 5
    assert ehlos == 1  # one pooled connection served all five


async def test_refused_recipient_is_returned(upstream: Upstream) -> None:
    upstream.handler.rcpt_reply["bad@example.org"] = "550 5.1.1 no such user"
    c = client(upstream.port)
    refused = await c.send("a@news.example.com", ["ok@example.org", "bad@example.org"], DATA)
    assert refused == {"bad@example.org": (550, "5.1.1 no such user")}
    assert upstream.recipients() == ["ok@example.org"]
    await c.close()


@pytest.mark.parametrize(("reply", "temporary"), [("451 4.3.0 later", True),
                                                  ("554 5.7.1 no", False)])
async def test_data_replies_map_to_upstream_error(upstream: Upstream, reply: str,
                                                  temporary: bool) -> None:
    upstream.handler.reply = reply
    c = client(upstream.port)
    with pytest.raises(UpstreamError) as info:
        await c.send("a@news.example.com", ["r@example.org"], DATA)
    assert info.value.temporary is temporary and info.value.code == int(reply[:3])
    await c.close()


async def test_down_and_silent_upstreams_are_temporary() -> None:
    with pytest.raises(UpstreamError) as info:
        await client(free_port()).send("a@x.test", ["r@example.org"], DATA)
    assert info.value.temporary

    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await done.wait()  # accept, then never answer: a hung upstream
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamError) as info:
            await client(port, timeout=0.5).send("a@x.test", ["r@example.org"], DATA)
        assert info.value.temporary and "10.0" not in str(info.value)
    finally:
        done.set()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # let the handler close its side
