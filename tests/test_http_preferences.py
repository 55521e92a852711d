"""The preference centre over real HTTP: tokens of its own, forms with nonces, every change."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from proxy.clock import ManualClock
from proxy.explain import explain
from proxy.http.app import SECURITY_HEADERS, make_app
from proxy.http.i18n import TEXTS
from proxy.http.prefs_i18n import PREFS
from proxy.keys import Keys
from proxy.metrics import Metrics
from proxy.policy import decide
from proxy.policy_store import PolicyStore
from proxy.settings import UnsubscribeKey
from proxy.state import State
from proxy.tokens import PREFERENCES, TokenSigner
from proxy.types import Action, DropMode
from tests.conftest import ROOT

KEY = UnsubscribeKey("t1", b"test-secret-0123456789abcdef")
SECRET = b"erase-secret-for-tests-0123456789"
ADDRESS = "ana@example.org"
DAY = 86400.0


@pytest.fixture
def tokens(clock: ManualClock) -> TokenSigner:
    return TokenSigner([KEY], clock, 90 * DAY)


@pytest.fixture
def store() -> PolicyStore:
    return PolicyStore(ROOT / "policies")  # the shipped policy: marketing, newsletter, …


@pytest.fixture
async def centre(aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tokens: TokenSigner,
                 store: PolicyStore) -> AsyncIterator[tuple[TestServer, State]]:
    state = State(aredis, keys, clock, secret=SECRET)
    app = make_app(tokens=tokens, state=state, metrics=Metrics(), policies=store,
                   public_url="https://heed.test")
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, state
    await server.close()


def nonce_of(page: str) -> str:
    found = re.search(r'name="nonce" value="([^"]+)"', page)
    assert found, "the page has no form nonce"
    return found.group(1)


async def open_page(s: aiohttp.ClientSession, server: TestServer, token: str) -> str:
    r = await s.get(server.make_url(f"/p/{token}"))
    assert r.status == 200
    return await r.text()


async def post(s: aiohttp.ClientSession, server: TestServer, token: str,
               data: list[tuple[str, str]], **kw: Any) -> aiohttp.ClientResponse:
    nonce = nonce_of(await open_page(s, server, token))
    return await s.post(server.make_url(f"/p/{token}"), data=[("nonce", nonce), *data],
                        allow_redirects=False, **kw)


async def test_tokens_are_not_interchangeable(centre: tuple[TestServer, State],
                                              tokens: TokenSigner,
                                              aredis: aioredis.Redis) -> None:
    server, _ = centre
    unsub = tokens.make(ADDRESS, "marketing")
    prefs = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    forged = prefs[:-4] + ("AAAA" if not prefs.endswith("AAAA") else "BBBA")
    async with aiohttp.ClientSession() as s:
        for path in (f"/p/{unsub}", f"/u/{prefs}", f"/p/{forged}", "/p/not-a-token"):
            r = await s.get(server.make_url(path))
            assert r.status == 400, path
            assert "This link does not work" in await r.text()
            assert r.headers["Cache-Control"] == SECURITY_HEADERS["Cache-Control"]
        r = await s.post(server.make_url(f"/p/{unsub}"), data={"action": "leave"})
        assert r.status == 400
    assert await aredis.dbsize() == 0


async def test_unsubscribe_pages_link_to_the_centre(centre: tuple[TestServer, State],
                                                    tokens: TokenSigner) -> None:
    server, _ = centre
    unsub = tokens.make(ADDRESS, "weekly-digest")
    async with aiohttp.ClientSession() as s:
        for method, data in (("GET", None), ("POST", {"List-Unsubscribe": "One-Click"})):
            r = await s.request(method, server.make_url(f"/u/{unsub}"), data=data)
            link = re.search(r'id="manage" href="/p/([A-Za-z0-9_-]+)"', await r.text())
            assert link, method
            claims = tokens.verify(link.group(1), PREFERENCES)
            assert (claims.address, claims.list) == (ADDRESS, "weekly-digest")


async def joined(state: State, *lists: str) -> None:
    """The person joined these lists (by default both marketing lists of the policy)."""
    for name in lists or ("marketing", "weekly-digest"):
        await state.grant(ADDRESS, name, source="signup form")


async def test_get_shows_marketing_streams_and_changes_nothing(
        centre: tuple[TestServer, State], tokens: TokenSigner, aredis: aioredis.Redis) -> None:
    server, state = centre
    await joined(state)
    before = {k: await aredis.dump(k) async for k in aredis.scan_iter("*")}
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        page = await open_page(s, server, token)
        r = await s.head(server.make_url(f"/p/{token}"))
        assert r.status == 200
    assert 'value="marketing" checked' in page and 'value="newsletter" checked' in page
    # The policy's labels and descriptions, not the stream names.
    assert ">Weekly digest</bdi>" in page and ">Offers and news</bdi>" in page
    assert "One email a week" in page
    assert "transactional" not in page  # nothing to choose about receipts
    assert "a•••@example.org" in page and ADDRESS not in page
    # Not "no-referrer" here: under it a browser's own form posts carry Origin: null.
    assert r.headers["Referrer-Policy"] == "same-origin"
    assert 'id="f-as_sent" value="" checked' in page
    # A GET (a link scanner) records nothing, not a visit.
    assert {k: await aredis.dump(k) async for k in aredis.scan_iter("*")} == before


async def test_only_the_lists_the_person_joined_are_shown(
        centre: tuple[TestServer, State], tokens: TokenSigner) -> None:
    server, state = centre
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        page = await open_page(s, server, token)  # joined nothing: nothing to switch
        assert 'id="none"' in page and 'type="checkbox"' not in page
        assert 'value="save"' not in page and 'value="pause30"' not in page
        assert 'value="leave"' not in page and 'value="download"' in page
        await joined(state, "marketing")
        page = await open_page(s, server, token)
        assert 'value="marketing" checked' in page and "newsletter" not in page
        assert "Weekly digest" not in page
        # Left the digest by its link: shown as left, with the way back, not a checkbox.
        await state.refuse(ADDRESS, "unsubscribe", list="weekly-digest", channel="page")
        page = await open_page(s, server, token)
        assert "Weekly digest" in page and 'value="newsletter"' not in page
        assert 'value="rejoin:weekly-digest"' in page and "disabled" not in page

async def test_save_switches_a_stream_off_and_sets_frequency(
        centre: tuple[TestServer, State], tokens: TokenSigner, clock: ManualClock) -> None:
    server, state = centre
    await joined(state)
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        r = await post(s, server, token, [("action", "save"), ("on", "marketing"),
                                          ("frequency", "monthly")])
        assert r.status == 303 and r.headers["Location"] == f"/p/{token}?done=saved"
        page = await (await s.get(server.make_url(r.headers["Location"]))).text()
    assert 'role="status"' in page and "Saved." in page
    assert 'value="newsletter">' in page and 'id="f-monthly" value="monthly" checked' in page
    person = await state.snapshot(ADDRESS)
    assert person.prefs.off == {"newsletter"} and person.prefs.frequency == "monthly"
    assert person.last_engaged == clock.now()  # a POST is a person: it counts as a visit
    entries = await state.audit.recent(ADDRESS, 5)
    assert [e.detail for e in entries if e.outcome == "engaged"] == ["preference-visit"]
    # Both apply to the next message: off drops the newsletter, monthly caps marketing.
    policy = PolicyStore(ROOT / "policies").current
    await state.grant(ADDRESS, "marketing")
    await state.grant(ADDRESS, "weekly-digest")
    person = await state.snapshot(ADDRESS)
    assert decide(policy, "newsletter", person, clock.now()).reasons[0].code == "opted_out"
    state.record_sends(pipe := state.redis.pipeline(), "marketing", [ADDRESS], clock.now())
    await pipe.execute()
    held = decide(policy, "marketing", await state.snapshot(ADDRESS), clock.now() + 3600)
    assert held.action is Action.DELAY and held.reasons[0].code == "frequency"
    assert held.until == pytest.approx(clock.now() + 30 * DAY)


async def test_a_list_switched_off_elsewhere_stays_off(
        centre: tuple[TestServer, State], tokens: TokenSigner) -> None:
    server, state = centre
    await joined(state)
    await state.set_preferences(ADDRESS, off=["promo-archive"])
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        r = await post(s, server, token, [("action", "save"), ("on", "marketing"),
                                          ("on", "newsletter"), ("frequency", "")])
        assert r.status == 303
    assert (await state.snapshot(ADDRESS)).prefs.off == {"promo-archive"}


async def test_forms_need_the_nonce_and_a_same_site_origin(
        centre: tuple[TestServer, State], tokens: TokenSigner, clock: ManualClock,
        aredis: aioredis.Redis) -> None:
    server, _ = centre
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    other = tokens.make("bo@example.org", "marketing", purpose=PREFERENCES)
    url = server.make_url(f"/p/{token}")
    async with aiohttp.ClientSession() as s:
        good = nonce_of(await open_page(s, server, token))
        foreign = nonce_of(await open_page(s, server, other))
        cases: list[tuple[dict[str, str], dict[str, str]]] = [
            ({"action": "leave"}, {}),  # no nonce
            ({"action": "leave", "nonce": "1800000000.AAAA"}, {}),  # forged
            ({"action": "leave", "nonce": foreign}, {}),  # another person's page
            ({"action": "leave", "nonce": good}, {"Origin": "https://evil.example"}),
            ({"action": "leave", "nonce": good}, {"Origin": "null"}),  # opaque origin
            ({"action": "leave", "nonce": good}, {"Sec-Fetch-Site": "cross-site"}),
        ]
        for data, headers in cases:
            r = await s.post(url, data=data, headers=headers, allow_redirects=False)
            assert r.status == 403, (data, headers)
            assert "Nothing was changed" in await r.text()
        for origin in ("https://heed.test", f"http://{url.host}:{url.port}"):
            r = await s.post(url, data={"action": "resume", "nonce": good},
                             headers={"Origin": origin}, allow_redirects=False)
            assert r.status == 303, origin
        clock.advance(2 * DAY)  # a form left open too long
        r = await s.post(url, data={"action": "leave", "nonce": good}, allow_redirects=False)
        assert r.status == 403
        r = await post(s, server, token, [("action", "dance")])
        assert r.status == 400
        r = await post(s, server, token, [("action", "save"), ("frequency", "hourly")])
        assert r.status == 400
    keys = [k.decode() async for k in aredis.scan_iter("*")]
    assert not any(k.endswith(":refusal") for k in keys)


async def test_a_form_heed_cannot_decode_is_a_400_never_a_500(
        centre: tuple[TestServer, State], tokens: TokenSigner, aredis: aioredis.Redis) -> None:
    # Bad input gets a clear error: aiohttp raises LookupError for an unknown charset.
    server, _ = centre
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        nonce = nonce_of(await open_page(s, server, token))
        r = await s.post(server.make_url(f"/p/{token}"), data=f"nonce={nonce}&action=leave",
                         headers={"Content-Type": "application/x-www-form-urlencoded; "
                                                  "charset=bogus"}, allow_redirects=False)
        assert r.status == 400
        assert "Nothing was changed" in await r.text()
    keys = [k.decode() async for k in aredis.scan_iter("*")]
    assert not any(k.endswith(":refusal") for k in keys)


async def test_pause_resume_and_leave(centre: tuple[TestServer, State], tokens: TokenSigner,
                                      clock: ManualClock) -> None:
    server, state = centre
    await joined(state)
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        assert (await post(s, server, token, [("action", "pause90")])).status == 303
        assert (await state.snapshot(ADDRESS)).prefs.paused_until == clock.now() + 90 * DAY
        page = await open_page(s, server, token)
        assert 'id="paused"' in page and 'value="resume"' in page
        assert (await post(s, server, token, [("action", "resume")])).status == 303
        assert (await state.snapshot(ADDRESS)).prefs.paused_until is None
        assert (await post(s, server, token, [("action", "pause30")])).status == 303
        assert (await state.snapshot(ADDRESS)).prefs.paused_until == clock.now() + 30 * DAY
        assert (await post(s, server, token, [("action", "leave")])).status == 303
        page = await open_page(s, server, token)
    refusal = (await state.snapshot(ADDRESS)).refusals["*"]
    assert (refusal.kind, refusal.channel) == ("unsubscribe", "preference-centre")
    assert 'id="left"' in page and 'value="leave"' not in page
    # The state, both lists as left, the way back; no control that means nothing now.
    assert "Weekly digest" in page and "Offers and news" in page
    assert 'value="rejoin:*"' in page and 'id="rejoin-explain"' in page
    for gone in ('type="checkbox"', 'value="save"', 'name="frequency"', 'value="pause30"',
                 'value="resume"', "disabled"):
        assert gone not in page, gone


async def test_subscribing_again_is_recorded_as_consent_from_the_centre(
        centre: tuple[TestServer, State], tokens: TokenSigner, clock: ManualClock) -> None:
    server, state = centre
    await joined(state)
    await state.refuse(ADDRESS, "unsubscribe", list="weekly-digest", channel="one-click")
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        assert (await post(s, server, token, [("action", "leave")])).status == 303
        clock.advance(DAY)
        r = await post(s, server, token, [("action", "rejoin:*")],
                       headers={"Accept-Language": "th"})
        assert r.status == 303 and r.headers["Location"].endswith("?done=rejoined")
        person = await state.snapshot(ADDRESS)
        assert "*" not in person.refusals and "weekly-digest" in person.refusals
        consent = person.consents["marketing"]
        assert (consent.source, consent.granted_at) == ("preference centre", clock.now())
        assert consent.text == "สมัครรับอีกครั้ง: ข้อเสนอและข่าวสาร"
        assert person.consents["weekly-digest"].source == "signup form"  # still left
        r = await post(s, server, token, [("action", "rejoin:weekly-digest")])
        assert r.status == 303
        person = await state.snapshot(ADDRESS)
        assert not person.refusals
        assert person.consents["weekly-digest"].source == "preference centre"
        # A complaint is not undone from a page.
        await state.refuse(ADDRESS, "complaint", channel="arf")
        page = await open_page(s, server, token)
        assert 'id="left"' in page and "rejoin" not in page
        assert (await post(s, server, token, [("action", "rejoin:*")])).status == 400
        assert (await post(s, server, token, [("action", "rejoin:nope")])).status == 400
    assert "*" in (await state.snapshot(ADDRESS)).refusals


async def test_download_is_readable_json_and_not_engagement(
        centre: tuple[TestServer, State], tokens: TokenSigner, clock: ManualClock) -> None:
    server, state = centre
    await state.grant(ADDRESS, "marketing", source="signup form", ip="192.0.2.7", text="v3")
    await state.grant(ADDRESS, "weekly-digest", source="shop", ip="192.0.2.8", text="v1")
    await state.revoke(ADDRESS, "weekly-digest", source="api")
    await state.refuse(ADDRESS, "unsubscribe", list="weekly-digest", channel="one-click")
    await state.set_preferences(ADDRESS, frequency="weekly", off=["newsletter"],
                                paused_until=clock.now() + DAY)
    await state.engage(ADDRESS, kind="click")
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession(headers={"Accept-Language": "vi"}) as s:
        r = await post(s, server, token, [("action", "download")])
        assert r.status == 200
        assert r.headers["Content-Disposition"] == 'attachment; filename="my-data.json"'
        assert r.content_type == "application/json"
        data = json.loads(await r.text())
    now = "2027-01-15T08:00:00Z"  # the test clock, ISO 8601 in UTC
    assert data["format"] == "heed-personal-data-v2" and data["exported_at"] == now
    assert data["address"] == ADDRESS and data["suppressed"] is False
    assert data["lists"] == [
        {"list": "marketing", "label": "Ưu đãi và tin tức",
         "description": "Ưu đãi, sản phẩm mới và thông báo, thỉnh thoảng.",
         "consent": {"granted_at": now, "source": "signup form", "ip": "192.0.2.7",
                     "text": "v3", "revoked_at": None, "revoked_by": None},
         "refusal": None},
        {"list": "weekly-digest", "label": "Bản tin hằng tuần",
         "description": data["lists"][1]["description"],
         "consent": {"granted_at": now, "source": "shop", "ip": "192.0.2.8", "text": "v1",
                     "revoked_at": now, "revoked_by": "api"},
         "refusal": {"kind": "unsubscribe", "at": now, "channel": "one-click"}}]
    assert data["all_marketing"] == {"refusal": None}
    assert data["preferences"] == {"frequency": "weekly", "paused_until": "2027-01-16T08:00:00Z",
                                   "timezone": None, "off": ["newsletter"]}
    # Only the click: downloading (and viewing) is not engagement with the mail.
    assert data["engagement"]["by_kind"] == [{"kind": "click", "at": now, "sends_since": 0}]
    assert data["engagement"]["last_at"] == now
    outcomes = [d["outcome"] for d in data["recent_decisions"]]
    assert "granted" in outcomes and "refused" in outcomes
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", d["at"])
               for d in data["recent_decisions"])
    assert (await state.snapshot(ADDRESS)).engagement.keys() == {"click"}


async def test_the_data_as_a_page_in_the_persons_language(
        centre: tuple[TestServer, State], tokens: TokenSigner, aredis: aioredis.Redis,
        keys: Keys) -> None:
    server, state = centre
    await state.grant(ADDRESS, "weekly-digest", source="shop", ip="192.0.2.8", text="v1")
    await state.engage(ADDRESS, kind="reply")
    await state.refuse(ADDRESS, "unsubscribe", channel="page")
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession(headers={"Accept-Language": "ar"}) as s:
        before = await aredis.hgetall(keys.engagement(ADDRESS))
        r = await post(s, server, token, [("action", "view")])
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    assert '<html lang="ar" dir="rtl">' in page and "ما نحتفظ به عنك" in page
    assert "الملخص الأسبوعي" in page and "192.0.2.8" in page and ADDRESS in page
    assert "غادرت كل الرسائل التسويقية في" in page  # left everything, with the date
    assert "ألغيت الاشتراك" in page and 'id="back"' in page
    assert before and await aredis.hgetall(keys.engagement(ADDRESS)) == before


async def test_erase_asks_first_then_keeps_only_a_hashed_no(
        centre: tuple[TestServer, State], tokens: TokenSigner, clock: ManualClock,
        aredis: aioredis.Redis, keys: Keys, store: PolicyStore) -> None:
    server, state = centre
    await state.grant(ADDRESS, "marketing", source="form", ip="192.0.2.7", text="v3")
    await state.set_preferences(ADDRESS, frequency="weekly")
    guard = keys.domain_complaints("example.org")
    await aredis.zadd(guard, {ADDRESS: clock.now() - 60, "cy@example.org": clock.now()})
    # VERP mappings written when marketing copies were sent (not under Ana's hash tag).
    lists = sorted({st.list for st in store.current.streams.values() if st.marketing})
    verp = [keys.verp(tokens.verp(ADDRESS, name)) for name in lists]
    other = keys.verp(tokens.verp("cy@example.org", lists[0]))
    for key, name in zip(verp, lists, strict=True):
        await aredis.set(key, f"{ADDRESS}\n{name}", ex=86400)
    await aredis.set(other, f"cy@example.org\n{lists[0]}", ex=86400)
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        r = await post(s, server, token, [("action", "erase")])
        assert r.status == 200 and 'value="erase-confirm"' in (page := await r.text())
        assert (await state.snapshot(ADDRESS)).consents  # the first step changed nothing
        r = await s.post(server.make_url(f"/p/{token}"),
                         data={"action": "erase-confirm", "nonce": nonce_of(page)})
        assert r.status == 200
        done = await r.text()
        assert "Your data has been erased" in done and 'id="kept"' in done
        assert "one-way code" in done
        gone = await open_page(s, server, token)
        assert 'id="gone"' in gone and "<form" not in gone
    raw = {k.decode() async for k in aredis.scan_iter("*")}
    assert not [k for k in raw if ADDRESS in k]  # no key of the person is left
    assert await aredis.exists(*verp) == 0 and await aredis.exists(other) == 1
    # The domain's complaint guard keeps the count and the time, not the address.
    guarded = dict(await aredis.zrange(guard, 0, -1, withscores=True))
    assert ADDRESS.encode() not in guarded and len(guarded) == 2
    assert sorted(guarded.values()) == [clock.now() - 60, clock.now()]
    assert not await aredis.sismember(keys.people, ADDRESS)
    members = await aredis.smembers(keys.suppressed)
    assert len(members) == 1 and ADDRESS.encode() not in next(iter(members))
    # The stored digest is keyed: a plain SHA-256 of the address is not it.
    assert hashlib.sha256(ADDRESS.encode()).hexdigest().encode() not in members
    erased = [e for e in await state.audit.tail(5) if e.outcome == "erased"]
    assert erased and erased[0].recipient == "" and ADDRESS not in erased[0].detail
    # The "no" holds for every marketing stream, even after a new consent arrives.
    await state.grant(ADDRESS.upper(), "marketing")
    await state.grant(ADDRESS, "weekly-digest")
    person = await state.snapshot(" <Ana@Example.org> ")
    assert person.suppressed
    policy = store.current
    for name, stream in policy.streams.items():
        d = decide(policy, name, person, clock.now())
        if stream.marketing:
            assert d.action is Action.DROP and d.reasons[0].code == "erased", name
            assert d.drop_mode is DropMode.REJECT
        else:
            assert d.action is Action.DELIVER, name
    text = await explain(state, state.audit, ADDRESS, now=clock.now(), policy=policy)
    assert "erased at the person's request" in text
    assert "newsletter: would be: drop because the person's data was erased" in text
    # A different secret does not recognise the address: the entry is keyed.
    assert not (await State(aredis, keys, clock, secret=b"x" * 32).snapshot(ADDRESS)).suppressed


async def test_every_language_has_every_text(centre: tuple[TestServer, State],
                                             tokens: TokenSigner) -> None:
    assert {lang: set(t) for lang, t in PREFS.items()} == {lang: set(PREFS["en"]) for lang in PREFS}
    assert set(PREFS) == set(TEXTS) == {"en", "vi", "ar", "th"}
    server, _ = centre
    token = tokens.make(ADDRESS, "marketing", purpose=PREFERENCES)
    async with aiohttp.ClientSession() as s:
        for lang, title in (("vi", "Lựa chọn email của bạn"), ("th", "ตัวเลือกอีเมลของคุณ"),
                            ("ar", "اختياراتك للبريد الإلكتروني")):
            r = await s.get(server.make_url(f"/p/{token}"), headers={"Accept-Language": lang})
            page = await r.text()
            direction = "rtl" if lang == "ar" else "ltr"
            assert f'<html lang="{lang}" dir="{direction}">' in page and f"<h1>{title}</h1>" in page


async def test_clicks_to_leave_count_what_each_route_took(
        centre: tuple[TestServer, State], tokens: TokenSigner, clock: ManualClock) -> None:
    """Mail client one-click: 1; the link's page, a list or everything: 2; the centre: 3."""
    from proxy.report.compute import build_report

    server, state = centre
    body = {"List-Unsubscribe": "One-Click"}
    async with aiohttp.ClientSession() as s:
        for who, extra in (("a@x.org", {}), ("b@x.org", {"via": "page"}),
                           ("c@x.org", {"via": "page", "scope": "all"})):
            url = server.make_url(f"/u/{tokens.make(who, 'weekly-digest')}")
            assert (await s.post(url, data={**body, **extra})).status == 200
        page = await (await s.get(server.make_url(
            f"/u/{tokens.make(ADDRESS, 'weekly-digest')}"))).text()
        link = re.search(r'id="manage" href="/p/([A-Za-z0-9_-]+)"', page)
        assert link
        assert (await post(s, server, link.group(1), [("action", "leave")])).status == 303
    report = await build_report(state, PolicyStore(ROOT / "policies").current,
                                since=0, now=clock.now() + 1, lookback=DAY)
    assert dict(report.clicks) == {1: 1, 2: 2, 3: 1}
    assert dict(report.channels) == {"one-click": 1, "page": 2, "preference-centre": 1}
