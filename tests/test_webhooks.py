"""Webhooks over real HTTP: each service with a correctly signed and a forged request."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from proxy.clock import ManualClock
from proxy.errors import ConfigError
from proxy.http.app import make_app
from proxy.http.webhooks import add_webhooks
from proxy.keys import Keys
from proxy.metrics import Metrics
from proxy.settings import UnsubscribeKey, WebhookSettings
from proxy.signals.events import EventRules
from proxy.signals.webhooks.ses import string_to_sign
from proxy.state import State
from proxy.tokens import TokenSigner

CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123abcd.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
MAILGUN_KEY = "key-0123456789abcdef0123456789abcdef"


def rsa_cert(age_days: int = 0) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC) - dt.timedelta(days=age_days)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return key, cert.public_bytes(serialization.Encoding.PEM)


SNS_KEY, SNS_CERT = rsa_cert()
OTHER_KEY, _ = rsa_cert()
EC_KEY = ec.generate_private_key(ec.SECP256R1())
EC_PUBLIC = base64.b64encode(EC_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


class Fetcher:
    """Stands in for HTTPS to amazonaws.com: serves the test certificate, records each URL."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.metrics = Metrics()  # the app's metrics, for the tests' convenience

    async def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return SNS_CERT


@pytest.fixture
async def hooks(aredis: aioredis.Redis, keys: Keys,
                clock: ManualClock) -> AsyncIterator[tuple[TestServer, State, Fetcher]]:
    state = State(aredis, keys, clock)
    tokens = TokenSigner([UnsubscribeKey("t1", b"test-secret-0123456789abcdef")], clock, 9e6)
    app = make_app(tokens=tokens, state=state, metrics=Metrics())
    fetcher = Fetcher()
    metrics = fetcher.metrics = Metrics()
    add_webhooks(app, state=state, rules=EventRules(), clock=clock, fetch=fetcher,
                 metrics=metrics, settings=WebhookSettings(
                     ses_enabled=True, ses_topics=(TOPIC,), sendgrid_public_key=EC_PUBLIC,
                     mailgun_signing_key=MAILGUN_KEY, postmark_username="pm",
                     postmark_password="pm-password-0123", postmark_path_secret="s3cr3t-path"))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, state, fetcher
    await server.close()


def sns(message: dict[str, Any], *, version: str = "1", key: rsa.RSAPrivateKey = SNS_KEY,
        kind: str = "Notification", url: str = CERT_URL,
        timestamp: str = "2027-01-15T08:00:00.000Z") -> dict[str, Any]:
    out: dict[str, Any] = {
        "Type": kind, "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324", "TopicArn": TOPIC,
        "Message": json.dumps(message), "Timestamp": timestamp,
        "SignatureVersion": version, "SigningCertURL": url,
    }
    if kind == "SubscriptionConfirmation":
        out["Token"] = "2336412f37fb687f5d51e6e241d09c80"
        out["SubscribeURL"] = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    out["Signature"] = base64.b64encode(
        key.sign(string_to_sign(out), padding.PKCS1v15(), algorithm)).decode()
    return out


SES_BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
               "bouncedRecipients": [{"emailAddress": "ana@example.org", "action": "failed",
                                      "status": "5.1.1",
                                      "diagnosticCode": "smtp; 550 5.1.1 user unknown"}],
               "timestamp": "2027-01-15T07:59:58.000Z", "feedbackId": "0100-abc",
               "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"},
    "mail": {"timestamp": "2027-01-15T07:59:57.000Z", "source": "offers@news.example.com",
             "messageId": "0100-def", "destination": ["ana@example.org"]},
}
SES_COMPLAINT = {
    "notificationType": "Complaint",
    "complaint": {"complainedRecipients": [{"emailAddress": "ben@example.org"}],
                  "timestamp": "2027-01-15T07:59:59.000Z", "complaintFeedbackType": "abuse",
                  "userAgent": "ExampleCorp Feedback Loop (V0.01)"},
    "mail": {"destination": ["ben@example.org"], "messageId": "0100-ghi"},
}


