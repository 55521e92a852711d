"""Every Prometheus metric heed exposes, on a registry of its own (not the global default)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Exposition format 0.0.4, what generate_latest writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Sub-millisecond Redis and policy work up to slow upstream transactions.
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

REDIS_OPS = ("snapshot", "intent", "record")


def reply_class(reply: str) -> str:
    """"2xx", "4xx" or "5xx" for an SMTP reply line (RFC 5321 §4.2.1: the first digit)."""
    head = reply[:1]
    return f"{head}xx" if head in ("2", "3", "4", "5") else "other"


class Timer:
    """What ``Histogram.time()`` gives as a context manager (the same clock, never
    negative), in fewer steps: the mail path times a round trip or two per message."""

    __slots__ = ("observe", "start")

    def __init__(self, observe: Callable[[float], None]) -> None:
        self.observe = observe
        self.start = 0.0

    def __enter__(self) -> Timer:
        self.start = perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.observe(max(perf_counter() - self.start, 0))


class Metrics:
    """One registry per heed instance, so tests and several apps never collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.messages = Counter("heed_messages_total",
                                "Messages after DATA by stream and verdict "
                                "(accepted, tempfail, rejected); once per stream it touched",
                                ["stream", "outcome"], registry=r)
        self.recipients = Counter("heed_recipients_total",
                                  "Recipient decisions by stream, outcome and first reason code",
                                  ["stream", "outcome", "reason"], registry=r)
        self.smtp_replies = Counter("heed_smtp_replies_total",
                                    "Replies heed gave at RCPT and DATA, by code class",
                                    ["phase", "class"], registry=r)
        self.unsubscribe = Counter("heed_unsubscribe_requests_total",
                                   "Requests to /u/TOKEN by method and result",
                                   ["method", "result"], registry=r)
        # One counter for every page people use (unsubscribe, preference centre …):
        # page is a fixed short name chosen by the handler, never a path or token.
        self.http_requests = Counter("heed_http_requests_total",
                                     "Requests to heed's pages by page and result",
                                     ["page", "result"], registry=r)
        self.policy_reloads = Counter("heed_policy_reloads_total", "Policy reloads",
                                      ["result"], registry=r)
        self.upstream_seconds = Histogram("heed_upstream_seconds",
                                          "Upstream transaction time (connection included)",
                                          buckets=_SLOW, registry=r)
        self.redis_seconds = Histogram("heed_redis_seconds",
                                       "Redis round-trip time by operation "
                                       "(snapshot: state read; intent: a delivery's sends and "
                                       "audit 'sending', beside the upstream transaction; "
                                       "record: its outcome, from hand-over until written)",
                                       ["op"], buckets=_FAST, registry=r)
        # Labelled children looked up once: ``labels()`` checks and locks on every call,
        # and the mail path asks several times per recipient. Label sets are few
        # (streams, outcomes, reason codes), and the registry keeps every child anyway.
        self._children: dict[tuple[Any, ...], Any] = {}
        for op in REDIS_OPS:  # known series exist from the start (no gaps in rate())
            self.child(self.redis_seconds, op)
        self.decision_seconds = Histogram("heed_decision_seconds",
                                          "Time to decide one message's recipients",
                                          buckets=_FAST, registry=r)
        self.queue_depth = Gauge("heed_queue_depth", "Held copies in the delay queue",
                                 registry=r)
        self.queue_oldest = Gauge("heed_queue_oldest_seconds",
                                  "How overdue the earliest held copy is", registry=r)
        self.events = Counter("heed_events_total",
                              "Events in (API, webhooks, DSN, ARF) by channel, kind and outcome",
                              ["channel", "kind", "outcome"], registry=r)
        self.reports = Counter("heed_reports_total",
                               "Bounce and complaint reports mailed to heed, by what they said "
                               "(heed's reason, or complaint/feedback/unread) and hard or soft",
                               ["reason", "severity"], registry=r)
        self.forwarded = Counter("heed_reports_forwarded_total",
                                 "Reports to a VERP address queued for the tool's return path",
                                 registry=r)
        self.records_retried = Counter("heed_records_retried_total",
                                       "Records written behind sent again after a Redis error",
                                       registry=r)
        self.records_lost = Counter("heed_records_lost_total",
                                    "Records written behind given up (Redis away too long, "
                                    "or heed stopping while it was)", registry=r)
        self.mime_unparsed = Counter("heed_mime_unparsed_parts_total",
                                     "MIME parts heed could not read when changing a copy "
                                     "(tracked links, the re-permission ask): passed untouched",
                                     registry=r)
        self.webhooks = Counter("heed_webhook_requests_total",
                                "Webhook requests by service and result "
                                "(ok, refused, bad, unavailable)",
                                ["service", "result"], registry=r)

        self.tell_jobs = Gauge("heed_tell_jobs",
                               "Outbound jobs telling the tool (one-click, mailto, webhook) by "
                               "state: pending, sent, failed (attempts to retry), dead "
                               "(dead-lettered); shared by every worker",
                               ["kind", "state"], registry=r)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, the same child object, looked up once."""
        key = (metric, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def recipient(self, stream: str, outcome: str, reason: str) -> None:
        """Count one recipient decision."""
        self.child(self.recipients, stream, outcome, reason).inc()

    def redis_timer(self, op: str) -> Timer:
        """A context manager timing one Redis round trip of ``op`` (see REDIS_OPS)."""
        return Timer(self.child(self.redis_seconds, op).observe)

    def set_queue(self, depth: int, oldest_age: float) -> None:
        """Update the queue gauges (the scheduler's watcher calls this)."""
        self.queue_depth.set(depth)
        self.queue_oldest.set(oldest_age)

    def set_tell(self, stats: dict[tuple[str, str], int]) -> None:
        """Update the tell job gauges from the counts kept in Redis (proxy/tell/jobs.py)."""
        for (kind, state), count in stats.items():
            if state != "created":
                self.tell_jobs.labels(kind, state).set(count)

    def http_request(self, page: str, result: str) -> None:
        """Count one request to a page (``page``: a fixed name such as "unsubscribe")."""
        self.http_requests.labels(page, result).inc()

    def reply(self, phase: str, reply: str) -> str:
        """Count an SMTP reply and hand it back, so a hook can ``return metrics.reply(...)``."""
        self.child(self.smtp_replies, phase, reply_class(reply)).inc()
        return reply

    def message(self, streams: Iterable[str], outcome: str) -> None:
        for stream in sorted(set(streams)):
            self.child(self.messages, stream, outcome).inc()

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
