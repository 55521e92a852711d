"""Coming back (re-subscription, lifting by hand), suppression export and import, on Redis."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import redis.asyncio as aioredis

from proxy.audit import Audit
from proxy.clock import ManualClock
from proxy.explain import explain
from proxy.keys import Keys
from proxy.privacy import erase
from proxy.state import State
from proxy.tell import suppression

A = "ana@example.org"


async def test_newer_consent_with_proof_lifts_only_that_unsubscribe(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    await state.grant(A, "news", source="form", text="v1")
    await state.refuse(A, "unsubscribe", list="news", channel="one-click")
    await state.refuse(A, "unsubscribe", list="deals", channel="one-click")
    clock.advance(3600)
    await state.grant(A, "news", source="import")  # no wording shown: no proof, no lift
    assert set((await state.snapshot(A)).refusals) == {"news", "deals"}
    await state.grant(A, "news", source="shop-form", ip="192.0.2.1", text="news v2")
    assert set((await state.snapshot(A)).refusals) == {"deals"}
    # An older consent (a late webhook) does not lift a newer no.
    await state.grant(A, "deals", source="form", text="v1", at=clock.now() - 7200)
    assert set((await state.snapshot(A)).refusals) == {"deals"}
    outcomes = [e.outcome for e in reversed(await Audit(aredis, keys).recent(A))]
    assert outcomes[-4:] == ["granted", "granted", "re-subscribed", "granted"]


async def test_complaint_bounce_and_erasure_need_a_lift_by_hand(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock) -> None:
    state = State(aredis, keys, clock, secret=b"erase-secret-0123456789abcdef")
    await state.refuse(A, "complaint", channel="arf")
    await state.refuse("bo@example.org", "bounce", list="news", channel="dsn")
    clock.advance(60)
    await state.grant(A, "news", source="form", text="v2")
    await state.grant("bo@example.org", "news", source="form", text="v2")
    assert "*" in (await state.snapshot(A)).refusals
    assert "news" in (await state.snapshot("bo@example.org")).refusals
    assert await state.lift("bo@example.org", "news", "mailbox fixed, confirmed by phone") == [
        "bounce of list news"]
    assert (await state.snapshot("bo@example.org")).refusals == {}
    await erase(state, "cy@example.org")
    assert (await state.snapshot("cy@example.org")).suppressed
    lifted = await state.lift("cy@example.org", None, "asked to come back in writing")
    assert lifted == [f"erasure (suppression {state.suppression_id('cy@example.org')[:12]})"]
    assert not (await state.snapshot("cy@example.org")).suppressed
    assert await state.lift("cy@example.org", None, "again") == []
    text = await explain(state, Audit(aredis, keys), "bo@example.org", now=clock.now())
    assert "refusal lifted by hand" in text and "mailbox fixed" in text


async def test_export_lists_refusals_and_erased_people_by_hash(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path) -> None:
    state = State(aredis, keys, clock, secret=b"erase-secret-0123456789abcdef")
    await state.refuse(A, "unsubscribe", list="news", channel="one-click")
    clock.advance(86400)
    await state.refuse("bo@example.org", "complaint", channel="arf")
    await erase(state, "cy@example.org")
    rows = await suppression.export(state, None)
    assert [(r["address"], r["list"], r["kind"], r["channel"]) for r in rows] == [
        (A, "news", "unsubscribe", "one-click"), ("", "*", "erased", ""),
        ("bo@example.org", "*", "complaint", "arf")]
    erased = next(r for r in rows if r["kind"] == "erased")
    assert erased["suppression_id"] == state.suppression_id("cy@example.org")
    assert "cy@example.org" not in suppression.render(rows, "csv")
    recent = await suppression.export(state, suppression.parse_since("12h", clock.now()))
    assert {r["kind"] for r in recent} == {"complaint", "erased"}
    doc = json.loads(suppression.render(rows, "json"))
    assert len(doc["suppressions"]) == 3
    # heed's own CSV reads back into another heed, erased rows included.
    path = tmp_path / "export.csv"
    path.write_text(suppression.render(rows, "csv"))
    await aredis.flushall()
    report = await suppression.import_file(state, path, "csv")
    assert (report.imported, report.errors) == (3, [])
    assert (await state.snapshot("cy@example.org")).suppressed
    assert (await state.snapshot(A)).refusals["news"].kind == "unsubscribe"


SES = {"SuppressedDestinationSummaries": [
    {"EmailAddress": "b1@example.com", "Reason": "BOUNCE",
     "LastUpdateTime": "2026-11-02T10:15:30.123000+00:00"},
    {"EmailAddress": "c1@example.com", "Reason": "COMPLAINT",
     "LastUpdateTime": "2026-11-03T08:00:00+00:00"},
    {"EmailAddress": "not-an-address", "Reason": "BOUNCE",
     "LastUpdateTime": "2026-11-03T08:00:00+00:00"},
    {"EmailAddress": "d1@example.com", "Reason": "SOMETHING",
     "LastUpdateTime": "2026-11-03T08:00:00+00:00"}],
    "NextToken": "abc"}
SENDGRID_BOUNCES = """created,email,reason,status
1443651125,b2@example.com,"550 5.1.1 The email account that you tried to reach does not exist",5.1.1
1443651126,,"no address",5.1.1
"""
SENDGRID_SPAM = [{"created": 1443651141, "email": "c2@example.com", "ip": "10.63.202.100"}]
SENDGRID_UNSUBSCRIBES = "created,email\n1443651141,u2@example.com\nyesterday,v2@example.com\n"
MAILGUN_BOUNCES = {"items": [{"address": "b3@example.com", "code": "550",
                              "error": "No such mailbox", "created_at": "Fri, 21 Oct 2011 "
                              "11:02:55 UTC"}], "paging": {"next": "https://api.mailgun.net/x"}}
MAILGUN_UNSUBSCRIBES = {"items": [{"address": "u3@example.com", "tags": ["*"],
                                   "created_at": "Fri, 21 Oct 2011 11:02:55 UTC"}]}
MAILGUN_COMPLAINTS = {"items": [{"address": "c3@example.com",
                                 "created_at": "Tue, 15 Nov 2011 08:25:11 GMT"}]}
POSTMARK = {"Suppressions": [
    {"EmailAddress": "u4@example.com", "SuppressionReason": "ManualSuppression",
     "Origin": "Recipient", "CreatedAt": "2019-12-10T08:58:33-05:00"},
    {"EmailAddress": "b4@example.com", "SuppressionReason": "HardBounce",
     "Origin": "Recipient", "CreatedAt": "2019-12-10T08:58:33-05:00"},
    {"EmailAddress": "c4@example.com", "SuppressionReason": "SpamComplaint",
     "Origin": "Recipient", "CreatedAt": "2019-12-10T08:58:33-05:00"}]}


async def test_imports_each_services_layout_and_reports_bad_rows(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path) -> None:
    state = State(aredis, keys, clock)
    await state.grant("u2@example.com", "news", source="form", text="v1")
    files = {
        ("ses", "ses.json"): json.dumps(SES),
        ("sendgrid", "bounces.csv"): SENDGRID_BOUNCES,
        ("sendgrid", "spam.json"): json.dumps(SENDGRID_SPAM),
        ("sendgrid", "unsubscribes.csv"): SENDGRID_UNSUBSCRIBES,
        ("mailgun", "bounces.json"): json.dumps(MAILGUN_BOUNCES),
        ("mailgun", "unsubscribes.json"): json.dumps(MAILGUN_UNSUBSCRIBES),
        ("mailgun", "complaints.json"): json.dumps(MAILGUN_COMPLAINTS),
        ("postmark", "dump.json"): json.dumps(POSTMARK),
    }
    errors: dict[str, list[str]] = {}
    for (source, name), text in files.items():
        (tmp_path / name).write_text(text)
        report = await suppression.import_file(state, tmp_path / name, source)
        errors[name] = report.errors
        again = await suppression.import_file(state, tmp_path / name, source)
        assert again.imported == 0 and again.known == report.imported  # idempotent
    assert errors["ses.json"] == ["item 3: not an address: 'not-an-address'",
                                  "item 4: unknown reason"]
    assert errors["bounces.csv"] == ["line 3: not an address: ''"]
    assert errors["unsubscribes.csv"][0].startswith("line 3: bad time 'yesterday'")
    kinds = {}
    for who in ("b1", "c1", "b2", "c2", "u2", "b3", "u3", "c3", "u4", "b4", "c4"):
        person = await state.snapshot(f"{who}@example.com")
        kinds[who] = person.refusals["*"].kind
    assert kinds == {"b1": "bounce", "c1": "complaint", "b2": "bounce", "c2": "complaint",
                     "u2": "unsubscribe", "b3": "bounce", "u3": "unsubscribe",
                     "c3": "complaint", "u4": "unsubscribe", "b4": "bounce",
                     "c4": "complaint"}
    # Never a consent granted, never one taken: u2 keeps its grant, and is refused.
    u2 = await state.snapshot("u2@example.com")
    assert "news" in u2.consents and u2.refusals["*"].channel == "import:sendgrid"
    assert (await state.snapshot("b1@example.com")).consents == {}


async def test_import_never_lifts_and_ses_csv_with_list(aredis: aioredis.Redis, keys: Keys,
                                                        clock: ManualClock,
                                                        tmp_path: Path) -> None:
    state = State(aredis, keys, clock)
    await state.refuse(A, "complaint", list="news", channel="arf")
    first = (await state.snapshot(A)).refusals["news"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["EmailAddress", "Reason", "LastUpdateTime"])
    writer.writerow([A, "BOUNCE", "2026-01-01T00:00:00Z"])
    (tmp_path / "ses.csv").write_text(out.getvalue())
    report = await suppression.import_file(state, tmp_path / "ses.csv", "ses", "news")
    assert (report.imported, report.known) == (0, 1)
    assert (await state.snapshot(A)).refusals["news"] == first
    missing = await suppression.import_file(state, tmp_path / "absent.json", "ses")
    assert missing.errors == ["line 0: cannot read the file (FileNotFoundError)"]


def test_the_suppression_commands(tmp_path: Path, redis_url: str) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = dict(os.environ, PYTHONPATH=str(ROOT),
               HEED_UNSUBSCRIBE__ERASE_SECRET="erase-secret-0123456789abcdef")

    def heed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "proxy", *args, "--redis", redis_url,
                               "--policies", str(ROOT / "policies")], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)

    (tmp_path / "dump.json").write_text(json.dumps(POSTMARK))
    got = heed("suppression", "import", "dump.json", "--from", "postmark")
    assert got.returncode == 0 and "imported 3 refusals (0 already known)" in got.stdout
    got = heed("suppression", "export", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(got.stdout)))
    assert sorted(r["address"] for r in rows) == ["b4@example.com", "c4@example.com",
                                                  "u4@example.com"]
    assert heed("suppression", "lift", "b4@example.com").returncode == 2  # --reason required
    got = heed("suppression", "lift", "b4@example.com", "--reason", "typo fixed")
    assert got.returncode == 0 and "bounce of every list" in got.stdout
    assert heed("suppression", "lift", "b4@example.com", "--reason", "x").returncode == 1
    got = heed("explain", "b4@example.com")
    assert "refusal lifted by hand" in got.stdout and "typo fixed" in got.stdout
    (tmp_path / "bad.csv").write_text("EmailAddress,Reason,LastUpdateTime\nnope,BOUNCE,\n")
    got = heed("suppression", "import", "bad.csv", "--from", "ses")
    assert got.returncode == 1 and "bad.csv:line 2: not an address" in got.stderr


async def test_the_person_lifts_only_their_own_unsubscribe(aredis: aioredis.Redis, keys: Keys,
                                                           clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    await state.refuse(A, "unsubscribe", channel="preference-centre")
    await state.refuse("bo@example.org", "complaint", channel="arf")
    assert not await state.rejoin("bo@example.org", None, "preference centre")
    assert await state.rejoin(A, None, "preference centre")
    assert (await state.snapshot(A)).refusals == {}
    assert "*" in (await state.snapshot("bo@example.org")).refusals
    [entry] = (await Audit(aredis, keys).recent(A, 1))
    assert entry.outcome == "re-subscribed" and "preference centre" in entry.detail


async def test_an_unreadable_csv_row_is_reported_and_the_rows_before_it_kept(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path) -> None:
    # A field over the csv module's limit (131072 characters) raised csv.Error out of
    # the import: a traceback, and no word on which line.
    state = State(aredis, keys, clock)
    text = ("email,created\n" f"{A},1799990000\n"
            f'"{"x" * 200_000}",1799990000\n' "bo@example.org,1799990000\n")
    (tmp_path / "sendgrid.csv").write_text(text)
    report = await suppression.import_file(state, tmp_path / "sendgrid.csv", "sendgrid")
    assert report.imported == 1
    assert len(report.errors) == 1 and report.errors[0].startswith("after line 2: unreadable CSV")
    assert (await state.snapshot(A)).refusals["*"].kind == "unsubscribe"


async def test_json_nested_past_the_parsers_depth_is_a_reported_row(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path) -> None:
    state = State(aredis, keys, clock)
    (tmp_path / "deep.jsonl").write_text('{"email": "' + A + '", "created": 1799990000}\n'
                                         + '{"a":' + "[" * 60_000 + "\n")
    report = await suppression.import_file(state, tmp_path / "deep.jsonl", "sendgrid")
    assert report.imported == 1 and report.errors == ["line 2: not JSON"]
