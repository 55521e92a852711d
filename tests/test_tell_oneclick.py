"""The one-click POST's own guards, against real HTTP peers on loopback: what it refuses, what
it reads, and that one bad tool link never stalls the others."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from proxy.clock import ManualClock
from proxy.keys import Keys
from proxy.state import State
from proxy.tell.offer import Offer
from proxy.tell.oneclick import OneClick
from proxy.tell.webhook import WebhookSender
from tests.test_tell_sync import offer, outcomes, teller
from tests.tool_standin import ToolStandIn

B = "bo@example.org"
SECRET = "whsec_" + base64.b64encode(b"hook-secret-0123456789abcdef").decode()


@pytest.mark.parametrize("url", [
    "https://[64:ff9b::a00:1]/u",  # NAT64 (RFC 6052) of 10.0.0.1
    "https://[64:ff9b::7f00:1]/u",  # NAT64 of 127.0.0.1
    "https://[64:ff9b:1::a00:1]/u",  # local-use NAT64 prefix (RFC 8215)
    "https://[2002:a00:1::1]/u",  # 6to4 (RFC 3056) of 10.0.0.1
    "https://[::a00:1]/u",  # IPv4-compatible (RFC 4291 §2.5.5.1) of 10.0.0.1
])
async def test_an_ipv6_address_that_carries_a_private_ipv4_is_refused(url: str) -> None:
    # SSRF: on a network with a NAT64 gateway or a 6to4 relay, these reach the IPv4 inside.
    client = OneClick((), 1.0)
    try:
        got = await client.post(url)
    finally:
        await client.close()
    assert not got.ok and not got.retry and "tell.allow" in got.detail, got


@pytest.mark.parametrize("url", [
    "https://[::1/u",  # an unclosed IPv6 literal
    "https://" + "a" * 70 + ".example/u",  # a DNS label over 63 octets (IDNA refuses it)
    "https://tool.example:99999/u",  # a port out of range
])
async def test_a_malformed_link_is_refused_for_good_not_raised(url: str) -> None:
    client = OneClick((), 1.0)
    try:
        got = await client.post(url)
    finally:
        await client.close()
    assert not got.ok and not got.retry and got.detail.startswith("refused"), got


async def test_one_malformed_tool_link_does_not_stall_the_others(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path) -> None:
    tool = ToolStandIn().start()
    try:
        await offer(aredis, keys, clock, Offer("https://[::1/oc", True, ""))
        await offer(aredis, keys, clock, Offer(tool.url("/oc"), True, ""), address=B)
        t = teller(aredis, keys, clock, tmp_path)
        state = State(aredis, keys, clock)
        await state.refuse("ana@example.org", "unsubscribe", list="marketing", channel="x")
        await state.refuse(B, "unsubscribe", list="marketing", channel="x")
        assert await t.run_once() == 2
        assert len(tool.got) == 1  # bo's link was told in the same round
        [dead] = await t.jobs.dead()
        assert dead.address == "ana@example.org"
        assert [o for o, _ in await outcomes(aredis, keys)] == ["tool-not-told"]
        await t.close()
    finally:
        tool.stop()


def test_a_mailto_that_is_no_uri_is_a_bad_mailto() -> None:
    from proxy.tell.mailto import BadMailto, parse_mailto

    with pytest.raises(BadMailto):
        parse_mailto("mailto://[leave@tool.example")


async def endless_peer() -> tuple[web.AppRunner, int, list[int]]:
    """A loopback HTTP peer that answers 200 and then a body that never ends."""
    sent: list[int] = []

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while True:
                await response.write(chunk)
                sent.append(len(chunk))
        except (ConnectionError, RuntimeError):
            return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", endless)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port, sent


async def test_a_200_with_an_endless_body_is_a_success_at_once() -> None:
    # The status is the tool's answer; a page that never ends must neither fill heed's
    # memory nor turn a "done" into a timeout and a retry.
    runner, port, sent = await endless_peer()
    client = OneClick(("127.0.0.1",), 3.0)
    hooks = WebhookSender(((f"http://127.0.0.1:{port}/hook", (SECRET,)),), 3.0)
    try:
        started = time.monotonic()
        got = await client.post(f"http://127.0.0.1:{port}/oc")
        told = await hooks.send(f"http://127.0.0.1:{port}/hook", "msg_1", "{}", time.time())
        took = time.monotonic() - started
    finally:
        await client.close()
        await hooks.close()
        await asyncio.sleep(0.1)
        await runner.cleanup()
    assert got.ok and told.ok, (got, told)
    assert took < 3.0
    assert sum(sent) < 64 * 1024 * 1024  # not read to the end (there is none)
