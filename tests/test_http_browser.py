"""A real headless Chromium opens the unsubscribe page, clicks the button; Arabic lays out RTL."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from proxy.clock import ManualClock
from proxy.http.app import make_app
from proxy.keys import Keys
from proxy.metrics import Metrics
from proxy.settings import UnsubscribeKey
from proxy.state import State
from proxy.tokens import TokenSigner

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(os.environ.get("HEED_SKIP_BROWSER") == "1",
                                reason="HEED_SKIP_BROWSER=1")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    assert Path(CHROMIUM).exists(), "Chromium is needed (bash .ci/run installs it)"
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        await b.close()


@pytest.fixture
async def site(aredis: aioredis.Redis, keys: Keys,
               clock: ManualClock) -> AsyncIterator[tuple[TestServer, State, TokenSigner]]:
    tokens = TokenSigner([UnsubscribeKey("t1", b"test-secret-0123456789abcdef")], clock,
                         90 * 86400)
    state = State(aredis, keys, clock)
    server = TestServer(make_app(tokens=tokens, state=state, metrics=Metrics()),
                        host="127.0.0.1")
    await server.start_server()
    yield server, state, tokens
    await server.close()


async def test_click_the_button(browser: Any, site: tuple[TestServer, State, TokenSigner],
                                aredis: aioredis.Redis) -> None:
    server, state, tokens = site
    token = tokens.make("ana@example.org", "marketing")
    page = await browser.new_page()
    await page.goto(str(server.make_url(f"/u/{token}")))
    assert "Stop emails from marketing to a•••@example.org?" in await page.inner_text("main")
    assert await aredis.dbsize() == 0  # opening the page changed nothing
    await page.click("#unsubscribe")
    await page.wait_for_selector("[role=status]")
    assert "You have been unsubscribed" in await page.inner_text("h1")
    refusal = (await state.snapshot("ana@example.org")).refusals["marketing"]
    assert refusal.channel == "one-click"


async def test_arabic_is_right_to_left(browser: Any, site: tuple[TestServer, State, TokenSigner],
                                       tmp_path: Path) -> None:
    server, _, tokens = site
    url = str(server.make_url(f"/u/{tokens.make('ben@example.org', 'marketing')}"))
    boxes = {}
    for lang in ("en", "ar"):
        context = await browser.new_context(locale=lang, extra_http_headers={
            "Accept-Language": lang}, viewport={"width": 900, "height": 600})
        page = await context.new_page()
        await page.goto(url)
        boxes[lang] = await page.locator("#unsubscribe").bounding_box()
        direction = await page.evaluate("document.documentElement.dir")
        assert direction == ("rtl" if lang == "ar" else "ltr")
        await page.screenshot(path=str(tmp_path / f"unsubscribe-{lang}.png"))
        if os.environ.get("HEED_SCREENSHOTS"):
            await page.screenshot(path=f"{os.environ['HEED_SCREENSHOTS']}/unsubscribe-{lang}.png")
        await context.close()
    # In Arabic the button starts at the right edge of the text column, in English at the left.
    assert boxes["ar"]["x"] > boxes["en"]["x"] + 100
    assert (tmp_path / "unsubscribe-ar.png").stat().st_size > 1000
