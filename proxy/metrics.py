"""Every Prometheus metric heed exposes, on a registry of its own (not the global default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """One registry per heed instance, so tests and several apps never collide."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages = Counter("heed_messages_total", "Messages by stream and outcome",
                                ["stream", "outcome"], registry=r)
        self.recipients = Counter("heed_recipients_total", "Recipients by decision",
                                  ["stream", "outcome", "reason"], registry=r)
        self.smtp_replies = Counter("heed_smtp_replies_total", "SMTP replies after DATA",
                                    ["code"], registry=r)
        self.unsubscribe = Counter("heed_unsubscribe_requests_total", "One-click endpoint",
                                   ["method", "result"], registry=r)
        self.policy_reloads = Counter("heed_policy_reloads_total", "Policy reloads",
                                      ["result"], registry=r)
        self.upstream_seconds = Histogram("heed_upstream_seconds", "Upstream transaction time",
                                          registry=r)
        self.redis_seconds = Histogram("heed_redis_seconds", "Redis state read time",
                                       registry=r)
        self.queue_depth = Gauge("heed_queue_depth", "Held copies in the delay queue",
                                 registry=r)
        self.queue_oldest = Gauge("heed_queue_oldest_seconds",
                                  "How overdue the earliest held copy is", registry=r)

    def set_queue(self, depth: int, oldest_age: float) -> None:
        self.queue_depth.set(depth)
        self.queue_oldest.set(oldest_age)

    def render(self) -> bytes:
        return generate_latest(self.registry)
