"""One-click unsubscribe over real HTTP: POST records, GET/HEAD never do, forgeries fail."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.http.app import SECURITY_HEADERS, make_app, start_http
from proxy.keys import Keys
from proxy.metrics import Metrics
from proxy.settings import UnsubscribeKey
from proxy.state import State
from proxy.tokens import TokenSigner
from tests.harness import CONSENT_POLICY, HeedThread, make_settings, policy_dir

KEY = UnsubscribeKey("t1", b"test-secret-0123456789abcdef")


@pytest.fixture
def tokens(clock: ManualClock) -> TokenSigner:
    return TokenSigner([KEY], clock, 90 * 86400)


def text_of(page: str) -> str:
    """The page's words without tags (values sit in <bdi>)."""
    return re.sub(r"<[^>]+>", "", page)


async def serve(state: State, tokens: TokenSigner, ready=None) -> TestServer:  # noqa: ANN001
    metrics = Metrics()
    server = TestServer(make_app(tokens=tokens, state=state, metrics=metrics, ready=ready),
                        host="127.0.0.1")
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
        assert "You have been unsubscribed" in text_of(await r.text())
        assert "<bdi>a•••@example.org</bdi>" in await r.text()
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
            assert "Stop emails from marketing to b•••@example.org?" in text_of(await r.text())
            r = await s.head(server.make_url(f"/u/{token}"), allow_redirects=False)
            assert r.status == 200 and await r.read() == b""
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
        for bad in (forged, token[:-1]):  # the GET page for a bad link is the same page
            r = await s.get(server.make_url(f"/u/{bad}"))
            assert r.status == 400
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
        r = await s.post(server.make_url(f"/u/{token}"))  # a bare POST is not a one-click
        assert r.status == 400
        r = await s.post(server.make_url(f"/u/{token}"), data=b"List-Unsubscribe=One-Click&" * 5000,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 413  # a one-click body is 26 bytes
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
    ("en;q=0.2, ar-EG;q=0.9, vi;q=0.5", "ar", "rtl"),
    ("vi;q=0, de", "en", "ltr"),
    ("de", "en", "ltr"),
    ("", "en", "ltr"),
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
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "<script" not in text and "http" not in text.split("</style>")[1]  # nothing external


async def test_security_headers_on_every_answer(http: tuple[TestServer, State],
                                               tokens: TokenSigner) -> None:
    server, _ = http
    token = tokens.make("gus@example.org", "marketing")
    async with aiohttp.ClientSession() as s:
        for method, path in [("GET", f"/u/{token}"), ("GET", "/u/bogus"), ("POST", "/u/bogus"),
                             ("GET", "/nowhere"), ("PUT", f"/u/{token}")]:
            r = await s.request(method, server.make_url(path), allow_redirects=False)
            for name, value in SECURITY_HEADERS.items():
                assert r.headers[name] == value, (method, path, name)
            assert "set-cookie" not in r.headers


async def test_plain_text_body_is_read_alike(http: tuple[TestServer, State],
                                             tokens: TokenSigner) -> None:
    server, state = http
    token = tokens.make("hal@example.org", "weekly")
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url(f"/u/{token}"), data=b"List-Unsubscribe=One-Click\r\n",
                         headers={"Content-Type": "text/plain"})
        assert r.status == 200
    assert "weekly" in (await state.snapshot("hal@example.org")).refusals


async def test_health_readiness_and_metrics(aredis: aioredis.Redis, keys: Keys,
                                            clock: ManualClock, tokens: TokenSigner) -> None:
    checks = {"redis": True, "upstream": True}

    async def ready() -> dict[str, bool]:
        return dict(checks)

    server = await serve(State(aredis, keys, clock), tokens, ready)
    token = tokens.make("ida@example.org", "marketing")
    one_click = {"List-Unsubscribe": "One-Click"}
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(server.make_url("/healthz"))
            assert (r.status, await r.text()) == (200, "ok\n")
            r = await s.get(server.make_url("/readyz"))
            assert (r.status, await r.json()) == (200, checks)
            checks["upstream"] = False
            r = await s.get(server.make_url("/readyz"))
            assert (r.status, await r.json()) == (503, {"redis": True, "upstream": False})
            await s.get(server.make_url("/u/bogus"))
            await s.head(server.make_url(f"/u/{token}"))
            await s.post(server.make_url(f"/u/{token}"), data=one_click)
            await s.post(server.make_url(f"/u/{token}"), data=one_click)
            r = await s.get(server.make_url("/metrics"))
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
    finally:
        await server.close()
    for line in ('heed_unsubscribe_requests_total{method="GET",result="bad"} 1.0',
                 'heed_unsubscribe_requests_total{method="HEAD",result="shown"} 1.0',
                 'heed_unsubscribe_requests_total{method="POST",result="recorded"} 1.0',
                 'heed_unsubscribe_requests_total{method="POST",result="repeat"} 1.0'):
        assert line in text
    for name in ("heed_upstream_seconds_bucket", "heed_redis_seconds_bucket",
                 "heed_decision_seconds_bucket", "heed_queue_depth", "heed_queue_oldest_seconds"):
        assert name in text


