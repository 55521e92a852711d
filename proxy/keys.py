"""Every Redis key heed uses is built here, and nowhere else.

Keys of one person share the hash tag ``{address}`` so that one pipeline or
script touches one Redis Cluster slot. The delay queue's keys share the tag
``{queue}`` so its claim script is atomic on one slot.

Which Redis holds a key, when a durable Redis is split off (embedded default, or
``redis.durable_url``; docs/architecture.md "Durable and serving Redis"): the delay
queue's keys (``queue_*``) live on the durable Redis only; the keys ``is_durable``
names (consent, refusal, prefs, suppressed, erasures) and ``durable_seq`` on both,
written there first (proxy/durable/mirror.py), read from the serving Redis; every
other key (``serving_run`` too) on the serving Redis only. Without a split, all on the one Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

# Domain separation for the suppression digest (see suppression_id).
_SUPPRESSION_CONTEXT = b"heed-suppression-v1\x00"

# Fields of the engagement hash named after an engagement kind or a stream (see
# Keys.engagement); kept in the person's one hash so a snapshot still reads it with HGETALL.
ENGAGED_AT = "at:"  # at:<kind> -> time of the latest engagement of that kind
ENGAGED_MARK = "n:"  # n:<kind> -> total_sends before that engagement (sends since = the difference)
REPERMISSION = "repermission:"  # repermission:<stream> -> "time|message-id" of the one re-ask


def domain_of(address: str) -> str:
    """The receiving domain of an address (after the last @), lower case."""
    return normalise_address(address).rpartition("@")[2]


def normalise_address(address: str) -> str:
    """The form an address is stored under: trimmed, without <>, lower case.

    Local parts are case-sensitive in theory (RFC 5321 §2.4) but no mailbox
    provider treats them so; one person must not escape a refusal by case.
    """
    return address.strip().strip("<>").strip().lower()


def suppression_id(secret: bytes, address: str) -> str:
    """The member of the suppression set for an erased address: HMAC-SHA256, hex.

    Keyed with a server secret, so the set is not a lookup table: without the
    secret nobody can test a list of known addresses against it.
    """
    message = _SUPPRESSION_CONTEXT + normalise_address(address).encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


# One @, no whitespace, no control characters (CR LF would smuggle SMTP commands), a dotted domain.
_ADDRESS = re.compile(r"^[^\s@<>\x00-\x1f\x7f]+@[^\s@<>\x00-\x1f\x7f]+\.[^\s@<>\x00-\x1f\x7f]+$")


def is_address(text: str) -> bool:
    """One @, a dotted domain, no whitespace or control characters."""
    return bool(_ADDRESS.match(text))


@dataclass(frozen=True)
class Keys:
    prefix: str = "heed"

    # --- one person (hash tag = the address) ---------------------------------
    def _person(self, address: str, part: str) -> str:
        return f"{self.prefix}:p:{{{normalise_address(address)}}}:{part}"

    def consent(self, address: str) -> str:
        """HASH list -> JSON consent record (active, or revoked with proof)."""
        return self._person(address, "consent")

    def refusal(self, address: str) -> str:
        """HASH scope ("*" or list) -> JSON refusal record."""
        return self._person(address, "refusal")

    def engagement(self, address: str) -> str:
        """HASH last_engaged, sends_since, first_send, total_sends, last_kind + the fields below."""
        return self._person(address, "engage")

    @staticmethod
    def engaged_at(kind: str) -> str:
        return ENGAGED_AT + kind

    @staticmethod
    def engaged_mark(kind: str) -> str:
        return ENGAGED_MARK + kind

    @staticmethod
    def repermission(stream: str) -> str:
        return REPERMISSION + stream

    def sends(self, address: str) -> str:
        """ZSET of "stream|send-id" scored by send time, for frequency caps (all streams)."""
        return self._person(address, "sends")

    def prefs(self, address: str) -> str:
        """HASH of the person's own choices (pause, zone, off, frequency)."""
        return self._person(address, "prefs")

    def soft_bounces(self, address: str) -> str:
        """ZSET of soft bounces (member: event id) scored by time, for the soft-bounce limit."""
        return self._person(address, "softb")

    def person_audit(self, address: str) -> str:
        """STREAM of this person's recent decisions and changes (capped), for explain."""
        return self._person(address, "audit")

    def clicks(self, address: str) -> str:
        """HASH copy id -> "time|link id|machine reason" of the copy's last tracked request
        (with a TTL): tells a scanner's sweep of one copy from a person's click."""
        return self._person(address, "clicks")
    def tool_offers(self, address: str) -> str:
        """HASH list -> JSON of what the tool's own List-Unsubscribe offered (with a TTL).

        Kept from copies heed relayed to this person (proxy/tell/offer.py); renewed by
        each copy, gone ``tell.offer_ttl`` after the last one, like the VERP mapping."""
        return self._person(address, "offers")

    def tool_told(self, address: str) -> str:
        """HASH of what the tool heard of this person (proxy/tell/): link:<digest> -> time
        asked (one request per link), list:<list> -> status, stage:<stream> -> stage."""
        return self._person(address, "told")

    @property
    def tell_lifecycle_lock(self) -> str:
        """STRING with a TTL: one worker's lifecycle pass for this period (proxy/tell/)."""
        return f"{self.prefix}:{{tell}}:lifecycle"

    def person_keys(self, address: str) -> tuple[str, ...]:
        """Every key of one person: erasure deletes these (add each new person key here)."""
        return (self.consent(address), self.refusal(address), self.engagement(address),
                self.sends(address), self.prefs(address), self.soft_bounces(address),
                self.person_audit(address), self.clicks(address), self.tool_offers(address),
                self.tool_told(address))

    _DURABLE_PARTS = (":consent", ":refusal", ":prefs")

    def is_durable(self, key: str) -> bool:
        """A key a reply promises is on disk: consent, refusals, the person's own choices,
        erasures. Written to the durable Redis first when there is one (proxy/durable/)."""
        if key.startswith(f"{self.prefix}:p:"):
            return key.endswith(self._DURABLE_PARTS)
        return key in (self.suppressed, self.erasures)

    @property
    def durable_seq(self) -> str:
        """STRING count of durable changes, on both Redis: unequal after a start when the
        serving Redis lost some (then it is restored from the durable one)."""
        return f"{self.prefix}:durable:seq"

    @property
    def serving_run(self) -> str:
        """STRING run_id of the serving Redis server last brought in step with the durable
        one (proxy/durable/guard.py); serving Redis only."""
        return f"{self.prefix}:durable:serving-run"

    # --- one receiving domain (hash tag = the domain) -------------------------
    def domain_complaints(self, domain: str) -> str:
        """ZSET complaining address -> time of its first complaint, for the domain guard.

        Read in the snapshot pipeline beside the person's keys; in Redis Cluster it
        lives in the domain's slot, so that pipeline touches two slots (not a script).
        """
        return f"{self.prefix}:d:{{{domain.strip().lower()}}}:complaints"

    # --- one mailbox provider -------------------------------------------------
    def provider_throttle(self, provider: str) -> str:
        """ZSET "time|cause" -> time: the provider's throttling and reputation replies,
        for the provider guard (proxy/providers/guard.py); the last 31 days."""
        return f"{self.prefix}:prov:{{{provider}}}:throttle"

    # --- global --------------------------------------------------------------
    @property
    def audit(self) -> str:
        """STREAM of every decision (the audit trail)."""
        return f"{self.prefix}:audit"

    @property
    def unread(self) -> str:
        """STREAM of reports accepted with no event, kept for an operator (signals/unread.py)."""
        return f"{self.prefix}:unread"

    @property
    def people(self) -> str:
        """SET of known addresses (for reports and lookups)."""
        return f"{self.prefix}:people"

    @property
    def suppressed(self) -> str:
        """SET of suppression_id() digests of erased addresses: no marketing, ever."""
        return f"{self.prefix}:suppressed"

    @property
    def erasures(self) -> str:
        """ZSET suppression_id() digest -> time of the erasure (for the suppression export)."""
        return f"{self.prefix}:erasures"

    def verp(self, token: str) -> str:
        """STRING "address\\nlist" of a VERP token (bounce+TOKEN@), with a TTL.

        Not under the person's hash tag: a bounce knows only the token. Erasure finds
        it by computing the person's tokens (TokenSigner.verp_all)."""
        return f"{self.prefix}:verp:{{{token.lower()}}}"

    def link(self, link_id: str) -> str:
        """STRING destination URL of a tracked link, under its content-derived id, with a TTL.

        Shared by every copy that links there; holds no personal data."""
        return f"{self.prefix}:link:{link_id}"

    def sent_copy(self, digest: str) -> str:
        """HASH suppression_id(recipient) -> stream of the copies of one Message-ID (``digest``
        of it), with a TTL: a reply is matched to the copy it answers (proxy/signals/replies.py).
        Keyed digests, not addresses: nothing here names a person once they are erased."""
        return f"{self.prefix}:sent:{{{digest}}}"

    def webhook_nonce(self, service: str, token: str) -> str:
        """STRING with a TTL: a webhook token already used (replay protection)."""
        return f"{self.prefix}:nonce:{service}:{token}"

    # --- delay queue (hash tag = queue) ---------------------------------------
    @property
    def queue_due(self) -> str:
        """ZSET held-mail id -> due time."""
        return f"{self.prefix}:{{queue}}:due"

    @property
    def queue_claimed(self) -> str:
        """ZSET held-mail id -> lease expiry, for ids a worker has claimed."""
        return f"{self.prefix}:{{queue}}:claimed"

    @property
    def queue_claims(self) -> str:
        """HASH held-mail id -> fencing token of the claim that holds it (one per claim)."""
        return f"{self.prefix}:{{queue}}:claims"

    def queue_item(self, item_id: str) -> str:
        """HASH of one held copy: envelope, data, attempts, reasons."""
        return f"{self.prefix}:{{queue}}:item:{item_id}"

    # --- telling the tool (hash tag = tell) -------------------------------------
    @property
    def tell_outbox(self) -> str:
        """STREAM of changes to whether a person may be mailed, written with the change."""
        return f"{self.prefix}:{{tell}}:outbox"

    @property
    def tell_due(self) -> str:
        """ZSET outbound job id -> due time (sync-back requests and webhooks)."""
        return f"{self.prefix}:{{tell}}:due"

    @property
    def tell_claimed(self) -> str:
        """ZSET outbound job id -> lease expiry, for jobs a worker is sending."""
        return f"{self.prefix}:{{tell}}:claimed"

    @property
    def tell_claims(self) -> str:
        """HASH outbound job id -> fencing token of the claim that holds it (one per claim)."""
        return f"{self.prefix}:{{tell}}:claims"

    @property
    def tell_dead(self) -> str:
        """ZSET outbound job id -> time it was given up (the dead-letter list)."""
        return f"{self.prefix}:{{tell}}:dead"

    @property
    def tell_stats(self) -> str:
        """HASH "kind:state" -> count (created, sent, failed attempts, dead) for /metrics."""
        return f"{self.prefix}:{{tell}}:stats"

    def tell_job(self, job_id: str) -> str:
        """HASH of one outbound job; kept a while after it is done, so it is made once."""
        return f"{self.prefix}:{{tell}}:job:{job_id}"

    # --- the tell worker's lifecycle pass (proxy/tell/worker.py) -------------------------
    @property
    def tell_lifecycle_last(self) -> str:
        """STRING: when the last complete lifecycle pass began (a restart waits out its period)."""
        return f"{self.prefix}:{{tell}}:lifecycle:last"
