"""The events API over real HTTP: tokens, one event, batches line by line, people, OpenAPI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from openapi_spec_validator import validate

from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.errors import ConfigError
from proxy.explain import explain
from proxy.http.api import add_api
from proxy.http.app import make_app
from proxy.http.webhooks import add_webhooks
from proxy.keys import Keys
from proxy.metrics import Metrics
from proxy.policy_store import PolicyStore
from proxy.settings import BounceSettings, UnsubscribeKey, WebhookSettings, load_settings
from proxy.signals.events import EventRules
from proxy.state import State
from proxy.tokens import TokenSigner
from tests.conftest import ROOT

TOKEN = "api-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def serve(state: State, clock: ManualClock,
                rules: EventRules | None = None) -> TestServer:
    tokens = TokenSigner([UnsubscribeKey("t1", b"test-secret-0123456789abcdef")], clock, 9e6)
    app = make_app(tokens=tokens, state=state, metrics=Metrics())
    add_api(app, state=state, policies=PolicyStore(ROOT / "policies"), clock=clock,
            tokens=[TOKEN, "second-token-0123456789"], rules=rules or EventRules())
    add_webhooks(app, state=state, settings=WebhookSettings(), rules=EventRules(), clock=clock)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def api(aredis: aioredis.Redis, keys: Keys,
              clock: ManualClock) -> AsyncIterator[tuple[TestServer, State]]:
    state = State(aredis, keys, clock)
    server = await serve(state, clock)
    yield server, state
    await server.close()


async def test_no_or_wrong_token_is_401_and_records_nothing(api: tuple[TestServer, State],
                                                            aredis: aioredis.Redis) -> None:
    server, _ = api
    event = {"kind": "complaint", "address": "ana@example.org"}
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN}x"}):
            for method, path in (("POST", "/api/events"), ("POST", "/api/events/batch"),
                                 ("GET", "/api/people/ana@example.org")):
                r = await s.request(method, server.make_url(path), json=event, headers=headers)
                assert r.status == 401, (headers, path)
                assert r.headers["WWW-Authenticate"] == 'Bearer realm="heed"'
        # The second configured token works as well as the first.
        r = await s.post(server.make_url("/api/events"), json=event,
                         headers={"Authorization": "Bearer second-token-0123456789"})
        assert r.status == 200
    assert await aredis.exists(Keys().refusal("ana@example.org"))


async def test_each_kind_maps_onto_state(api: tuple[TestServer, State],
                                         clock: ManualClock) -> None:
    server, state = api
    events = [
        {"kind": "grant", "address": "Ben@Example.org", "list": "marketing",
         "proof": {"source": "signup form", "ip": "192.0.2.7", "text": "Yes, send offers"},
         "at": "2027-01-10T09:00:00Z"},
        {"kind": "click", "address": "ben@example.org"},
        {"kind": "unsubscribe", "address": "ben@example.org", "list": "weekly"},
        {"kind": "bounce", "bounce": "soft", "address": "ben@example.org", "id": "sb-1"},
        {"kind": "bounce", "bounce": "soft", "address": "ben@example.org", "id": "sb-1"},
        {"kind": "bounce", "bounce": "soft", "address": "ben@example.org", "id": "sb-2"},
    ]
    outcomes = []
    async with aiohttp.ClientSession() as s:
        for event in events:
            r = await s.post(server.make_url("/api/events"), json=event, headers=AUTH)
            assert r.status == 200, await r.text()
            outcomes.append(await r.json())
    assert [o["outcome"] for o in outcomes] == ["granted", "engaged", "refused", "counted",
                                                 "counted", "counted"]
    # A retried soft bounce (same id) counts once.
    assert [o.get("soft_bounces") for o in outcomes[3:]] == [1, 1, 2]
    snap = await state.snapshot("ben@example.org")
    consent = snap.consents["marketing"]
    assert (consent.source, consent.ip, consent.text) == ("signup form", "192.0.2.7",
                                                         "Yes, send offers")
    assert consent.granted_at == 1799571600.0
    assert snap.last_engaged == clock.now()
    assert set(snap.refusals) == {"weekly"}  # soft bounces only count
    assert snap.refusals["weekly"].channel == "api"


async def test_hard_bounce_and_complaint_refuse_all_marketing(api: tuple[TestServer, State],
                                                              aredis: aioredis.Redis) -> None:
    server, state = api
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url("/api/events"), headers=AUTH, json={
            "kind": "bounce", "bounce": "hard", "address": "cat@example.org", "list": "weekly",
            "detail": "smtp; 550 5.1.1 user unknown"})
        assert (await r.json())["outcome"] == "refused"
        r = await s.post(server.make_url("/api/events"), headers=AUTH, json={
            "kind": "complaint", "address": "dan@example.org"})
        assert (await r.json())["outcome"] == "refused"
        r = await s.post(server.make_url("/api/events"), headers=AUTH, json={
            "kind": "complaint", "address": "dan@example.org"})
        assert (await r.json())["outcome"] == "repeat"
    cat = (await state.snapshot("cat@example.org")).refusals
    dan = (await state.snapshot("dan@example.org")).refusals
    assert (cat["*"].kind, cat["*"].channel) == ("bounce", "api")
    assert (dan["*"].kind, dan["*"].channel) == ("complaint", "api")
    # Every event left its own audit record naming the channel.
    recent = await state.audit.recent("dan@example.org")
    events = [e for e in recent if e.kind == "event"]
    assert [e.outcome for e in events] == ["complaint", "complaint"]
    assert all("channel api" in e.detail for e in events)
    text = await explain(state, state.audit, "dan@example.org", now=state.clock.now())
    assert "complaint reported: refused; channel api" in text
    assert "complaint reported: repeat; channel api" in text


async def test_soft_bounce_limit_refuses(aredis: aioredis.Redis, keys: Keys,
                                         clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    rules = EventRules(BounceSettings(soft_bounce_limit=3, soft_bounce_window=7 * 86400,
                                      hard_bounce="list"))
    server = await serve(state, clock, rules)
    soft = {"kind": "bounce", "bounce": "soft", "address": "eve@example.org", "list": "weekly"}
    try:
        async with aiohttp.ClientSession() as s:
            outcomes = []
            for days in (0, 8, 1, 1):  # the first falls out of the 7-day window
                clock.advance(days * 86400)
                r = await s.post(server.make_url("/api/events"), headers=AUTH, json=soft)
                outcomes.append(((await r.json())["outcome"], (await r.json())["soft_bounces"]))
    finally:
        await server.close()
    assert outcomes == [("counted", 1), ("counted", 1), ("counted", 2), ("refused", 3)]
    refusals = (await state.snapshot("eve@example.org")).refusals
    assert set(refusals) == {"weekly"}  # hard_bounce: list -> the list's refusal only


@pytest.mark.parametrize(("body", "fields"), [
    ({"kind": "wave", "address": "a@example.org"}, {"kind"}),
    ({"kind": "click"}, {"address"}),
    ({"kind": "click", "address": "not an address"}, {"address"}),
    ({"kind": "click", "address": "a@example.org\r\nRCPT TO:<x@y.z>"}, {"address"}),
    ({"kind": "bounce", "address": "a@example.org"}, {"bounce"}),
    ({"kind": "bounce", "bounce": "medium", "address": "a@example.org"}, {"bounce"}),
    ({"kind": "click", "bounce": "hard", "address": "a@example.org"}, {"bounce"}),
    ({"kind": "grant", "address": "a@example.org"}, {"list", "proof.source"}),
    ({"kind": "grant", "address": "a@example.org", "list": "m", "proof": {"who": "x"}},
     {"proof.who", "proof.source"}),
    ({"kind": "revoke", "address": "a@example.org", "list": 5}, {"list"}),
    ({"kind": "grant", "address": "a@example.org", "list": "m",
      "proof": {"source": "form", "ip": "192.0.2.300"}}, {"proof.ip"}),
    ({"kind": "click", "address": "a@example.org", "at": "yesterday"}, {"at"}),
    ({"kind": "click", "address": "a@example.org", "at": 4_000_000_000}, {"at"}),
    ({"kind": "click", "address": "a@example.org", "at": True}, {"at"}),
    ({"kind": "click", "address": "a@example.org", "colour": "red"}, {"colour"}),
    ({"kind": "click", "address": "a@example.org", "proof": {"source": "x"}}, {"proof"}),
    ([1, 2], {""}),
])
async def test_bad_payload_is_422_with_field_errors(api: tuple[TestServer, State],
                                                    aredis: aioredis.Redis, body: object,
                                                    fields: set[str]) -> None:
    server, _ = api
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url("/api/events"), json=body, headers=AUTH)
        assert r.status == 422
        assert set((await r.json())["fields"]) == fields
    assert await aredis.dbsize() == 0


async def test_not_json_and_too_large(api: tuple[TestServer, State],
                                      aredis: aioredis.Redis) -> None:
    server, _ = api
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url("/api/events"), data=b"{kind: click", headers=AUTH)
        assert r.status == 422 and (await r.json())["error"] == "invalid JSON"
        r = await s.post(server.make_url("/api/events"), data=b"\xff\xfe", headers=AUTH)
        assert r.status == 422
        r = await s.post(server.make_url("/api/events"), headers=AUTH,
                         json={"kind": "click", "address": "a@example.org", "detail": "x" * 70000})
        assert r.status == 413
        for empty in (b"", b"  \n\n"):  # a batch with no body says so: 400, not "0 accepted"
            r = await s.post(server.make_url("/api/events/batch"), data=empty, headers=AUTH)
            assert r.status == 400 and "empty" in (await r.json())["error"]
    assert await aredis.dbsize() == 0


async def test_json_nested_past_the_parsers_depth_is_a_422(api: tuple[TestServer, State]) -> None:
    # json.loads raises RecursionError (not ValueError) past its depth: it was a 500.
    server, _ = api
    deep = b"[" * 60_000
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url("/api/events"), data=deep, headers=AUTH)
        assert r.status == 422 and (await r.json())["error"] == "invalid JSON"
        r = await s.post(server.make_url("/api/events/batch"), data=deep, headers=AUTH)
        assert r.status == 422
        r = await s.post(server.make_url("/api/events/batch"), headers={
            **AUTH, "Content-Type": "application/x-ndjson"},
            data=b'{"kind": "click", "address": "a@example.org"}\n' + deep + b"\n")
        reply = await r.json()
        assert r.status == 200 and (reply["accepted"], reply["failed"]) == (1, 1)


async def test_batch_ndjson_and_array_line_by_line(api: tuple[TestServer, State]) -> None:
    server, state = api
    lines = [
        json.dumps({"kind": "complaint", "address": "fay@example.org"}),
        "",
        "{not json",
        json.dumps({"kind": "bounce", "address": "gus@example.org"}),
        json.dumps({"kind": "unsubscribe", "address": "gus@example.org", "list": "weekly"}),
    ]
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url("/api/events/batch"), data="\n".join(lines).encode(),
                         headers={**AUTH, "Content-Type": "application/x-ndjson"})
        assert r.status == 200
        reply = await r.json()
        assert (reply["accepted"], reply["failed"]) == (2, 2)
        by_line = {x["line"]: x for x in reply["results"]}
        assert by_line[1] == {"line": 1, "ok": True, "outcome": "refused"}
        assert not by_line[3]["ok"] and "invalid JSON" in by_line[3]["fields"][""]
        assert by_line[4] == {"line": 4, "ok": False, "fields": {
            "bounce": "required for kind bounce: hard or soft"}}
        assert by_line[5]["ok"]
        r = await s.post(server.make_url("/api/events/batch"), headers=AUTH, json=[
            {"kind": "open", "address": "hal@example.org"}, "text", {"kind": "open"}])
        reply = await r.json()
        assert [x["ok"] for x in reply["results"]] == [True, False, False]
        r = await s.post(server.make_url("/api/events/batch"), headers=AUTH, data=b"[1, 2")
        assert r.status == 422
    assert "weekly" in (await state.snapshot("gus@example.org")).refusals
    assert "*" in (await state.snapshot("fay@example.org")).refusals


async def test_large_chunked_batch_is_read_whole(api: tuple[TestServer, State]) -> None:
    server, state = api
    lines = [json.dumps({"kind": "open", "address": f"p{i}@example.org", "detail": "x" * 200})
             for i in range(2000)]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked, piece by piece
        for i in range(0, len(lines), 100):
            yield ("\n".join(lines[i:i + 100]) + "\n").encode()

    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url("/api/events/batch"), data=chunks(), headers=AUTH)
        assert r.status == 200
        reply = await r.json()
    assert (reply["accepted"], reply["failed"]) == (2000, 0)
    assert (await state.snapshot("p1999@example.org")).last_engaged is not None


async def test_person_lookup(api: tuple[TestServer, State], clock: ManualClock) -> None:
    server, state = api
    await state.grant("ida@example.org", "marketing", source="form", ip="192.0.2.1", text="ok")
    await state.refuse("ida@example.org", "unsubscribe", list="weekly", channel="one-click")
    async with aiohttp.ClientSession() as s:
        await s.post(server.make_url("/api/events"), headers=AUTH,
                     json={"kind": "preference-visit", "address": "ida@example.org"})
        r = await s.get(server.make_url("/api/people/IDA@example.org"), headers=AUTH)
        assert r.status == 200
        person = await r.json()
        r = await s.get(server.make_url("/api/people/nobody"), headers=AUTH)
        assert r.status == 422
    assert person["address"] == "ida@example.org"
    assert person["consents"] == [{"list": "marketing", "granted_at": clock.now(),
                                   "source": "form", "ip": "192.0.2.1", "text": "ok"}]
    assert person["refusals"] == [{"scope": "weekly", "kind": "unsubscribe", "at": clock.now(),
                                   "channel": "one-click"}]
    assert person["engagement"]["last_engaged"] == clock.now()
    assert person["engagement"]["by_kind"] == {"preference-visit": {"at": clock.now(),
                                                                   "sends_since": 0}}
    assert person["suppressed"] is False
    assert person["lifecycle"]["marketing"] == "loyal"
    assert set(person["lifecycle"]) == set(PolicyStore(ROOT / "policies").current.streams)
    assert person["recent"][0]["kind"] == "event"
    assert person["recent"][0]["outcome"] == "preference-visit"
    assert person["preferences"] == {"paused_until": None, "timezone": None, "off": [],
                                     "frequency": None}


async def test_redis_down_is_503(keys: Keys, clock: ManualClock) -> None:
    dead = aioredis.Redis(port=free_port(), socket_connect_timeout=1)
    server = await serve(State(dead, keys, clock), clock)
    try:
        async with aiohttp.ClientSession() as s:
            r = await s.post(server.make_url("/api/events"), headers=AUTH,
                             json={"kind": "complaint", "address": "jo@example.org"})
            assert r.status == 503
            assert "127.0.0.1" not in await r.text()
            r = await s.post(server.make_url("/api/events/batch"), headers=AUTH,
                             json=[{"kind": "complaint", "address": "jo@example.org"}])
            assert (await r.json())["results"][0]["retry"] is True
    finally:
        await server.close()
        await dead.aclose()


async def test_openapi_document_is_valid_and_names_every_path(
        api: tuple[TestServer, State]) -> None:
    server, _ = api
    async with aiohttp.ClientSession() as s:
        r = await s.get(server.make_url("/api/openapi.json"))  # no token needed
        assert r.status == 200
        doc = await r.json()
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    assert doc["openapi"] == "3.1.0"
    routes = {info.get("formatter") or info.get("path")
              for info in (res.get_info() for res in server.app.router.resources())}
    served = {p for p in routes if p and (p.startswith("/api/") or p.startswith("/webhooks/"))}
    assert served <= set(doc["paths"])
    assert "/webhooks/postmark/{secret}" in served  # the webhooks are mounted here too
    for path in ("/api/events", "/api/events/batch", "/api/people/{address}",
                 "/api/openapi.json"):
        assert path in doc["paths"]


def test_api_and_bounce_settings_from_env_and_errors() -> None:
    settings = load_settings(None, env={"HEED_API__TOKENS": f'["{TOKEN}"]',
                                        "HEED_BOUNCES__SOFT_BOUNCE_WINDOW": "7d",
                                        "HEED_BOUNCES__HARD_BOUNCE": "list"})
    assert settings.api.tokens == (TOKEN,)
    assert settings.bounces.soft_bounce_window == 7 * 86400
    assert EventRules(settings.bounces).hard_bounce_all is False
    with pytest.raises(ConfigError) as err:
        load_settings(None, env={"HEED_API__TOKENS": '["short"]',
                                 "HEED_BOUNCES__HARD_BOUNCE": "sometimes",
                                 "HEED_WEBHOOKS__SES_TOPIC": "x"})
    assert len(err.value.errors) == 3
