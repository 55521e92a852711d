"""/webhooks/<service>: SES (via SNS), SendGrid, Mailgun and Postmark, onto the same events.

Each answer is 200 once every event is recorded (events heed does not act on
included), 401 for a wrong signature or credentials, 400 for an unreadable
payload, 404 for a service that is not configured, and 503 when Redis is
unavailable, so the service retries.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from proxy.clock import Clock
from proxy.errors import ConfigError, StateUnavailable
from proxy.http.api import answer, problem, read_body
from proxy.settings import WebhookSettings
from proxy.signals.events import Event, EventRules, apply
from proxy.signals.webhooks import WebhookError, mailgun, postmark, sendgrid, ses
from proxy.state import State

log = logging.getLogger("heed.webhooks")

MAX_BODY = 4 * 1024 * 1024  # SendGrid batches up to thousands of events per POST
PENDING = 60  # seconds a Mailgun token is held before its event is recorded


def _same(given: str, wanted: str) -> bool:
    return bool(wanted) and hmac.compare_digest(given.encode(), wanted.encode())


class Webhooks:
    def __init__(self, state: State, settings: WebhookSettings, rules: EventRules, clock: Clock,
                 fetch: ses.CertFetcher, metrics: Any = None) -> None:
        self.metrics = metrics
        self.state = state
        self.settings = settings
        self.rules = rules
        self.clock = clock
        self.sns = (ses.SnsVerifier(settings.ses_cert_hosts, fetch, settings.ses_topics)
                    if settings.ses_enabled else None)
        try:
            self.sendgrid_key = (sendgrid.load_key(settings.sendgrid_public_key)
                                 if settings.sendgrid_public_key else None)
        except ValueError as exc:
            raise ConfigError([str(exc)]) from None

    def _count(self, service: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.webhooks.labels(service, result).inc()

    async def _record(self, service: str, events: Sequence[Event]) -> web.Response:
        try:
            outcomes = [(await apply(self.state, e, self.rules, self.metrics)).outcome
                        for e in events]
        except StateUnavailable:
            self._count(service, "unavailable")
            return problem(503, "state store unavailable; try again")
        self._count(service, "ok")
        return answer({"service": service, "events": len(outcomes), "outcomes": outcomes})

    async def _handle(self, request: web.Request, service: str,
                      work: Callable[[bytes], Awaitable[list[Event]]]) -> web.Response:
        body = await read_body(request, MAX_BODY)
        if body is None:
            return problem(413, "body too large")
        try:
            events = await work(body)
        except WebhookError as exc:
            log.warning("%s webhook refused: %s", service, exc.message)
            self._count(service, "refused" if exc.status == 401 else "bad")
            return problem(exc.status, exc.message)
        except StateUnavailable:
            self._count(service, "unavailable")
            return problem(503, "state store unavailable; try again")
        except (TypeError, AttributeError):  # a field of a type the service never sends
            log.warning("%s webhook payload not in the documented shape", service, exc_info=True)
            self._count(service, "bad")
            return problem(400, "payload not in the service's documented shape")
        return await self._record(service, events)

    async def ses(self, request: web.Request) -> web.Response:
        if self.sns is None:
            raise web.HTTPNotFound()
        sns = self.sns

        async def work(body: bytes) -> list[Event]:
            message = ses.parse_sns(body)
            await sns.verify(message)
            ses.check_age(message, self.clock.now(), self.settings.ses_max_age)
            if message.get("Type") == "SubscriptionConfirmation":
                # Not fetched: confirming a subscription is the operator's decision.
                log.warning("SNS subscription to %s awaits confirmation: visit %s",
                            message.get("TopicArn"), message.get("SubscribeURL"))
                return []
            if message.get("Type") != "Notification":
                return []
            return ses.ses_events(ses.notification_of(message), str(message.get("MessageId")),
                                  self.clock.now())

        return await self._handle(request, "ses", work)

    async def sendgrid(self, request: web.Request) -> web.Response:
        key = self.sendgrid_key
        if key is None:
            raise web.HTTPNotFound()

        async def work(body: bytes) -> list[Event]:
            sendgrid.verify(key, request.headers, body, self.clock.now(),
                            self.settings.sendgrid_max_age)
            return sendgrid.events(body, self.clock.now())

        return await self._handle(request, "sendgrid", work)

    async def _first_use(self, token: str, ttl: float) -> bool:
        # Taken for PENDING seconds only until the event is recorded (_keep): when Redis
        # fails in between, Mailgun's retry (same token, minutes later) is still heard.
        try:
            return bool(await self.state.redis.set(
                self.state.keys.webhook_nonce("mailgun", token), b"1", nx=True,
                ex=max(1, min(PENDING, int(ttl)))))
        except RedisError as exc:
            raise StateUnavailable("redis unavailable") from exc

    async def _keep(self, token: str, ttl: float) -> None:
        try:
            await self.state.redis.expire(self.state.keys.webhook_nonce("mailgun", token),
                                          max(1, int(ttl)))
        except RedisError:
            log.warning("mailgun token recorded for %d s only (redis unavailable)", PENDING)

    async def _forget(self, token: str) -> None:
        try:
            await self.state.redis.delete(self.state.keys.webhook_nonce("mailgun", token))
        except RedisError:
            log.warning("mailgun token not released; it expires in %d s", PENDING)

    async def mailgun(self, request: web.Request) -> web.Response:
        key = self.settings.mailgun_signing_key
        if not key:
            raise web.HTTPNotFound()
        taken: list[str] = []

        async def first_use(token: str, ttl: float) -> bool:
            fresh = await self._first_use(token, ttl)
            if fresh:
                taken.append(token)
            return fresh

        async def work(body: bytes) -> list[Event]:
            payload = mailgun.parse(body)
            await mailgun.verify(key, payload, self.clock.now(), self.settings.mailgun_max_age,
                                 first_use)
            return mailgun.events(payload, self.clock.now())

        response = await self._handle(request, "mailgun", work)
        if taken and response.status < 300:
            await self._keep(taken[0], 2 * self.settings.mailgun_max_age)
        elif taken:
            # Mailgun retries with the same signed token: a token whose event was not
            # recorded must not make that retry look like a replay (the event would be lost).
            await self._forget(taken[0])
        return response

    def _basic_ok(self, request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared, always: the time taken says nothing about which one was wrong.
        return _same(user, self.settings.postmark_username) & _same(
            password, self.settings.postmark_password)

    async def postmark(self, request: web.Request) -> web.Response:
        s = self.settings
        secret = request.match_info.get("secret")
        if secret is not None:
            if not s.postmark_path_secret:
                raise web.HTTPNotFound()
            if not _same(secret, s.postmark_path_secret):
                return problem(401, "unknown webhook path")
        elif not (s.postmark_username and s.postmark_password):
            raise web.HTTPNotFound()
        elif not self._basic_ok(request):
            response = problem(401, "credentials required")
            response.headers["WWW-Authenticate"] = 'Basic realm="heed"'
            return response

        async def work(body: bytes) -> list[Event]:
            return postmark.events(body, self.clock.now())

        return await self._handle(request, "postmark", work)


def add_webhooks(app: web.Application, *, state: State, settings: WebhookSettings,
                 rules: EventRules, clock: Clock, fetch: ses.CertFetcher = ses.fetch_cert,
                 metrics: Any = None) -> None:
    """Mount /webhooks/<service> on ``app`` (unconfigured services answer 404)."""
    hooks = Webhooks(state, settings, rules, clock, fetch, metrics)
    app.router.add_post("/webhooks/ses", hooks.ses)
    app.router.add_post("/webhooks/sendgrid", hooks.sendgrid)
    app.router.add_post("/webhooks/mailgun", hooks.mailgun)
    app.router.add_post("/webhooks/postmark", hooks.postmark)
    app.router.add_post("/webhooks/postmark/{secret}", hooks.postmark)
