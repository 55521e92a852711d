"""The mail path: classify, decide per recipient, then deliver, drop or hold. Typed results only."""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from proxy.audit import Audit
from proxy.bulk.gate import gate
from proxy.classify import classify
from proxy.clock import Clock
from proxy.errors import StateUnavailable
from proxy.finish import Finisher, PreparedMessage
from proxy.logs import FULL, LoggedAddress
from proxy.message import Message
from proxy.metrics import Metrics
from proxy.policy import Policy, Stream, decide
from proxy.policy_store import PolicyStore
from proxy.providers.guard import ProviderGuard
from proxy.queue import DelayQueue, HeldMail
from proxy.recorder import NO_INTENT, Delivery, Intent, Recorder
from proxy.relay.copies import Upstream, relay_copies
from proxy.repermission import claim, give_back
from proxy.scheduler import Release, ReleaseOutcome
from proxy.state import State
from proxy.types import Action, Decision, DropMode, Envelope, PersonState

log = logging.getLogger("heed.mailpath")


class LinkStore(Protocol):
    async def store(self, destinations: Mapping[str, str]) -> None: ...


class Verdict(enum.Enum):
    ACCEPTED = "accepted"  # every recipient delivered, held durably, or dropped by policy
    TEMPFAIL = "tempfail"  # nothing is lost: the client must try again
    REJECTED = "rejected"  # permanent: nobody will get this message


@dataclass(frozen=True)
class RecipientResult:
    recipient: str
    decision: Decision
    status: str  # delivered | queued | discarded | rejected | refused-upstream | failed-upstream
    detail: str = ""


@dataclass(frozen=True)
class DataOutcome:
    verdict: Verdict
    results: tuple[RecipientResult, ...] = ()
    detail: str = ""  # for REJECTED/TEMPFAIL: what went wrong, safe to show the client
    code: int | None = None  # the upstream's code when it refused the message