async def post(server: TestServer, path: str, body: bytes | str,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s:
        r = await s.post(server.make_url(path), data=body, headers=headers or {})
        return r.status, (await r.json() if r.content_type == "application/json" else None)


@pytest.mark.parametrize("version", ["1", "2"])
async def test_ses_signed_bounce_and_complaint(hooks: tuple[TestServer, State, Fetcher],
                                               version: str) -> None:
    server, state, fetcher = hooks
    status, reply = await post(server, "/webhooks/ses", json.dumps(sns(SES_BOUNCE,
                                                                       version=version)))
    assert (status, reply["outcomes"]) == (200, ["refused"])
    status, reply = await post(server, "/webhooks/ses", json.dumps(sns(SES_COMPLAINT,
                                                                       version=version)))
    assert (status, reply["outcomes"]) == (200, ["refused"])
    ana = (await state.snapshot("ana@example.org")).refusals["*"]
    ben = (await state.snapshot("ben@example.org")).refusals["*"]
    assert (ana.kind, ana.channel, ben.kind, ben.channel) == ("bounce", "ses", "complaint", "ses")
    assert fetcher.urls == [CERT_URL]  # fetched once, then cached
    assert fetcher.metrics.webhooks.labels("ses", "ok")._value.get() == 2
    assert fetcher.metrics.events.labels("ses", "complaint", "refused")._value.get() == 1


async def test_ses_forgeries_are_401_and_record_nothing(
        hooks: tuple[TestServer, State, Fetcher], aredis: aioredis.Redis) -> None:
    server, _, fetcher = hooks
    tampered = sns(SES_BOUNCE)
    tampered["Message"] = tampered["Message"].replace("ana@", "bob@")
    wrong_topic = sns(SES_BOUNCE)
    wrong_topic["TopicArn"] = "arn:aws:sns:eu-west-1:999999999999:other"
    forgeries = [
        sns(SES_BOUNCE, key=OTHER_KEY),  # signed by someone else
        tampered,
        wrong_topic,
        sns(SES_BOUNCE, url="https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem"),
        sns(SES_BOUNCE, url="http://sns.eu-west-1.amazonaws.com/cert.pem"),
        sns(SES_BOUNCE, url="https://evil.example/sns.eu-west-1.amazonaws.com.pem"),
        sns(SES_BOUNCE, version="3"),
        {**sns(SES_BOUNCE), "Signature": "not base64!"},
        # Signed by SNS, but more than ses_max_age (1h) old, or as far ahead: replays.
        sns(SES_BOUNCE, timestamp="2027-01-15T06:59:59.000Z"),
        sns(SES_BOUNCE, timestamp="2027-01-15T09:00:01.000Z"),
        sns(SES_BOUNCE, timestamp="yesterday"),
    ]
    for body in forgeries:
        status, _ = await post(server, "/webhooks/ses", json.dumps(body))
        assert status == 401, body
    assert set(fetcher.urls) <= {CERT_URL}  # no certificate from a host not allowed
    assert fetcher.metrics.webhooks.labels("ses", "refused")._value.get() == len(forgeries)
    status, _ = await post(server, "/webhooks/ses", "{not json")
    assert status == 400
    assert await aredis.dbsize() == 0


async def test_ses_expired_certificate_is_refused(aredis: aioredis.Redis, keys: Keys,
                                                  clock: ManualClock) -> None:
    key, old_cert = rsa_cert(age_days=60)  # valid for 30 days, 60 days ago

    async def fetch(url: str) -> bytes:
        return old_cert

    state = State(aredis, keys, clock)
    tokens = TokenSigner([UnsubscribeKey("t1", b"test-secret-0123456789abcdef")], clock, 9e6)
    app = make_app(tokens=tokens, state=state, metrics=Metrics())
    add_webhooks(app, state=state, rules=EventRules(), clock=clock, fetch=fetch,
                 settings=WebhookSettings(ses_enabled=True))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        status, reply = await post(server, "/webhooks/ses", json.dumps(sns(SES_BOUNCE, key=key)))
    finally:
        await server.close()
    assert (status, reply["error"]) == (401, "signing certificate expired or not yet valid")
    assert await aredis.dbsize() == 0


async def test_ses_subscription_confirmation_is_logged_not_fetched(
        hooks: tuple[TestServer, State, Fetcher], caplog: pytest.LogCaptureFixture,
        aredis: aioredis.Redis) -> None:
    server, _, fetcher = hooks
    confirm = sns({"note": "You have chosen to subscribe"}, kind="SubscriptionConfirmation")
    status, reply = await post(server, "/webhooks/ses", json.dumps(confirm))
    assert (status, reply["events"]) == (200, 0)
    assert "Action=ConfirmSubscription" in caplog.text
    assert fetcher.urls == [CERT_URL]  # only the certificate; the SubscribeURL is not visited
    assert await aredis.dbsize() == 0


def sendgrid_headers(body: bytes, stamp: str, key: ec.EllipticCurvePrivateKey = EC_KEY
                     ) -> dict[str, str]:
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp, "Content-Type": "application/json"}


