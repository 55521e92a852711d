"""Every page a person meets, in a real Chromium: four languages, phone and desktop, axe-core.

Phone 390×844, a 320 px phone, 200 % zoom on the 390 px phone (a 195 CSS px layout
viewport, WCAG 2.2 SC 1.4.10) and a desktop; English, Vietnamese, Arabic and Thai.
On each: no horizontal scroll, a focus ring of at least 3:1 on every focusable
element (computed from the rendered styles, SC 1.4.11), and axe-core (npm
`axe-core`, injected into the page) reports no violation. The journey is the
issue's: a weekly-digest email's /u/ link, "stop all marketing email" (two
clicks), the centre after leaving, the data as a page, subscribing again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from proxy.http.app import make_app
from proxy.http.data_i18n import DATA
from proxy.http.i18n import TEXTS
from proxy.metrics import Metrics
from proxy.policy_store import PolicyStore
from tests.conftest import ROOT, Site

pytestmark = pytest.mark.skipif(os.environ.get("HEED_SKIP_BROWSER") == "1",
                                reason="HEED_SKIP_BROWSER=1")

# npm's axe-core, installed by .ci/run; HEED_AXE names another copy of axe.min.js.
AXE = Path(os.environ.get("HEED_AXE", ROOT / ".ci/node/node_modules/axe-core/axe.min.js"))
LANGS = ("en", "vi", "ar", "th")
# name -> (viewport in CSS px, device scale factor). Zooming to 200 % halves the CSS
# px a window holds: a 390 px phone at 200 % lays out 195 CSS px.
SCREENS = {"phone": ({"width": 390, "height": 844}, 3),
           "narrow": ({"width": 320, "height": 640}, 2),
           "zoom200": ({"width": 195, "height": 422}, 6),
           "desktop": ({"width": 1280, "height": 800}, 1)}

# For each element keyboard focus reaches: its outline as rendered, and the colour
# behind it (the outline is drawn outside the element, on its parent's background).
FOCUS_JS = """() => {
  const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = c => { const [r, g, b] = rgb(c).slice(0, 3).map(v => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const back = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = getComputedStyle(e).backgroundColor, m = rgb(c);
      if (m.length === 3 || (m.length === 4 && m[3] > 0)) return c;
    }
    return 'rgb(255, 255, 255)'; };
  const el = document.activeElement, s = getComputedStyle(el);
  const a = lum(s.outlineColor), b = lum(back(el.parentElement));
  return {id: el.id || el.tagName, style: s.outlineStyle, width: parseFloat(s.outlineWidth),
          ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)};
}"""


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        pytest.fail(f"axe-core is not at {AXE}: `npm install --prefix .ci/node axe-core@4` "
                    "(bash .ci/run does it), or set HEED_AXE, or HEED_SKIP_BROWSER=1")
    return AXE.read_text(encoding="utf-8")


async def check(page: Any, axe: str, where: str) -> None:
    """No horizontal scroll, a visible >= 3:1 focus ring everywhere, no axe violation."""
    width, room = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert width <= room, f"{where}: scrolls sideways ({width} > {room} CSS px)"
    await page.evaluate("document.activeElement && document.activeElement.blur()")
    seen = []
    for _ in range(30):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement === document.body"):
            break
        ring = await page.evaluate(FOCUS_JS)
        if seen and ring["id"] == seen[0]["id"]:
            break
        seen.append(ring)
    controls = await page.evaluate("document.querySelectorAll('a[href],button,input').length")
    assert seen or not controls, f"{where}: nothing takes keyboard focus"
    weak = [r for r in seen if r["style"] == "none" or r["width"] < 2 or r["ratio"] < 3]
    assert not weak, f"{where}: focus rings below 3:1 or missing: {weak}"
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(axe)  # through DevTools: the page's CSP forbids scripts
    found = await page.evaluate("axe.run(document).then(r => r.violations.map("
                                "v => [v.id, v.impact, v.nodes.map(n => n.target.join(' '))]))")
    assert found == [], f"{where}: axe-core violations {found}"


@pytest.mark.parametrize("lang", LANGS)
async def test_weekly_digest_journey_on_every_screen(browser: Any, site: Site, axe_source: str,
                                                     lang: str) -> None:
    server, state, tokens, store = site
    digest = store.current.streams["newsletter"].label(lang)
    assert digest.lang == lang  # the shipped policy has this language
    for screen, (viewport, scale) in SCREENS.items():
        where = f"{lang}/{screen}"
        address = f"{lang}.{screen}@example.org"
        for name in ("marketing", "weekly-digest"):
            await state.grant(address, name, source="signup form")
        context = await browser.new_context(locale=lang, viewport=viewport,
                                            device_scale_factor=scale,
                                            extra_http_headers={"Accept-Language": lang})
        page = await context.new_page()
        # Click one: the link in the email.
        await page.goto(str(server.make_url(f"/u/{tokens.make(address, 'weekly-digest')}")))
        assert digest.text in await page.inner_text("#question")
        assert digest.text in await page.inner_text("#unsubscribe")
        assert "weekly-digest" not in await page.content()
        await check(page, axe_source, f"{where} /u/")
        # Click two: "stop all marketing email". One POST, no redirect, no cookie.
        url = page.url
        await page.click("#unsubscribe-all")
        await page.wait_for_selector("[role=status]")
        assert page.url == url and await context.cookies() == []
        assert await page.inner_text("h1") == TEXTS[lang]["done_all_title"]
        refusal = (await state.snapshot(address)).refusals["*"]
        assert (refusal.kind, refusal.channel) == ("unsubscribe", "page")
        await check(page, axe_source, f"{where} /u/ done")
        # The centre after leaving: the state and the way back, no dead controls.
        await page.click("#manage")
        await page.wait_for_selector("#left")
        assert digest.text in await page.inner_text("main")
        assert await page.locator("input[type=checkbox], #save, #pause30").count() == 0
        await check(page, axe_source, f"{where} /p/ after leaving")
        # The data as a page, in the person's language.
        await page.click("#view")
        await page.wait_for_selector("#lists")
        assert await page.inner_text("h1") == DATA[lang]["title"]
        assert digest.text in await page.inner_text("#lists")
        await check(page, axe_source, f"{where} data page")
        await page.click("#back")
        await page.wait_for_selector("#rejoin")
        await page.click("#rejoin")  # subscribing again is the person's own act
        await page.wait_for_selector("#s0")
        consent = (await state.snapshot(address)).consents["weekly-digest"]
        assert consent.source == "preference centre"
        await check(page, axe_source, f"{where} /p/")
        await page.click("#erase")
        await page.wait_for_selector("#erase-confirm")
        await check(page, axe_source, f"{where} erase?")
        await page.goto(str(server.make_url("/u/not-a-token")))
        await check(page, axe_source, f"{where} bad link")
        await context.close()


async def test_english_label_stands_in_for_a_missing_language_of_that_stream_only(
        browser: Any, site: Site, axe_source: str, tmp_path: Path) -> None:
    server, state, tokens, _ = site
    policies = tmp_path / "policies"
    policies.mkdir()
    shipped = (ROOT / "policies" / "00-streams.yaml").read_text(encoding="utf-8")
    # The digest loses its Thai label; the other stream keeps its own.
    (policies / "00-streams.yaml").write_text(
        shipped.replace("      th: สรุปข่าวประจำสัปดาห์\n", ""), encoding="utf-8")
    store = PolicyStore(policies)
    assert any("'newsletter' has no label in th" in w for w in store.current.warnings)
    app_server = TestServer(make_app(tokens=tokens, state=state, metrics=Metrics(),
                                     policies=store), host="127.0.0.1")
    await app_server.start_server()
    try:
        context = await browser.new_context(locale="th",
                                            extra_http_headers={"Accept-Language": "th"})
        page = await context.new_page()
        digest = tokens.make("x@example.org", "weekly-digest")
        await page.goto(str(app_server.make_url(f"/u/{digest}")))
        question = page.locator("#question bdi[lang=en]")
        assert await question.inner_text() == "Weekly digest"  # marked as English
        assert "หยุดส่งอีเมลจาก" in await page.inner_text("#question")  # the rest is Thai
        await check(page, axe_source, "th, English label")
        offers = tokens.make("x@example.org", "marketing")
        await page.goto(str(app_server.make_url(f"/u/{offers}")))
        assert "ข้อเสนอและข่าวสาร" in await page.inner_text("#question")
        await context.close()
    finally:
        await app_server.close()


async def test_the_checks_do_catch_what_they_look_for(browser: Any, axe_source: str) -> None:
    """The yellow ring /u/ had (1.68:1), a sideways scroll and an unlabelled field all fail."""
    page = await browser.new_page(viewport={"width": 390, "height": 844})
    await page.set_content('<html lang="en"><head><title>t</title><style>'
                           ":focus-visible{outline:3px solid #f1c232}</style></head><body><main>"
                           "<h1>t</h1><button>Go</button></main></body></html>")
    with pytest.raises(AssertionError, match="focus rings below 3:1"):
        await check(page, axe_source, "yellow")
    await page.set_content('<html lang="en"><head><title>t</title></head><body><main><h1>t</h1>'
                           '<div style="width:500px">wide</div></main></body></html>')
    with pytest.raises(AssertionError, match="scrolls sideways"):
        await check(page, axe_source, "wide")
    await page.set_content('<html lang="en"><head><title>t</title></head><body><main><h1>t</h1>'
                           '<input type="text"></main></body></html>')
    with pytest.raises(AssertionError, match="label"):
        await check(page, axe_source, "unlabelled")
    await page.close()
