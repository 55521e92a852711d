"""A real headless Chromium uses the preference centre: every form, the download, erasure, RTL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from proxy.clock import ManualClock
from proxy.policy import decide
from proxy.tokens import PREFERENCES
from proxy.types import Action
from tests.conftest import Site

VIEWPORT = {"width": 900, "height": 900}
DAY = 86400.0

pytestmark = pytest.mark.skipif(os.environ.get("HEED_SKIP_BROWSER") == "1",
                                reason="HEED_SKIP_BROWSER=1")


# WCAG 2.x relative luminance and contrast ratio of each text element against the
# first opaque background behind it.
CONTRAST_JS = """() => {
  const lum = c => {
    const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(v => {
      v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const back = el => {
    for (let e = el; e; e = e.parentElement) {
      const m = getComputedStyle(e).backgroundColor.match(/[\\d.]+/g);
      if (m && (m.length < 4 || Number(m[3]) > 0)) return getComputedStyle(e).backgroundColor;
    }
    return 'rgb(255, 255, 255)'; };
  return [...document.querySelectorAll('h1,h2,p,label,legend,button,a,small')].map(el => {
    const a = lum(getComputedStyle(el).color), b = lum(back(el));
    return [el.tagName + '#' + el.id, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]; });
}"""


async def open_centre(browser: Any, site: Site, address: str, lang: str = "en",
                      joined: tuple[str, ...] = ("marketing", "weekly-digest")) -> Any:
    """The centre of a person who joined ``joined`` (it shows only those lists)."""
    server, state, tokens, _ = site
    consents = (await state.snapshot(address)).consents
    for name in joined:
        if name not in consents:
            await state.grant(address, name, source="signup form")
    context = await browser.new_context(locale=lang, viewport=VIEWPORT, accept_downloads=True,
                                        extra_http_headers={"Accept-Language": lang})
    page = await context.new_page()
    await page.goto(str(server.make_url(f"/p/{tokens.make(address, 'marketing', PREFERENCES)}")))
    return page


async def test_toggle_a_list_and_the_frequency(browser: Any, site: Site,
                                               clock: ManualClock) -> None:
    _, state, _, _ = site
    page = await open_centre(browser, site, "ana@example.org")
    # Click the words, not the box: each label is tied to its control.
    await page.get_by_label("Weekly digest").click()
    await page.get_by_label("At most one email a month").click()
    await page.click("#save")
    await page.wait_for_selector("[role=status]")
    assert "Saved." in await page.inner_text("[role=status]")
    assert not await page.is_checked("#s1") and await page.is_checked("#s0")
    assert await page.is_checked("#f-monthly")
    person = await state.snapshot("ana@example.org")
    assert person.prefs.off == {"newsletter"} and person.prefs.frequency == "monthly"
    assert person.last_engaged == clock.now()  # the POST counted as a visit


async def test_pause_resume_and_leave_everything(browser: Any, site: Site,
                                                 clock: ManualClock) -> None:
    _, state, _, _ = site
    page = await open_centre(browser, site, "bo@example.org")
    await page.click("#pause90")
    await page.wait_for_selector("#paused")
    assert "2027-04-15" in await page.inner_text("#paused")  # 90 days after 2027-01-15
    assert (await state.snapshot("bo@example.org")).prefs.paused_until == clock.now() + 90 * DAY
    await page.click("#resume")
    await page.wait_for_selector("#pause30")
    assert (await state.snapshot("bo@example.org")).prefs.paused_until is None
    await page.click("#leave")
    await page.wait_for_selector("#left")
    refusal = (await state.snapshot("bo@example.org")).refusals["*"]
    assert (refusal.kind, refusal.channel) == ("unsubscribe", "preference-centre")
    # What is left: the state and the way back, no switch that means nothing now.
    assert await page.locator("input[type=checkbox]").count() == 0
    assert await page.locator("#save, #pause30, #pause90").count() == 0
    assert await page.is_visible("#rejoin")
    await page.click("#rejoin")
    await page.wait_for_selector("#s0")
    person = await state.snapshot("bo@example.org")
    assert "*" not in person.refusals
    assert person.consents["marketing"].source == "preference centre"


async def test_download_my_data(browser: Any, site: Site, tmp_path: Path) -> None:
    _, state, _, _ = site
    await state.grant("cy@example.org", "marketing", source="signup form", ip="192.0.2.9",
                      text="Yes, send me offers (v4)")
    await state.refuse("cy@example.org", "unsubscribe", list="weekly-digest", channel="mailto")
    page = await open_centre(browser, site, "cy@example.org", joined=())
    async with page.expect_download() as info:
        await page.click("#download")
    download = await info.value
    assert download.suggested_filename == "my-data.json"
    await download.save_as(tmp_path / "my-data.json")
    data = json.loads((tmp_path / "my-data.json").read_text(encoding="utf-8"))
    offers, digest = data["lists"]
    proof = offers["consent"]
    assert (offers["label"], proof["source"], proof["ip"], proof["text"]) == (
        "Offers and news", "signup form", "192.0.2.9", "Yes, send me offers (v4)")
    assert digest["refusal"]["channel"] == "mailto" and digest["consent"] is None
    assert data["engagement"]["by_kind"] == []  # downloading is not engagement
    assert {d["outcome"] for d in data["recent_decisions"]} >= {"granted", "refused"}


async def test_erase_me(browser: Any, site: Site, clock: ManualClock) -> None:
    _, state, _, store = site
    await state.grant("di@example.org", "marketing", source="form", ip="192.0.2.3", text="v1")
    page = await open_centre(browser, site, "di@example.org")
    await page.click("#erase")
    await page.wait_for_selector("#erase-confirm")
    assert "Erase your data?" in await page.inner_text("h1")
    assert (await state.snapshot("di@example.org")).consents  # asking changed nothing
    await page.click("#erase-confirm")
    await page.wait_for_selector("#kept")
    assert "one-way code" in await page.inner_text("#kept")
    person = await state.snapshot("di@example.org")
    assert person.suppressed and not person.consents
    policy = store.current
    for name in ("marketing", "newsletter"):
        assert decide(policy, name, person, clock.now()).action is Action.DROP


async def test_keyboard_order_focus_ring_and_contrast(browser: Any, site: Site) -> None:
    page = await open_centre(browser, site, "ed@example.org")
    order = []
    for _ in range(10):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate("document.activeElement.id"))
    # Reading order is tab order; a radio group is one stop (its checked choice).
    assert order == ["s0", "s1", "f-as_sent", "save", "pause30", "pause90", "leave",
                     "view", "download", "erase"]
    ring = await page.evaluate("[getComputedStyle(document.activeElement).outlineStyle,"
                               " getComputedStyle(document.activeElement).outlineColor]")
    assert ring == ["solid", "rgb(26, 26, 26)"]
    for _ in range(3):
        await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Enter")  # "Leave everything", by keyboard alone
    await page.wait_for_selector("#left")
    ratios = await page.evaluate(CONTRAST_JS)
    low = [(name, round(r, 2)) for name, r in ratios if r < 4.5]
    assert ratios and not low


async def test_arabic_is_right_to_left(browser: Any, site: Site, tmp_path: Path) -> None:
    boxes: dict[str, dict[str, Any]] = {}
    for lang in ("en", "ar"):
        page = await open_centre(browser, site, "fa@example.org", lang)
        assert await page.evaluate("document.documentElement.dir") == (
            "rtl" if lang == "ar" else "ltr")
        boxes[lang] = {"box": await page.locator("#s0").bounding_box(),
                       "label": await page.locator("label[for=s0]").bounding_box(),
                       "legend": await page.locator("legend >> nth=0").bounding_box()}
        await page.screenshot(path=str(tmp_path / f"preferences-{lang}.png"), full_page=True)
        if os.environ.get("HEED_SCREENSHOTS"):
            await page.screenshot(path=f"{os.environ['HEED_SCREENSHOTS']}/preferences-{lang}.png",
                                  full_page=True)
        if lang == "ar":
            assert "f•••@example.org" in await page.inner_text("main p bdi")
            assert "ما تتلقاه" in await page.inner_text("legend >> nth=0")
        await page.context.close()
    en, ar = boxes["en"], boxes["ar"]
    # English: the box, then its label to the right. Arabic: the box at the right, its
    # label to the left of it; the legend starts at the right edge of the fieldset.
    assert en["label"]["x"] >= en["box"]["x"] + en["box"]["width"]
    assert ar["label"]["x"] + ar["label"]["width"] <= ar["box"]["x"]
    assert ar["box"]["x"] > en["box"]["x"] + 300
    assert ar["legend"]["x"] > en["legend"]["x"] + 100
    assert (tmp_path / "preferences-ar.png").stat().st_size > 5000