SENDGRID = [
    {"email": "cat@example.org", "timestamp": 1799999000, "event": "bounce", "type": "bounce",
     "status": "5.1.1", "reason": "550 5.1.1 unknown", "sg_event_id": "ZGVsaXZlcmVk"},
    {"email": "dan@example.org", "timestamp": 1799999001, "event": "bounce", "type": "blocked",
     "status": "4.0.0", "reason": "blocked", "sg_event_id": "YmxvY2tlZA"},
    {"email": "eve@example.org", "timestamp": 1799999002, "event": "spamreport",
     "sg_event_id": "c3BhbQ"},
    {"email": "fay@example.org", "timestamp": 1799999003, "event": "click",
     "url": "https://shop.example.com/", "sg_event_id": "Y2xpY2s"},
    {"email": "gus@example.org", "timestamp": 1799999004, "event": "group_unsubscribe",
     "asm_group_id": 10, "sg_event_id": "Z3JvdXA"},
    {"email": "hal@example.org", "timestamp": 1799999005, "event": "deferred",
     "response": "400 try again later", "sg_event_id": "ZGVmZXJyZWQ"},
]


async def test_sendgrid_signed_batch(hooks: tuple[TestServer, State, Fetcher],
                                     clock: ManualClock) -> None:
    server, state, _ = hooks
    body = json.dumps(SENDGRID).encode()
    status, reply = await post(server, "/webhooks/sendgrid", body,
                               sendgrid_headers(body, str(int(clock.now()))))
    assert status == 200
    assert reply["outcomes"] == ["refused", "counted", "refused", "engaged", "refused"]
    assert (await state.snapshot("cat@example.org")).refusals["*"].kind == "bounce"
    assert (await state.snapshot("dan@example.org")).refusals == {}
    assert (await state.snapshot("eve@example.org")).refusals["*"].kind == "complaint"
    assert (await state.snapshot("gus@example.org")).refusals["*"].kind == "unsubscribe"
    assert (await state.snapshot("fay@example.org")).last_engaged == 1799999003


async def test_sendgrid_forged_or_old_is_401(hooks: tuple[TestServer, State, Fetcher],
                                             clock: ManualClock, aredis: aioredis.Redis) -> None:
    server, _, _ = hooks
    body = json.dumps(SENDGRID).encode()
    stamp = str(int(clock.now()))
    good = sendgrid_headers(body, stamp)
    cases = [
        sendgrid_headers(body, stamp, ec.generate_private_key(ec.SECP256R1())),
        {**good, "X-Twilio-Email-Event-Webhook-Timestamp": str(int(clock.now()) + 1)},
        sendgrid_headers(body, str(int(clock.now()) - 3600)),  # a replay of an old request
        {"Content-Type": "application/json"},
    ]
    for headers in cases:
        status, _ = await post(server, "/webhooks/sendgrid", body, headers)
        assert status == 401
    status, _ = await post(server, "/webhooks/sendgrid", body.replace(b"cat@", b"cow@"), good)
    assert status == 401
    assert await aredis.dbsize() == 0


def mailgun_body(clock: ManualClock, token: str, event: dict[str, Any], *,
                 key: str = MAILGUN_KEY, age: float = 0) -> bytes:
    stamp = str(int(clock.now() - age))
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({"signature": {"timestamp": stamp, "token": token,
                                     "signature": signature},
                       "event-data": event}).encode()


