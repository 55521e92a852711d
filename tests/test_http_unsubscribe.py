"""One-click unsubscribe over real HTTP: POST records, GET/HEAD never do, forgeries fail."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.http.app import make_app
from proxy.keys import Keys
from proxy.metrics import Metrics
from proxy.settings import UnsubscribeKey
from proxy.state import State
from proxy.tokens import TokenSigner

KEY = UnsubscribeKey("t1", b"test-secret-0123456789abcdef")


@pytest.fixture
def tokens(clock: ManualClock) -> TokenSigner:
    return TokenSigner([KEY], clock, 90 * 86400)


async def serve(state: State, tokens: TokenSigner) -> TestServer:
    metrics = Metrics()
    server = TestServer(make_app(tokens=tokens, state=state, metrics=metrics), host="127.0.0.1")
    await server.start_server()
    server.metrics = metrics  # type: ignore[attr-defined]
    return server


@pytest.fixture
async def http(aredis: aioredis.Redis, keys: Keys, clock: ManualClock,
               tokens: TokenSigner) -> AsyncIterator[tuple[TestServer, State]]:
    state = State(aredis, keys, clock)
    server = await serve(state, tokens)
    yield server, state
    await server.close()


async def test_one_click_post_records_before_200(http: tuple[TestServer, State],
                                                 tokens: TokenSigner) -> None:
    server, state = http
    token = tokens.make("Ana@Example.org", "marketing")
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url(f"/u/{token}"), data={"List-Unsubscribe": "One-Click"},
                         allow_redirects=False)
        assert r.status == 200 and "set-cookie" not in r.headers
        assert "a•••@example.org" in await r.text()
    refusal = (await state.snapshot("ana@example.org")).refusals["marketing"]
    assert (refusal.kind, refusal.channel) == ("unsubscribe", "one-click")
    # Idempotent: again, still 200, the first time kept.
    async with aiohttp.ClientSession() as s:
        form = aiohttp.FormData()
        form.add_field("List-Unsubscribe", "One-Click")
        form.add_field("x", b"multipart", filename="x.bin")  # forces multipart/form-data
        r = await s.post(server.make_url(f"/u/{token}"), data=form, allow_redirects=False)
        assert r.status == 200
    again = (await state.snapshot("ana@example.org")).refusals["marketing"]
    assert again.at == refusal.at


async def test_get_and_head_change_nothing(http: tuple[TestServer, State], tokens: TokenSigner,
                                           aredis: aioredis.Redis) -> None:
    server, _ = http
    token = tokens.make("ben@example.org", "marketing")
    async with aiohttp.ClientSession() as s:
        for _ in range(50):  # a link scanner's prefetches
            r = await s.get(server.make_url(f"/u/{token}"), allow_redirects=False)
            assert r.status == 200
            assert "Stop emails from marketing to b•••@example.org?" in await r.text()
            r = await s.head(server.make_url(f"/u/{token}"), allow_redirects=False)
            assert r.status == 200
    assert await aredis.dbsize() == 0


async def test_forged_and_bit_flipped_tokens_refused(http: tuple[TestServer, State],
                                                     tokens: TokenSigner, clock: ManualClock,
                                                     aredis: aioredis.Redis) -> None:
    server, _ = http
    token = tokens.make("cat@example.org", "marketing")
    forged = TokenSigner([UnsubscribeKey("t1", b"another-secret-0123456789")], clock,
                         90 * 86400).make("cat@example.org", "marketing")
    variants = [forged, "x", token[:-1]] + [
        token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:] for i in range(len(token))]
    bodies = set()
    async with aiohttp.ClientSession() as s:
        for bad in variants:
            r = await s.post(server.make_url(f"/u/{bad}"),
                             data={"List-Unsubscribe": "One-Click"}, allow_redirects=False)
            assert r.status == 400, bad
            bodies.add(await r.text())
    assert len(bodies) == 1  # no hint whether the address is known
    assert await aredis.dbsize() == 0


async def test_expired_token_and_missing_body(http: tuple[TestServer, State],
                                              tokens: TokenSigner, clock: ManualClock,
                                              aredis: aioredis.Redis) -> None:
    server, _ = http
    token = tokens.make("dan@example.org", "marketing")
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url(f"/u/{token}"), data={"other": "1"})
        assert r.status == 400
        clock.advance(91 * 86400)
        r = await s.post(server.make_url(f"/u/{token}"), data={"List-Unsubscribe": "One-Click"})
        assert r.status == 400
    assert await aredis.dbsize() == 0


async def test_redis_down_is_503_never_200(keys: Keys, clock: ManualClock,
                                           tokens: TokenSigner) -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
    server = await serve(State(dead, keys, clock), tokens)
    try:
        token = tokens.make("eve@example.org", "marketing")
        async with aiohttp.ClientSession() as s:
            r = await s.post(server.make_url(f"/u/{token}"),
                             data={"List-Unsubscribe": "One-Click"})
            assert r.status == 503
            assert "127.0.0.1" not in await r.text()
    finally:
        await server.close()
        await dead.aclose()


@pytest.mark.parametrize(("header", "lang", "direction"), [
    ("vi-VN,vi;q=0.9,en;q=0.5", "vi", "ltr"),
    ("ar", "ar", "rtl"),
    ("fr;q=1, th;q=0.8", "th", "ltr"),
    ("de", "en", "ltr"),
])
async def test_language_from_accept_language(http: tuple[TestServer, State],
                                             tokens: TokenSigner, header: str, lang: str,
                                             direction: str) -> None:
    server, _ = http
    token = tokens.make("fay@example.org", "marketing")
    async with aiohttp.ClientSession() as s:
        r = await s.get(server.make_url(f"/u/{token}"), headers={"Accept-Language": header})
        text = await r.text()
    assert f'<html lang="{lang}" dir="{direction}">' in text
    assert "<script" not in text


async def test_health_and_metrics(http: tuple[TestServer, State], tokens: TokenSigner) -> None:
    server, _ = http
    async with aiohttp.ClientSession() as s:
        assert (await s.get(server.make_url("/healthz"))).status == 200
        await s.get(server.make_url("/u/bogus"))
        text = await (await s.get(server.make_url("/metrics"))).text()
    assert 'heed_unsubscribe_requests_total{method="GET",result="bad"} 1.0' in text
