"""Every Prometheus metric heed exposes, on a registry of its own (not the global default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Exposition format 0.0.4, what generate_latest writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Sub-millisecond Redis and policy work up to slow upstream transactions.
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """One registry per heed instance, so tests and several apps never collide."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.messages = Counter("heed_messages_total", "Messages by stream and outcome",
                                ["stream", "outcome"], registry=r)
        self.recipients = Counter("heed_recipients_total", "Recipients by decision",
                                  ["stream", "outcome", "reason"], registry=r)
        self.smtp_replies = Counter("heed_smtp_replies_total", "SMTP replies after DATA",
                                    ["code"], registry=r)
        self.unsubscribe = Counter("heed_unsubscribe_requests_total",
                                   "Requests to /u/TOKEN by method and result",
                                   ["method", "result"], registry=r)
        self.policy_reloads = Counter("heed_policy_reloads_total", "Policy reloads",
                                      ["result"], registry=r)
        self.upstream_seconds = Histogram("heed_upstream_seconds", "Upstream transaction time",
                                          buckets=_SLOW, registry=r)
        self.redis_seconds = Histogram("heed_redis_seconds", "Redis state round-trip time",
                                       buckets=_FAST, registry=r)
        self.decision_seconds = Histogram("heed_decision_seconds",
                                          "Time to decide one message's recipients",
                                          buckets=_FAST, registry=r)
        self.queue_depth = Gauge("heed_queue_depth", "Held copies in the delay queue",
                                 registry=r)
        self.queue_oldest = Gauge("heed_queue_oldest_seconds",
                                  "How overdue the earliest held copy is", registry=r)

    def set_queue(self, depth: int, oldest_age: float) -> None:
        """Update the queue gauges (the scheduler's watcher calls this)."""
        self.queue_depth.set(depth)
        self.queue_oldest.set(oldest_age)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
