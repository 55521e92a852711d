"""A real headless Chromium opens the unsubscribe page, clicks the button; Arabic lays out RTL."""

from __future__ import annotations

import os
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

VIEWPORT = {"width": 900, "height": 600}

# Skipped only on request; a missing or broken browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(os.environ.get("HEED_SKIP_BROWSER") == "1",
                                reason="HEED_SKIP_BROWSER=1")


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
    # The inline style applies under the strict CSP.
    colour = await page.eval_on_selector("#unsubscribe", "b => getComputedStyle(b).backgroundColor")
    assert colour == "rgb(11, 83, 148)"
    assert await aredis.dbsize() == 0  # opening the page changed nothing
    await page.click("#unsubscribe")
    await page.wait_for_selector("[role=status]")
    assert "You have been unsubscribed" in await page.inner_text("h1")
    assert page.url == str(server.make_url(f"/u/{token}"))  # no redirect
    refusal = (await state.snapshot("ana@example.org")).refusals["marketing"]
    # The page's button (open, press) is told apart from a mail client's one-click POST.
    assert (refusal.kind, refusal.channel) == ("unsubscribe", "page")


async def test_keyboard_alone(browser: Any, site: tuple[TestServer, State, TokenSigner]) -> None:
    server, state, tokens = site
    page = await browser.new_page()
    await page.goto(str(server.make_url(f"/u/{tokens.make('cy@example.org', 'weekly')}")))
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "unsubscribe"
    outline = await page.eval_on_selector("#unsubscribe", "b => getComputedStyle(b).outlineStyle")
    assert outline == "solid"  # a visible focus ring
    await page.keyboard.press("Enter")
    await page.wait_for_selector("[role=status]")
    assert "weekly" in (await state.snapshot("cy@example.org")).refusals


async def test_arabic_is_right_to_left(browser: Any, site: tuple[TestServer, State, TokenSigner],
                                       tmp_path: Path) -> None:
    server, _, tokens = site
    url = str(server.make_url(f"/u/{tokens.make('ben@example.org', 'marketing')}"))
    boxes = {}
    for lang in ("en", "ar"):
        context = await browser.new_context(locale=lang, viewport=VIEWPORT,
                                            extra_http_headers={"Accept-Language": lang})
        page = await context.new_page()
        await page.goto(url)
        boxes[lang] = await page.locator("#unsubscribe").bounding_box()
        direction = await page.evaluate("document.documentElement.dir")
        assert direction == ("rtl" if lang == "ar" else "ltr")
        await page.screenshot(path=str(tmp_path / f"unsubscribe-{lang}.png"))
        if os.environ.get("HEED_SCREENSHOTS"):
            await page.screenshot(path=f"{os.environ['HEED_SCREENSHOTS']}/unsubscribe-{lang}.png")
        if lang == "ar":
            # The masked address stays one left-to-right run inside the Arabic sentence.
            assert "b•••@example.org" in await page.inner_text("#question bdi >> nth=1")
        await context.close()
    en, ar = boxes["en"], boxes["ar"]
    # English: the button starts at the column's left edge; Arabic: it ends at the right
    # edge, the mirror image (same gap to the viewport's other side).
    assert ar["x"] > en["x"] + 100
    assert abs((VIEWPORT["width"] - (ar["x"] + ar["width"])) - en["x"]) < 2
    assert (tmp_path / "unsubscribe-ar.png").stat().st_size > 1000