MAILGUN_FAILED = {"event": "failed", "severity": "permanent", "reason": "bounce",
                  "recipient": "ida@example.org", "timestamp": 1799999100.5, "id": "G9Bn5sl1",
                  "delivery-status": {"code": 550, "message": "5.1.1 mailbox does not exist"}}


async def test_mailgun_signed_then_replayed(hooks: tuple[TestServer, State, Fetcher],
                                            clock: ManualClock) -> None:
    server, state, _ = hooks
    body = mailgun_body(clock, "a" * 50, MAILGUN_FAILED)
    status, reply = await post(server, "/webhooks/mailgun", body)
    assert (status, reply["outcomes"]) == (200, ["refused"])
    status, _ = await post(server, "/webhooks/mailgun", body)
    assert status == 401  # the same token again: a replay
    temporary = {**MAILGUN_FAILED, "severity": "temporary", "recipient": "jo@example.org"}
    status, reply = await post(server, "/webhooks/mailgun",
                               mailgun_body(clock, "b" * 50, temporary))
    assert reply["outcomes"] == ["counted"]
    complained = {"event": "complained", "recipient": "kim@example.org", "id": "x"}
    status, reply = await post(server, "/webhooks/mailgun",
                               mailgun_body(clock, "c" * 50, complained))
    assert reply["outcomes"] == ["refused"]
    assert (await state.snapshot("ida@example.org")).refusals["*"].channel == "mailgun"
    assert (await state.snapshot("kim@example.org")).refusals["*"].kind == "complaint"


async def test_mailgun_forged_or_old_is_401(hooks: tuple[TestServer, State, Fetcher],
                                            clock: ManualClock, aredis: aioredis.Redis) -> None:
    server, _, _ = hooks
    for body in (mailgun_body(clock, "d" * 50, MAILGUN_FAILED, key="key-wrong"),
                 mailgun_body(clock, "e" * 50, MAILGUN_FAILED, age=3600)):
        status, _ = await post(server, "/webhooks/mailgun", body)
        assert status == 401
    tampered = mailgun_body(clock, "f" * 50, MAILGUN_FAILED).replace(b'"ffff', b'"gfff')
    assert (await post(server, "/webhooks/mailgun", tampered))[0] == 401
    assert await aredis.dbsize() == 0  # refused before the token is remembered


POSTMARK_BOUNCE = {"RecordType": "Bounce", "ID": 4323372036854775807, "Type": "HardBounce",
                   "TypeCode": 1, "Name": "Hard bounce", "MessageID": "883953f4-6105-42a2",
                   "Description": "The server was unable to deliver your message",
                   "Details": "smtp;550 5.1.1 unknown user", "Email": "lea@example.org",
                   "BouncedAt": "2027-01-15T07:58:10.2735393-00:00", "MessageStream": "outbound"}


async def test_postmark_basic_auth_and_secret_path(hooks: tuple[TestServer, State, Fetcher],
                                                   aredis: aioredis.Redis) -> None:
    server, state, _ = hooks
    body = json.dumps(POSTMARK_BOUNCE)
    good = "Basic " + base64.b64encode(b"pm:pm-password-0123").decode()
    bad = "Basic " + base64.b64encode(b"pm:guess").decode()
    assert (await post(server, "/webhooks/postmark", body))[0] == 401
    assert (await post(server, "/webhooks/postmark", body, {"Authorization": bad}))[0] == 401
    assert (await post(server, "/webhooks/postmark/wrong-path", body))[0] == 401
    assert await aredis.dbsize() == 0
    status, reply = await post(server, "/webhooks/postmark", body, {"Authorization": good})
    assert (status, reply["outcomes"]) == (200, ["refused"])
    complaint = {"RecordType": "SpamComplaint", "ID": 42, "Type": "SpamComplaint",
                 "Email": "max@example.org", "BouncedAt": "2027-01-15T07:58:00Z"}
    status, reply = await post(server, "/webhooks/postmark/s3cr3t-path", json.dumps(complaint))
    assert (status, reply["outcomes"]) == (200, ["refused"])
    change = {"RecordType": "SubscriptionChange", "MessageID": "m", "Recipient": "ned@example.org",
              "SuppressSending": True, "SuppressionReason": "ManualSuppression",
              "ChangedAt": "2027-01-15T07:58:00Z"}
    status, reply = await post(server, "/webhooks/postmark/s3cr3t-path", json.dumps(change))
    assert reply["outcomes"] == ["refused"]
    assert (await state.snapshot("lea@example.org")).refusals["*"].kind == "bounce"
    assert (await state.snapshot("max@example.org")).refusals["*"].kind == "complaint"
    assert (await state.snapshot("ned@example.org")).refusals["*"].kind == "unsubscribe"
    # A bounce payload without RecordType (Postmark's older bounce webhook) is a bounce.
    legacy = {k: v for k, v in POSTMARK_BOUNCE.items() if k != "RecordType"}
    legacy["Email"] = "ola@example.org"
    status, reply = await post(server, "/webhooks/postmark/s3cr3t-path", json.dumps(legacy))
    assert (status, reply["outcomes"]) == (200, ["refused"])
    assert (await state.snapshot("ola@example.org")).refusals["*"].kind == "bounce"


