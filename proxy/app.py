"""heed wired together: SMTP edge, mail path, scheduler and HTTP side in one event loop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from proxy import stopping
from proxy.audit import Audit
from proxy.batch import GroupCommit
from proxy.clock import Clock, SystemClock
from proxy.dkim import DkimSigner
from proxy.dsn import Bounces
from proxy.durable.guard import ServingGuard
from proxy.durable.mirror import Mirror, MirroredRedis
from proxy.finish import Finisher, UnsubscribeAndSign
from proxy.http.api import add_api
from proxy.http.app import make_app, start_http
from proxy.http.clicks import ClickPages, add_clicks
from proxy.http.webhooks import add_webhooks
from proxy.keys import Keys
from proxy.logs import LoggedAddress
from proxy.mailpath import MailPath
from proxy.metrics import Metrics
from proxy.policy_store import PolicyStore
from proxy.privacy import erase_secret, key_file
from proxy.providers.catalog import Catalog
from proxy.providers.guard import ProviderGuard
from proxy.providers.lookup import ProviderLookup, make_resolver
from proxy.queue import DelayQueue
from proxy.redisconn import connect_redis, warm_up
from proxy.relay import SmtpUpstream
from proxy.scheduler import Scheduler
from proxy.settings import Settings, UnsubscribeKey, verp_domain
from proxy.signals.bounces import ReportMailbox
from proxy.signals.clicks import Clicks
from proxy.signals.events import EventRules
from proxy.signals.forward import Forwarder
from proxy.signals.inbound import LocalMailboxes, PostmasterMailbox, UnsubscribeMailbox
from proxy.signals.replies import ReplyMailbox
from proxy.smtp.access import Access
from proxy.smtp.handler import Handler, LocalMail
from proxy.smtp.server import start_smtp
from proxy.state import State
from proxy.tell.worker import Teller
from proxy.tokens import TokenSigner

log = logging.getLogger("heed")
# A batch of person reads/writes that Redis has not answered in this long fails with
# a 451 for its callers: the 3 s read timeout and one retry of the other clients.
BATCH_TIMEOUT = 6.0


def unsubscribe_keys(settings: Settings) -> tuple[UnsubscribeKey, ...]:
    """The configured token keys, or one random key kept beside the embedded Redis data."""
    if settings.unsubscribe.keys:
        return settings.unsubscribe.keys
    if settings.redis.url is not None:
        log.warning("no unsubscribe.keys: this instance signs with a key of its own; instances "
                    "sharing a Redis need the same unsubscribe.keys to honour each other's links")
    secret = key_file(settings.redis.data_dir.parent / "unsubscribe.key",
                       "unsubscribe token key")
    return (UnsubscribeKey("auto", secret),)


class Heed:
    """All of heed's parts; ``await start()`` inside a running loop, ``await stop()`` to end."""

    def __init__(self, settings: Settings, *, redis_url: str, clock: Clock | None = None,
                 policies: PolicyStore | None = None, finisher: Finisher | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.policies = policies or PolicyStore(settings.policies)
        self.keys = Keys(settings.redis.prefix)
        # With a durable Redis (docs/architecture.md): consent, refusals and erasures are
        # written there first, the delay queue lives there; decisions read the serving
        # one, never before it is in step with the durable one (proxy/durable/guard.py).
        durable_url = settings.redis.durable_url
        self.durable = connect_redis(durable_url) if durable_url else None
        guard = (ServingGuard(redis_url, self.durable, self.keys).on_connect
                 if self.durable is not None else None)
        self.redis = connect_redis(redis_url, on_connect=guard)
        # Person reads and the writes after delivery of concurrent sessions share
        # round trips (group commit); the delay queue keeps the plain client.
        self.metrics = Metrics()
        self.batched = GroupCommit(self.redis, lane=connect_redis(redis_url, read_timeout=None,
                                                               on_connect=guard),
                                   timeout=BATCH_TIMEOUT, linger=settings.redis.write_behind,
                                   on_written=self.metrics.redis_seconds.labels("record").observe,
                                   on_retry=self.metrics.records_retried.inc,
                                   on_lost=self.metrics.records_lost.inc)
        secret = erase_secret(settings)
        shown = LoggedAddress(settings.log_addresses, secret)  # addresses in log lines
        self.audit = Audit(self.batched, self.keys, maxlen_global=settings.audit.max_entries,
                           max_age=settings.audit.max_age)
        people = (self.batched if self.durable is None
                  else MirroredRedis(self.batched, Mirror(
                      GroupCommit(self.durable, timeout=BATCH_TIMEOUT), self.keys)))
        self.state = State(people, self.keys, self.clock, secret=secret, audit=self.audit)
        self.queue = DelayQueue(self.durable or self.redis, self.keys)
        self.upstream = SmtpUpstream(settings.upstream, local_hostname=settings.smtp.hostname,
                                     observe=self.metrics.upstream_seconds.observe)
        self.tokens = TokenSigner(unsubscribe_keys(settings), self.clock,
                                  settings.unsubscribe.token_lifetime)
        self.signer = DkimSigner(settings.dkim, self.clock) if settings.dkim else None
        self.bounce_domain = settings.bounces.domain or settings.unsubscribe.mailto_domain
        self.finisher = finisher or UnsubscribeAndSign(
            self.tokens, self.signer, public_url=settings.http.public_url,
            mailto_domain=settings.unsubscribe.mailto_domain,
            # VERP only to a domain the sysadmin named (and routes to heed): a MAIL FROM
            # at an unrouted domain would lose every bounce, the tool's included.
            bounce_domain=verp_domain(settings.bounces),
            verp_max_local=settings.bounces.verp_max_local,
            on_unparsed=self.metrics.mime_unparsed.inc)
        # Tracked links outlive their token by a day: a late click still finds its destination.
        self.clicks = Clicks(self.tokens, self.state, self.batched, self.keys, settings.clicks,
                             link_ttl=settings.unsubscribe.token_lifetime + 86400)
        self.rules = EventRules(settings.bounces)
        catalog = Catalog(settings.providers)
        self.providers = ProviderGuard(
            self.redis, self.keys, catalog,
            ProviderLookup(catalog, make_resolver(settings.dns), self.clock, settings.dns.mx_cache),
            self.clock)
        self.access = Access(settings.smtp.client_networks, settings.smtp.users)
        self.mailpath = MailPath(
            policies=self.policies, state=self.state, audit=self.audit, queue=self.queue,
            upstream=self.upstream, finisher=self.finisher, clock=self.clock, redis=self.batched,
            on_failure=settings.upstream.on_failure, retry_after=settings.queue.backoff[0],
            metrics=self.metrics, verp_ttl=settings.bounces.verp_ttl, providers=self.providers,
            shown=shown,
            links=self.clicks,
            reply_ttl=settings.replies.match_ttl if settings.replies.address else 0,
            offer_ttl=settings.tell.offer_ttl,
        )
        self.reports = ReportMailbox(
            self.tokens, self.state, self.bounce_domain, rules=self.rules,
            bounce=settings.bounces.address, complaints=settings.bounces.complaints,
            trust_unsigned=settings.bounces.trust_unsigned, metrics=self.metrics,
            forwarder=Forwarder(self.queue, self.clock, {
                self.bounce_domain, settings.unsubscribe.mailto_domain})
            if settings.bounces.forward else None,
            on_bounce=self.providers.hear_dsn, shown=shown)
        own = (settings.smtp.hostname, settings.unsubscribe.mailto_domain, self.bounce_domain)
        boxes: list[LocalMail] = [UnsubscribeMailbox(
            self.tokens, self.state, settings.unsubscribe.mailto_domain), self.reports,
            PostmasterMailbox(own, settings.smtp.postmaster, self.upstream,
                              keep=self.reports.unread.keep)]
        if settings.replies.address:
            boxes.append(ReplyMailbox(self.state, self.batched, settings.replies.address,
                                      settings.unsubscribe.mailto_domain))
        self.local: LocalMail | None = LocalMailboxes(*boxes)
        # Held mail given up gets one delivery status notification (RFC 3464).
        self.bounces = Bounces(self.queue, self.upstream, self.clock, settings.smtp.hostname)
        self.scheduler = Scheduler(
            self.queue, self.bounces.release(self.mailpath.release), self.clock, settings.queue,
            on_expire=self.bounces.hook(self.mailpath.expired, expired=True),
            on_permfail=self.bounces.hook(self.mailpath.failed_permanently, expired=False),
        )
        # Every copy this process holds (a delay, a retry, a DSN) wakes its scheduler when
        # it comes due, which then does not look for due copies every poll interval.
        self.queue.on_put = self.scheduler.wake
        self.teller = Teller(
            redis=self.redis, keys=self.keys, clock=self.clock, settings=settings.tell,
            policies=self.policies, upstream=self.upstream, audit=Audit(self.redis, self.keys),
            sender=settings.tell.sender or f"unsubscribe@{settings.unsubscribe.mailto_domain}",
            hostname=settings.smtp.hostname, metrics=self.metrics)
        self._smtp: asyncio.Server | None = None
        self._http: Any = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, run_scheduler: bool = True, reuse_port: bool = False,
                    smtp_socket: socket.socket | None = None,
                    before_listen: Callable[[], Awaitable[None]] | None = None) -> None:
        await warm_up(self.redis)
        await warm_up(self.batched.lane)
        if self.durable is not None:
            await warm_up(self.durable)
        if before_listen is not None:
            await before_listen()  # --workers: every worker starts listening together
        handler = Handler(self.mailpath, self.access,
                          max_recipients=self.settings.smtp.max_recipients, local=self.local,
                          metrics=self.metrics)
        self._smtp = await start_smtp(handler, self.settings.smtp, self.access,
                                      reuse_port=reuse_port, sock=smtp_socket)
        if self.settings.http.listen is not None:
            app = make_app(tokens=self.tokens, state=self.state, metrics=self.metrics,
                           ready=self.ready, policies=self.policies,
                           public_url=self.settings.http.public_url)
            add_api(app, state=self.state, policies=self.policies, clock=self.clock,
                    tokens=self.settings.api.tokens, rules=self.rules, metrics=self.metrics)
            add_webhooks(app, state=self.state, settings=self.settings.webhooks,
                         rules=self.rules, clock=self.clock, metrics=self.metrics)
            add_clicks(app, ClickPages(self.clicks, self.tokens, self.state, self.clock,
                                       self.metrics))
            self._http = await start_http(app, *self.settings.http.listen, reuse_port=reuse_port)
        if run_scheduler:
            self._tasks.append(asyncio.create_task(self.scheduler.run(self._stop)))
            self._tasks.append(asyncio.create_task(self._watch_queue()))
            self._tasks.append(asyncio.create_task(self.teller.run(self._stop)))
        host, port = self.settings.smtp.listen
        log.info("heed listening for SMTP on %s:%d, upstream %s:%d, policy %s", host, port,
                 self.settings.upstream.host, self.settings.upstream.port,
                 self.policies.current.version)

    @property
    def smtp_port(self) -> int:
        assert self._smtp is not None
        return int(self._smtp.sockets[0].getsockname()[1])

    def reload(self) -> bool:
        ok = self.policies.reload()
        self.metrics.policy_reloads.labels("ok" if ok else "failed").inc()
        return ok

    async def ready(self) -> dict[str, Any]:
        """Redis and upstream reachable, and whether heed takes mail (for /readyz).

        With ``upstream.on_failure: queue`` heed answers 250 and holds the mail while the
        upstream is down, so it stays ready: a load balancer must not pull a working heed."""
        try:
            redis_ok = bool(await self.redis.ping())
            if self.durable is not None:
                redis_ok = redis_ok and bool(await self.durable.ping())
        except Exception:  # noqa: BLE001 - any failure means not ready
            redis_ok = False
        upstream_ok = await self.upstream.ping()
        queueing = self.settings.upstream.on_failure == "queue"
        return {"ready": redis_ok and (upstream_ok or queueing), "redis": redis_ok,
                "upstream": upstream_ok, "on_failure": self.settings.upstream.on_failure}

    async def refresh_queue_gauges(self) -> None:
        """Read the queue's depth and its most overdue copy into the /metrics gauges."""
        depth, oldest = await self.queue.gauges()
        age = max(0.0, self.clock.now() - oldest) if oldest is not None else 0.0
        self.metrics.set_queue(depth, age)
        if oldest is not None:
            # The queue's earliest copy, whoever put it: a copy another process holds
            # (a backlog its own scheduler drains) wakes this one within a refresh too.
            self.scheduler.wake(oldest)

    async def _watch_queue(self, every: float = 5.0) -> None:
        """Keep the queue gauges fresh for /metrics."""
        while not self._stop.is_set():
            try:
                await self.refresh_queue_gauges()
            except Exception:  # noqa: BLE001 - a gauge must never stop heed
                log.debug("queue gauges not updated", exc_info=True)
            await stopping.sleep(self._stop, every)

    async def stop(self) -> None:
        self._stop.set()
        if self._smtp is not None:
            self._smtp.close()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        if self._http is not None:
            await self._http.cleanup()
        await self.teller.close()
        await self.upstream.close()
        await self.batched.aclose()
        if self.durable is not None:
            await self.durable.aclose()