async def test_two_apps_and_start_http(aredis: aioredis.Redis, keys: Keys, clock: ManualClock,
                                       tokens: TokenSigner) -> None:
    """Each app has its own registry; start_http serves inside the running loop."""
    state = State(aredis, keys, clock)
    first, second = Metrics(), Metrics()
    port = free_port()
    runner = await start_http(make_app(tokens=tokens, state=state, metrics=first),
                              "127.0.0.1", port)
    make_app(tokens=tokens, state=state, metrics=second)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.get(f"http://127.0.0.1:{port}/u/bogus")
            assert r.status == 400
    finally:
        await runner.cleanup()
    assert first.unsubscribe.labels("GET", "bad")._value.get() == 1
    assert second.unsubscribe.labels("GET", "bad")._value.get() == 0


@pytest.mark.parametrize(("on_failure", "status"), [("queue", 200), ("tempfail", 503)])
def test_readyz_with_the_upstream_down_follows_on_failure(
        redis_url: str, tmp_path: Path, on_failure: str, status: int) -> None:
    """Queueing, heed takes mail while the upstream is down (250, held): still ready."""
    http = free_port()
    settings = make_settings(redis_url=redis_url, upstream_port=free_port(),  # nobody there
                             policies=policy_dir(tmp_path, CONSENT_POLICY),
                             upstream={"on_failure": on_failure},
                             http={"listen": f"127.0.0.1:{http}"})
    h = HeedThread(settings, ManualClock(1_800_000_000.0)).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=30) as r:
            answer = (r.status, json.loads(r.read()))
    except urllib.error.HTTPError as e:
        answer = (e.code, json.loads(e.read()))
    finally:
        h.stop()
    assert answer == (status, {"ready": status == 200, "redis": True, "upstream": False,
                               "on_failure": on_failure})


async def test_the_page_names_the_list_and_offers_leaving_everything(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tokens: TokenSigner) -> None:
    """The policy's label in the page's language; two buttons, each one POST, no redirect."""
    from proxy.policy_store import PolicyStore
    from tests.conftest import ROOT

    state = State(aredis, keys, clock)
    server = TestServer(make_app(tokens=tokens, state=state, metrics=Metrics(),
                                 policies=PolicyStore(ROOT / "policies")), host="127.0.0.1")
    await server.start_server()
    digest = tokens.make("ana@example.org", "weekly-digest")
    offers = tokens.make("bo@example.org", "marketing")
    try:
        async with aiohttp.ClientSession(headers={"Accept-Language": "th"}) as s:
            page = await (await s.get(server.make_url(f"/u/{digest}"))).text()
            assert "หยุดส่งอีเมลจาก สรุปข่าวประจำสัปดาห์ ถึง a•••@example.org" in text_of(page)
            assert 'id="unsubscribe"' in page and 'id="unsubscribe-all"' in page
            assert "weekly-digest" not in page and await aredis.dbsize() == 0
            body = {"List-Unsubscribe": "One-Click", "via": "page", "scope": "all"}
            r = await s.post(server.make_url(f"/u/{digest}"), data=body, allow_redirects=False)
            assert r.status == 200 and "set-cookie" not in r.headers
            assert "คุณหยุดรับอีเมลการตลาดทั้งหมดแล้ว" in await r.text()
            body = {"List-Unsubscribe": "One-Click", "via": "page"}
            r = await s.post(server.make_url(f"/u/{offers}"), data=body, allow_redirects=False)
            assert r.status == 200 and "ข้อเสนอและข่าวสาร" in await r.text()
        ana = (await state.snapshot("ana@example.org")).refusals
        assert list(ana) == ["*"] and (ana["*"].kind, ana["*"].channel) == ("unsubscribe", "page")
        bo = (await state.snapshot("bo@example.org")).refusals
        assert list(bo) == ["marketing"] and bo["marketing"].channel == "page"
        # A mail client's one-click POST leaves the list, whatever else the body says.
        async with aiohttp.ClientSession() as s:
            cy = tokens.make("cy@example.org", "weekly-digest")
            r = await s.post(server.make_url(f"/u/{cy}"), data={"List-Unsubscribe": "One-Click"})
            assert r.status == 200 and "Weekly digest" in await r.text()
        assert list((await state.snapshot("cy@example.org")).refusals) == ["weekly-digest"]
    finally:
        await server.close()


def _multipart(headers: str, value: str = "One-Click") -> bytes:
    return ('--zz\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n' + headers +
            "\r\n\r\n" + value + "\r\n--zz--\r\n").encode()


async def test_a_body_heed_cannot_decode_is_a_400_never_a_500(
        http: tuple[TestServer, State], tokens: TokenSigner, aredis: aioredis.Redis) -> None:
    # Bad input gets a clear error: an unknown charset or transfer encoding is the
    # sender's mistake, not heed's (aiohttp raises LookupError/RuntimeError for them).
    server, _ = http
    token = tokens.make("eve@example.org", "marketing")
    bodies = [
        ("multipart/form-data; boundary=zz", _multipart("Content-Type: text/plain; charset=bogus")),
        ("multipart/form-data; boundary=zz", _multipart("Content-Transfer-Encoding: bogus")),
        ("multipart/form-data; boundary=zz", _multipart("Content-Transfer-Encoding: base64",
                                                        "!!!")),
    ]
    async with aiohttp.ClientSession() as s:
        for content_type, body in bodies:
            r = await s.post(server.make_url(f"/u/{token}"), data=body,
                             headers={"Content-Type": content_type})
            assert r.status == 400, (content_type, body, r.status)
            assert "text/html" in r.headers["Content-Type"]
    assert await aredis.dbsize() == 0