async def test_unconfigured_services_are_404(aredis: aioredis.Redis, keys: Keys,
                                             clock: ManualClock) -> None:
    state = State(aredis, keys, clock)
    tokens = TokenSigner([UnsubscribeKey("t1", b"test-secret-0123456789abcdef")], clock, 9e6)
    app = make_app(tokens=tokens, state=state, metrics=Metrics())
    add_webhooks(app, state=state, rules=EventRules(), clock=clock, settings=WebhookSettings())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        for path in ("/webhooks/ses", "/webhooks/sendgrid", "/webhooks/mailgun",
                     "/webhooks/postmark", "/webhooks/postmark/anything"):
            assert (await post(server, path, "{}"))[0] == 404
    finally:
        await server.close()
    with pytest.raises(ConfigError):
        add_webhooks(app, state=state, rules=EventRules(), clock=clock,
                     settings=WebhookSettings(sendgrid_public_key="bm90IGEga2V5"))


async def test_mailgun_retry_after_a_503_is_recorded_not_called_a_replay(
        aredis: aioredis.Redis, redis_url: str, keys: Keys, clock: ManualClock) -> None:
    # Mailgun retries a failed delivery with the same signed token. When Redis took the
    # token but not the event (a 503), that retry must be heard, or the bounce is lost.
    # A real Redis ACL user that may only SET the nonce makes the record fail after it.
    user, password = "hooks-review", "hooks-password-0123"
    await aredis.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}",
                                 f"~{keys.prefix}:nonce:*", "+@connection", "+set", "+ping")
    limited = aioredis.Redis.from_url(redis_url, username=user, password=password)
    state = State(limited, keys, clock)
    tokens = TokenSigner([UnsubscribeKey("t1", b"test-secret-0123456789abcdef")], clock, 9e6)
    app = make_app(tokens=tokens, state=state, metrics=Metrics())
    add_webhooks(app, state=state, rules=EventRules(), clock=clock, fetch=Fetcher(),
                 settings=WebhookSettings(mailgun_signing_key=MAILGUN_KEY))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        body = mailgun_body(clock, "r" * 50, MAILGUN_FAILED)
        nonce = keys.webhook_nonce("mailgun", "r" * 50)
        status, _ = await post(server, "/webhooks/mailgun", body)
        assert status == 503  # the refusal could not be written: Mailgun will retry
        # Not even the release could be written: the token is held briefly, not for the
        # whole replay window, so Mailgun's retry (minutes later) is still heard.
        assert 0 < await aredis.ttl(nonce) <= 60
        await aredis.execute_command("ACL", "SETUSER", user, "+del")
        status, _ = await post(server, "/webhooks/mailgun", body)
        assert status == 401  # within those seconds: refused, as a replay would be
        await aredis.delete(nonce)  # Redis's own clock cannot be moved: as if 60 s passed
        status, _ = await post(server, "/webhooks/mailgun", body)
        assert status == 503 and not await aredis.exists(nonce)  # released at once
        await aredis.execute_command("ACL", "SETUSER", user, "allkeys", "+@all")
        status, reply = await post(server, "/webhooks/mailgun", body)  # Mailgun's retry
        assert (status, reply["outcomes"]) == (200, ["refused"])
        assert (await State(aredis, keys, clock).snapshot("ida@example.org")).refusals
        assert await aredis.ttl(nonce) > 60  # recorded: held for the whole replay window
        status, _ = await post(server, "/webhooks/mailgun", body)
        assert status == 401  # once recorded, the same token again is a replay
    finally:
        await server.close()
        await limited.aclose()
        await aredis.execute_command("ACL", "DELUSER", user)


