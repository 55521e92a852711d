"""What the mail path leaves behind per recipient: one JSON log line, one metric count, and
the message's record in Redis: its intent (sends, audit "sending") while the upstream works,
then its outcome (VERP mappings, audit entries, sends taken back) in one pipeline each."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from proxy.audit import Audit, AuditEntry
from proxy.clock import Clock
from proxy.errors import StateUnavailable
from proxy.logs import FULL, LoggedAddress
from proxy.metrics import Metrics
from proxy.policy import Policy
from proxy.policy_store import PolicyStore
from proxy.queue import HeldMail
from proxy.signals.replies import record_copies
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
    # The VERP token, list and the tool's envelope sender of each sent copy that had a
    # return path of its own.
    verp: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    # Sent marketing copies: "yes", "inserted" or "no" (a visible unsubscribe link in the body).
    body_link: dict[str, str] = field(default_factory=dict)
    # The tool's own unsubscribe links in each sent copy, by list (proxy/tell/offer.py).
    offers: dict[str, tuple[str, Offer]] = field(default_factory=dict)


@dataclass(frozen=True)
class Intent:
    """The sends counted before the upstream answered (recipient -> send-history member)."""

    members: dict[str, str] = field(default_factory=dict)
    written: bool = False  # False: Redis did not confirm it, so the outcome counts again


NO_INTENT = Intent()


class Recorder:
    """Writes the decisions and outcomes of the mail path (best effort: the mail is out)."""

    def __init__(self, *, state: State, audit: Audit, redis: Any, policies: PolicyStore,
                 clock: Clock, metrics: Metrics, verp_ttl: float,
                 shown: LoggedAddress = FULL, reply_ttl: float = 0,
                 offer_ttl: float = 90 * 86400.0) -> None:
        self.state = state
        self.shown = shown  # how addresses appear in log lines (log_addresses)
        self.audit = audit
        self.redis = redis  # the group-commit client: records may be written behind
        self.policies = policies
        self.clock = clock
        self.metrics = metrics
        self.verp_ttl = verp_ttl
        self.reply_ttl = reply_ttl  # 0: replies are not matched (replies.address is "")
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
            fields = entry.log_fields()
            if self.shown is not FULL:
                fields["recipient"] = self.shown(entry.recipient)
                fields["sender"] = self.shown(entry.sender)
            log.info("decision", extra=fields)
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
            log.warning("audit record lost for RCPT rejection of %s", self.shown(recipient))

    async def intent(self, envelope: Envelope, message_id: str, correlation_id: str,
                     decisions: Mapping[str, Decision]) -> Intent:
        """Count the copies about to go and audit them "sending", before the 250.

        Sent while the upstream transaction runs (the 250 waits for both), so a heed
        killed right after its 250 leaves every accepted copy counted towards caps and
        silence and in the audit, its outcome not confirmed; ``message`` confirms it,
        or takes the count back for a copy the upstream did not take."""
        now = self.clock.now()
        pipe = self.redis.pipeline(transaction=False)
        members: dict[str, str] = {}
        for stream, recipients in _by_stream(decisions, decisions).items():
            members.update(self.state.record_sends(pipe, stream, recipients, now))
        self.audit.add(pipe, [self.entry("intent", r, d, "sending", envelope.sender, message_id,
                                         correlation_id, "outcome not confirmed")
                              for r, d in decisions.items()])
        try:
            with self.metrics.redis_timer("intent"):
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - the copy may be out: ``message`` counts it
            log.warning("intent of %s not recorded (%s): recorded with its outcome", message_id,
                        type(exc).__name__)
            return NO_INTENT
        return Intent(members, written=True)

    async def message(self, envelope: Envelope, message_id: str, correlation_id: str,
                      decisions: Mapping[str, Decision], status: Mapping[str, str],
                      policy: Policy, delivery: Delivery | None = None,
                      intent: Intent = NO_INTENT) -> None:
        """Sends, VERP mappings and audit entries of one message in one round trip
        (a lost mapping leaves a DSN's own fields to go by); with a written ``intent``
        the sends are counted already, and those of copies not sent are taken back."""
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
        for entry in entries:
            self.observe(entry, reason_code(decisions[entry.recipient]))
        try:
            pipe = self.redis.pipeline(transaction=False)
            if intent.written:
                self.state.unrecord_sends(pipe, {r: m for r, m in intent.members.items()
                                                 if r not in went})
            else:
                for stream, recipients in _by_stream(delivery.sent, decisions).items():
                    self.state.record_sends(pipe, stream, recipients, self.clock.now())
            for r, (token, list_name, sender) in delivery.verp.items():
                # Deterministic token: resending rewrites the same value and renews the TTL.
                # The tool's own return path is kept to pass reports on (signals/forward.py).
                pipe.set(self.state.keys.verp(token), f"{r}\n{list_name}\n{sender}",
                         ex=max(1, int(self.verp_ttl)))
            if self.reply_ttl and message_id:
                record_copies(pipe, self.state, message_id,
                              [(r, decisions[r].stream) for r in delivery.sent
                               if decisions[r].stream in marketing], self.reply_ttl)
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
            log.error("audit record lost: %s %s for %s", outcome, item.id,
                      self.shown(item.recipient))


def _by_stream(recipients: Iterable[str], decisions: Mapping[str, Decision]
               ) -> dict[str, list[str]]:
    by_stream: dict[str, list[str]] = {}
    for r in recipients:
        by_stream.setdefault(decisions[r].stream, []).append(r)
    return by_stream


def reason_code(decision: Decision) -> str:
    """The metric label of a decision: its first reason's stable code."""
    return decision.reasons[0].code if decision.reasons else "none"


__all__ = ["NO_INTENT", "Delivery", "Intent", "Recorder", "reason_code"]
