"""What the mail path leaves behind per recipient: one JSON log line, one metric count, and
the message's record in Redis (sends, VERP mappings, audit entries) in one pipeline."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from proxy.audit import Audit, AuditEntry
from proxy.clock import Clock
from proxy.errors import StateUnavailable
from proxy.metrics import Metrics
from proxy.policy import Policy
from proxy.policy_store import PolicyStore
from proxy.queue import HeldMail
from proxy.state import State
from proxy.tell.offer import Offer
from proxy.types import Decision, Envelope

log = logging.getLogger("heed.mailpath")  # the decision log line keeps its logger name


@dataclass
class Delivery:
    """What the upstream did with the copies of one message, per recipient."""

    sent: list[str] = field(default_factory=list)
    refused: dict[str, tuple[int, str]] = field(default_factory=dict)  # for good (5xx)
    failed: dict[str, str] = field(default_factory=dict)  # for now: 4xx or no answer
    # Sent marketing copies whose one-click was covered by DKIM (RFC 8058 §4).
    signed: set[str] = field(default_factory=set)
    # The VERP token and list of each sent copy that had a return path of its own.
    verp: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Sent marketing copies: "yes", "inserted" or "no" (a visible unsubscribe link in the body).
    body_link: dict[str, str] = field(default_factory=dict)
    # The tool's own unsubscribe links in each sent copy, by list (proxy/tell/offer.py).
    offers: dict[str, tuple[str, Offer]] = field(default_factory=dict)


class Recorder:
    """Writes the decisions and outcomes of the mail path (best effort: the mail is out)."""

    def __init__(self, *, state: State, audit: Audit, redis: Any, policies: PolicyStore,
                 clock: Clock, metrics: Metrics, verp_ttl: float,
                 offer_ttl: float = 90 * 86400.0) -> None:
        self.state = state
        self.audit = audit
        self.redis = redis  # the group-commit client: records may be written behind
        self.policies = policies
        self.clock = clock
        self.metrics = metrics
        self.verp_ttl = verp_ttl
        self.offer_ttl = offer_ttl

    def entry(self, kind: str, recipient: str, decision: Decision, outcome: str, sender: str,
              message_id: str, correlation_id: str, detail: str = "", *,
              one_click: str = "", body_link: str = "") -> AuditEntry:
        return AuditEntry(
            at=self.clock.now(), kind=kind, recipient=recipient, outcome=outcome,
            stream=decision.stream, reasons=tuple(str(r) for r in decision.reasons),
            message_id=message_id, sender=sender,
            policy_version=self.policies.current.version, correlation_id=correlation_id,
            detail=detail, one_click=one_click, body_link=body_link,
        )

    def observe(self, entry: AuditEntry, reason: str) -> None:
        """One JSON log line and one metric count per recipient decision."""
        # The same correlation id as the audit record: grep one, find the other.
        if log.isEnabledFor(logging.INFO):  # the fields cost more than the level check
            log.info("decision", extra=entry.log_fields())
        self.metrics.recipient(entry.stream, entry.outcome, reason)

    async def rejection(self, envelope: Envelope, recipient: str, decision: Decision,
                        correlation_id: str) -> None:
        """A recipient refused at RCPT (best effort: the 550 is the record for the client)."""
        entry = self.entry("decision", recipient, decision, "reject", envelope.sender, "",
                           correlation_id)
        self.observe(entry, reason_code(decision))
        try:
            pipe = self.redis.pipeline(transaction=False)
            self.audit.add(pipe, [entry])
            await pipe.execute_behind("an RCPT rejection")
        except RedisError:
            log.warning("audit record lost for RCPT rejection of %s", recipient)

    async def message(self, envelope: Envelope, message_id: str, correlation_id: str,
                      decisions: Mapping[str, Decision], status: Mapping[str, str],
                      policy: Policy, delivery: Delivery | None = None) -> None:
        """Sends, VERP mappings and audit entries of one message in one round trip
        (a lost mapping leaves a DSN's own fields to go by)."""
        delivery = delivery or Delivery()
        refused, signed, went = delivery.refused, delivery.signed, set(delivery.sent)
        marketing = {n for n, s in policy.streams.items() if s.marketing}
        entries = [
            self.entry("decision", r, d, status.get(r, d.action.value),
                       envelope.sender, message_id, correlation_id,
                       " ".join(map(str, refused[r])) if r in refused else "",
                       one_click=("signed" if r in signed else "unsigned")
                       if r in went and d.stream in marketing else "",
                       body_link=delivery.body_link.get(r, "") if r in went else "")
            for r, d in decisions.items()
        ]
        by_stream: dict[str, list[str]] = {}
        for r in delivery.sent:
            by_stream.setdefault(decisions[r].stream, []).append(r)
        for entry in entries:
            self.observe(entry, reason_code(decisions[entry.recipient]))
        try:
            pipe = self.redis.pipeline(transaction=False)
            for stream, recipients in by_stream.items():
                self.state.record_sends(pipe, stream, recipients, self.clock.now())
            for r, (token, list_name) in delivery.verp.items():
                # Deterministic token: resending rewrites the same value and renews the TTL.
                pipe.set(self.state.keys.verp(token), f"{r}\n{list_name}",
                         ex=max(1, int(self.verp_ttl)))
            now = self.clock.now()
            for r, (list_name, offer) in delivery.offers.items():
                # One small hash per person (a field per list), renewed by each copy.
                key = self.state.keys.tool_offers(r)
                pipe.hset(key, list_name, offer.to_json(now))
                pipe.expire(key, max(1, int(self.offer_ttl)))
            self.audit.add(pipe, entries)
            # Written behind when configured (proxy/batch.py): the 250 need not wait.
            # heed_redis_seconds{op="record"} times it, from here until Redis has it.
            await pipe.execute_behind(f"sends/audit for {message_id}")
        except Exception as exc:  # noqa: BLE001 - the mail is out; never turn that into a 4xx
            log.error("could not record sends/audit for %s: %s", message_id, type(exc).__name__)

    async def queue_end(self, item: HeldMail, outcome: str, why: str) -> None:
        """A held copy given up: ``expired`` after the maximum hold, or ``failed`` for good."""
        entry = AuditEntry(at=self.clock.now(), kind="expire" if outcome == "expired" else
                           "upstream", recipient=item.recipient, outcome=outcome,
                           stream=item.stream, reasons=(why,), message_id=item.message_id,
                           sender=item.sender, policy_version=self.policies.current.version)
        self.observe(entry, entry.kind)
        try:
            await self.audit.record([entry])
        except StateUnavailable:
            log.error("audit record lost: %s %s for %s", outcome, item.id, item.recipient)


def reason_code(decision: Decision) -> str:
    """The metric label of a decision: its first reason's stable code."""
    return decision.reasons[0].code if decision.reasons else "none"


__all__ = ["Delivery", "Recorder", "reason_code"]