async def test_fields_of_the_wrong_type_are_skipped_never_a_500(
        hooks: tuple[TestServer, State, Fetcher], clock: ManualClock) -> None:
    # Signed or authenticated, a payload is still input: a list where a name belongs
    # was a TypeError (500, retried forever); the good events beside it are kept.
    server, state, _ = hooks
    odd = {"email": "ivy@example.org", "event": ["bounce"], "sg_event_id": "b2Rk"}
    body = json.dumps([odd, SENDGRID[2]]).encode()
    status, reply = await post(server, "/webhooks/sendgrid", body,
                               sendgrid_headers(body, str(int(clock.now()))))
    assert (status, reply["outcomes"]) == (200, ["refused"])
    bounce = {**SES_BOUNCE, "bounce": {**SES_BOUNCE["bounce"], "bouncedRecipients": [
        "ana@example.org", *SES_BOUNCE["bounce"]["bouncedRecipients"]]}, "mail": []}
    status, reply = await post(server, "/webhooks/ses", json.dumps(sns(bounce)))
    assert (status, reply["outcomes"]) == (200, ["refused"])
    failed = {**MAILGUN_FAILED, "delivery-status": "550 gone", "recipient": "jay@example.org"}
    status, reply = await post(server, "/webhooks/mailgun", mailgun_body(clock, "w" * 50, failed))
    assert (status, reply["outcomes"]) == (200, ["refused"])
    status, reply = await post(server, "/webhooks/mailgun", mailgun_body(
        clock, "x" * 50, {**MAILGUN_FAILED, "event": ["failed"]}))
    assert (status, reply["outcomes"]) == (200, [])
    for odd_postmark in ({**POSTMARK_BOUNCE, "Type": ["HardBounce"]},
                         {"RecordType": "SubscriptionChange", "Recipient": "kay@example.org",
                          "SuppressSending": True, "SuppressionReason": ["HardBounce"]}):
        status, reply = await post(server, "/webhooks/postmark/s3cr3t-path",
                                   json.dumps(odd_postmark))
        assert (status, reply["outcomes"]) == (200, []), odd_postmark
    assert (await state.snapshot("eve@example.org")).refusals["*"].kind == "complaint"
    assert (await state.snapshot("jay@example.org")).refusals["*"].kind == "bounce"
    assert (await state.snapshot("lea@example.org")).refusals == {}
    assert (await state.snapshot("kay@example.org")).refusals == {}


async def test_json_nested_past_the_parsers_depth_is_a_400_before_any_signature(
        hooks: tuple[TestServer, State, Fetcher], aredis: aioredis.Redis) -> None:
    # Anyone can POST here: a body of 100,000 "[" made json.loads raise RecursionError
    # (a 500) before the signature was looked at.
    server, _, _ = hooks
    for path in ("/webhooks/mailgun", "/webhooks/ses", "/webhooks/postmark/s3cr3t-path"):
        status, reply = await post(server, path, "[" * 100_000)
        assert status == 400 and reply["error"] == "not JSON", (path, status)
    assert await aredis.dbsize() == 0


@pytest.mark.parametrize("url", [
    "https://sns.evil.s3.amazonaws.com/cert.pem",  # "*" is one DNS label, not several
    "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
    "https://sns.eu-west-1.amazonaws.com:99999/cert.pem",  # a port out of range: no 500
    "http://sns.eu-west-1.amazonaws.com/cert.pem",
])
async def test_ses_certificate_from_a_host_outside_the_allow_list_is_401(
        hooks: tuple[TestServer, State, Fetcher], aredis: aioredis.Redis, url: str) -> None:
    server, _, fetcher = hooks
    status, reply = await post(server, "/webhooks/ses", json.dumps(sns(SES_BOUNCE, url=url)))
    assert (status, reply["error"]) == (401, "signing certificate URL not allowed")
    assert fetcher.urls == [] and await aredis.dbsize() == 0