class MailPath:
    """The core pipeline shared by the SMTP edge (RCPT, DATA) and the scheduler (release)."""

    def __init__(
        self,
        *,
        policies: PolicyStore,
        state: State,
        audit: Audit,
        queue: DelayQueue,
        upstream: Upstream,
        finisher: Finisher,
        clock: Clock,
        redis: Any,
        on_failure: str = "tempfail",
        retry_after: float = 60.0,
        metrics: Metrics | None = None,
        verp_ttl: float = 30 * 86400.0,
        shown: LoggedAddress = FULL,
        links: LinkStore | None = None,
        reply_ttl: float = 0,
        offer_ttl: float = 90 * 86400.0,
        providers: ProviderGuard | None = None,
    ) -> None:
        self.policies = policies
        self.state = state
        self.queue = queue
        self.upstream = upstream
        self.finisher = finisher
        self.clock = clock
        self.on_failure = on_failure
        self.retry_after = retry_after
        self.metrics = metrics or Metrics()
        self.links = links  # where tracked links' destinations are kept (proxy/signals/clicks.py)
        self.providers = providers  # hears "slow down" replies; feeds provider_guard rules
        self.record = Recorder(state=state, audit=audit, redis=redis, policies=policies,
                               clock=clock, metrics=self.metrics, verp_ttl=verp_ttl,
                               shown=shown, reply_ttl=reply_ttl,
                               offer_ttl=offer_ttl)

    # --- RCPT ------------------------------------------------------------------
    async def at_rcpt(self, sender: str, recipient: str) -> Decision | None:
        """The decision when the envelope alone names the stream, else None (decide at DATA).

        Raises StateUnavailable when Redis cannot be read for a stream that needs it.
        """
        policy = self.policies.current
        stream = classify(policy, sender, recipient, None)
        if stream is None:
            return None
        if not policy.streams[stream].needs_state:
            return decide(policy, stream, PersonState(address=recipient), self.clock.now())
        with self.metrics.redis_timer("snapshot"):
            snapshot = await self.state.snapshot(recipient, domains=policy.guards_domains)
        snapshot, = await self._with_provider(policy, [snapshot])
        return decide(policy, stream, snapshot, self.clock.now())

    async def record_rejection(self, envelope: Envelope, recipient: str, decision: Decision,
                               correlation_id: str) -> None:
        """Audit a recipient refused at RCPT (best effort: the 550 is the record for the client)."""
        await self.record.rejection(envelope, recipient, decision, correlation_id)

    # --- DATA ------------------------------------------------------------------
    async def at_data(self, envelope: Envelope, data: bytes,
                      early: Mapping[str, Decision], correlation_id: str = "") -> DataOutcome:
        """Decide the rest, hold the delayed, deliver the delivered; 250 only if nothing is lost."""
        correlation_id = correlation_id or uuid.uuid4().hex
        message = Message.parse(data)
        policy = self.policies.current
        now = self.clock.now()
        with self.metrics.decision_seconds.time():
            decisions = await self._decide_all(policy, envelope, message, early, now)
        prepared = self.finisher.prepare(message)
        decisions = self._gate(policy, prepared, decisions, now)
        streams = [d.stream for d in decisions.values()]
        message_id = message.message_id or f"<{correlation_id}@heed>"
        decisions, claimed = await claim(self.state, policy, decisions, message_id, now)

        delayed = [r for r, d in decisions.items() if d.action is Action.DELAY]
        dropped = [r for r, d in decisions.items() if d.action is Action.DROP]
        delivering = [r for r, d in decisions.items() if d.action is Action.DELIVER]

        if dropped and not delayed and not delivering and all(
            decisions[r].drop_mode is DropMode.REJECT for r in dropped
        ):
            await self.record.message(envelope, message_id, correlation_id, decisions,
                                      {r: "reject" for r in dropped}, policy)
            self.metrics.message(streams, Verdict.REJECTED.value)
            return DataOutcome(Verdict.REJECTED, detail="no recipient may receive this message")

        targets = [(policy.streams[decisions[r].stream], r) for r in delivering]
        # Tracked links' destinations first, so that no copy names one heed cannot find.
        try:
            await self._store_links(prepared, targets)
        except StateUnavailable:
            await give_back(self.state, claimed, (), message_id)
            raise  # the edge answers 451; nothing was held or sent
        # Hold first: a delayed copy must be durable before anything is answered.
        held = [self._held(envelope.sender, r, decisions[r], data, message_id, now)
                for r in delayed]
        if held:
            await self.queue.put(held)  # StateUnavailable -> the edge answers 451

        delivery, intent = await self._deliver_counted(
            prepared, envelope, message_id, correlation_id,
            {r: decisions[r] for r in delivering}, policy,
            asked={r for r, _ in claimed})
        sent, refused, failed = delivery.sent, delivery.refused, delivery.failed
        await give_back(self.state, claimed, sent, message_id)

        status: dict[str, str] = {r: "queued" for r in delayed}
        status.update({r: "discarded" for r in dropped})
        status.update({r: "delivered" for r in sent})
        status.update({r: "refused-upstream" for r in refused})
        if failed:
            if not sent and self.on_failure == "tempfail":
                # Nothing went out: take back what we held, and let the client retry it all.
                await self._unhold(held)
                await self.record.message(envelope, message_id, correlation_id,
                                          {r: decisions[r] for r in failed},
                                          {r: "tempfail-upstream" for r in failed}, policy,
                                          delivery, intent)
                self.metrics.message(streams, Verdict.TEMPFAIL.value)
                return DataOutcome(Verdict.TEMPFAIL, detail="upstream temporarily unavailable")
            # Some copies went out already: holding the rest avoids duplicates on retry.
            retry = [self._held(envelope.sender, r, decisions[r], data, message_id,
                                now, due=now + self.retry_after, error=failed[r])
                     for r in failed]
            await self.queue.put(retry)
            status.update({r: "queued" for r in failed})

        if refused and not sent and not delayed and not dropped and not failed:
            await self.record.message(envelope, message_id, correlation_id, decisions, status,
                                      policy, delivery, intent)
            code, text = next(iter(refused.values()))
            self.metrics.message(streams, Verdict.REJECTED.value)
            return DataOutcome(Verdict.REJECTED, detail=text, code=code)

        await self.record.message(envelope, message_id, correlation_id, decisions, status,
                                  policy, delivery, intent)
        self.metrics.message(streams, Verdict.ACCEPTED.value)
        results = tuple(
            RecipientResult(r, decisions[r], status[r],
                            refused.get(r, (0, ""))[1] or failed.get(r, ""))
            for r in envelope.recipients if r in decisions
        )
        return DataOutcome(Verdict.ACCEPTED, results)

    async def _decide_all(self, policy: Policy, envelope: Envelope, message: Message,
                          early: Mapping[str, Decision], now: float) -> dict[str, Decision]:
        streams = {r: classify(policy, envelope.sender, r, message) or policy.default_stream
                   for r in envelope.recipients}
        decisions: dict[str, Decision] = {}
        need: list[str] = []
        for r, stream in streams.items():
            if r in early and early[r].stream == stream:
                decisions[r] = early[r]
            elif policy.streams[stream].needs_state:
                need.append(r)
            else:
                decisions[r] = decide(policy, stream, PersonState(address=r), now)
        if need:
            # One round trip for every recipient still undecided.
            with self.metrics.redis_timer("snapshot"):
                snapshots = await self.state.snapshots(need, domains=policy.guards_domains)
            snapshots = await self._with_provider(policy, snapshots)
            for r, snapshot in zip(need, snapshots, strict=True):
                decisions[r] = decide(policy, streams[r], snapshot, now)
        return decisions

    async def _deliver_counted(self, prepared: PreparedMessage, envelope: Envelope,
                               message_id: str, correlation_id: str,
                               decisions: Mapping[str, Decision], policy: Policy,
                               asked: set[str]
                               ) -> tuple[Delivery, Intent]:
        """Relay every copy while their intent is recorded; the answer waits for both."""
        if not decisions:
            return Delivery(), NO_INTENT
        intent = asyncio.ensure_future(
            self.record.intent(envelope, message_id, correlation_id, decisions))
        try:
            delivery = await relay_copies(self.upstream, self.providers, prepared,
                                          envelope.sender,
                                          [(policy.streams[d.stream], r)
                                           for r, d in decisions.items()], asked=asked)
        except BaseException:
            intent.cancel()
            raise
        return delivery, await intent

    async def _store_links(self, prepared: PreparedMessage,
                           targets: Sequence[tuple[Stream, str]]) -> None:
        if self.links is not None and any(s.track_clicks for s, _ in targets):
            destinations = prepared.destinations({s.name: s for s, _ in targets}.values())
            if destinations:  # a body without links stores nothing
                await self.links.store(destinations)

    async def _with_provider(self, policy: Policy,
                             snapshots: list[PersonState]) -> list[PersonState]:
        """Each person's mailbox provider and its recent push-back, for provider_guard rules."""
        if self.providers is None or not policy.guards_providers:
            return snapshots
        return await self.providers.annotate(snapshots)

    @staticmethod
    def _gate(policy: Policy, prepared: PreparedMessage, decisions: Mapping[str, Decision],
              now: float) -> dict[str, Decision]:
        """Hold or reject the marketing copies that break a bulk-sender rule (proxy/bulk/)."""
        return {r: gate(policy.streams[d.stream], d, prepared.facts(policy.streams[d.stream]),
                        now) for r, d in decisions.items()}

    # --- release from the delay queue ---------------------------------------------
    async def release(self, item: HeldMail) -> Release:
        """Re-check a held copy against today's policy and state, then send, drop or hold again."""
        policy = self.policies.current
        message = Message.parse(item.data)
        stream_name = item.stream if item.stream in policy.streams else (
            classify(policy, item.sender, item.recipient, message) or policy.default_stream)
        stream = policy.streams[stream_name]
        now = self.clock.now()
        try:
            with self.metrics.redis_timer("snapshot"):
                snapshot = (await self.state.snapshot(item.recipient,
                                                      domains=policy.guards_domains)
                            if stream.needs_state
                            else PersonState(address=item.recipient))
            snapshot, = await self._with_provider(policy, [snapshot])
            decided, claimed = await claim(self.state, policy, {
                item.recipient: decide(policy, stream_name, snapshot, now)}, item.message_id, now)
        except StateUnavailable as exc:
            return Release(ReleaseOutcome.TEMPFAIL, error=str(exc))
        decision = decided[item.recipient]
        envelope = Envelope(item.sender, (item.recipient,))
        cid = uuid.uuid4().hex
        if decision.action is Action.DROP:
            await self.record.message(envelope, item.message_id, cid, {item.recipient: decision},
                                      {item.recipient: "dropped-at-release"}, policy)
            return Release(ReleaseOutcome.DROPPED)
        prepared = self.finisher.prepare(message)
        decision = gate(stream, decision, prepared.facts(stream), now)
        if decision.action is Action.DROP:  # unsigned: reject
            await self.record.message(envelope, item.message_id, cid, {item.recipient: decision},
                                      {item.recipient: "dropped-at-release"}, policy)
            return Release(ReleaseOutcome.DROPPED)
        if decision.action is Action.DELAY:
            return Release(ReleaseOutcome.DELAYED, until=decision.until)
        try:
            await self._store_links(prepared, [(stream, item.recipient)])
        except StateUnavailable as exc:
            await give_back(self.state, claimed, (), item.message_id)
            return Release(ReleaseOutcome.TEMPFAIL, error=str(exc))
        delivery, intent = await self._deliver_counted(
            prepared, envelope, item.message_id, cid, {item.recipient: decision}, policy,
            asked={r for r, _ in claimed})
        # Done as soon as the upstream took it: a kill from here on repeats no copy.
        settled = bool(delivery.sent) and await self._done_at_once(item)
        await give_back(self.state, claimed, delivery.sent, item.message_id)
        if delivery.failed:
            await self.record.message(envelope, item.message_id, cid, {item.recipient: decision},
                                      {item.recipient: "tempfail-upstream"}, policy, delivery,
                                      intent)
            return Release(ReleaseOutcome.TEMPFAIL, error=delivery.failed[item.recipient])
        status = "released" if delivery.sent else "refused-upstream"
        await self.record.message(envelope, item.message_id, cid, {item.recipient: decision},
                                  {item.recipient: status}, policy, delivery, intent)
        if delivery.refused:
            code, text = delivery.refused[item.recipient]
            return Release(ReleaseOutcome.PERMFAIL, error=f"{code} {text}")
        return Release(ReleaseOutcome.DELIVERED, settled=settled)

    async def _done_at_once(self, item: HeldMail) -> bool:
        """Mark a sent held copy done (fenced by its claim); False leaves it to the scheduler."""
        try:
            if not await self.queue.done(item.id, item.claim):
                log.warning("held copy %s was sent after its lease was lost", item.id)
            return True
        except StateUnavailable:
            return False

    async def expired(self, item: HeldMail, why: str) -> None:
        """Audit a held copy given up after the maximum hold."""
        await self.record.queue_end(item, "expired", why)

    async def failed_permanently(self, item: HeldMail, why: str) -> None:
        """Audit a held copy the upstream refused for good."""
        await self.record.queue_end(item, "failed", why)

    # --- helpers ------------------------------------------------------------------
    def _held(self, sender: str, recipient: str, decision: Decision, data: bytes,
              message_id: str, now: float, *, due: float | None = None,
              error: str = "") -> HeldMail:
        return HeldMail(
            id=uuid.uuid4().hex, sender=sender, recipient=recipient, stream=decision.stream,
            data=data, due=due if due is not None else (decision.until or now), first_queued=now,
            reasons=tuple(str(r) for r in decision.reasons), message_id=message_id,
            last_error=error,
        )

    async def _unhold(self, held: Sequence[HeldMail]) -> None:
        for item in held:
            try:
                await self.queue.done(item.id)
            except StateUnavailable:
                log.error("could not take back held copy %s after tempfail", item.id)


def reply_reason(decision: Decision) -> str:
    """The short reason shown to the client in a 550 (codes only: no personal data)."""
    codes = sorted({r.code for r in decision.reasons}) or ["policy"]
    return ", ".join(codes)


__all__ = ["DataOutcome", "MailPath", "RecipientResult", "Verdict", "reply_reason"]
