"""The core's vocabulary: typed facts in, typed decisions out (no reply strings here)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Action(enum.Enum):
    DELIVER = "deliver"
    DROP = "drop"
    DELAY = "delay"


class DropMode(enum.Enum):
    """What "drop" means for a stream."""

    REJECT = "reject"  # 550 5.7.1 at RCPT when decidable from the envelope
    DISCARD = "discard"  # accept, record, do not send


@dataclass(frozen=True)
class Reason:
    """Why a rule matched: ``code`` is stable (metrics, reports); ``detail`` is for people."""

    code: str
    detail: str

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


@dataclass(frozen=True)
class Decision:
    """The outcome for one recipient of one message."""

    action: Action
    stream: str
    reasons: tuple[Reason, ...]
    until: float | None = None  # epoch seconds; set when action is DELAY
    drop_mode: DropMode | None = None  # set when action is DROP
    shadow: bool = False  # decided in shadow mode: recorded, not enforced
    repermission: bool = False  # delivering it spends the person's one re-ask (docs/policy.md)

    @property
    def rejects_at_rcpt(self) -> bool:
        return self.action is Action.DROP and self.drop_mode is DropMode.REJECT

    def describe(self) -> str:
        why = "; ".join(str(r) for r in self.reasons) or "no rule matched"
        return f"{self.action.value} ({self.stream}): {why}"


# Refusal kinds recorded in state; the policy names which ones stop a stream.
REFUSAL_KINDS = ("unsubscribe", "complaint", "bounce", "manual")
# Engagement kinds recorded in state; the policy names which ones count against silence.
ENGAGEMENT_KINDS = ("open", "click", "reply", "preference-visit", "manual")
# The languages of the person's pages; a marketing stream's label should exist in each.
LANGUAGES = ("en", "vi", "ar", "th")
GLOBAL_SCOPE = "*"  # a refusal of every marketing list, not just one


@dataclass(frozen=True)
class Consent:
    """Proof that a person said yes to a list."""

    list: str
    granted_at: float
    source: str = ""
    ip: str = ""
    text: str = ""  # the consent wording or its version


@dataclass(frozen=True)
class Refusal:
    """A person's no: for one list or (scope ``*``) for all marketing."""

    scope: str
    kind: str
    at: float
    channel: str = ""  # one-click, mailto, cli, api, dsn, arf …


@dataclass(frozen=True)
class Preferences:
    """What the person chose for themselves."""

    paused_until: float | None = None
    timezone: str | None = None  # IANA name, for quiet hours in the recipient's zone
    off: frozenset[str] = frozenset()  # lists or streams switched off
    frequency: str | None = None  # None (as sent) | "weekly" | "monthly"


@dataclass(frozen=True)
class Engagement:
    """The person's latest engagement of one kind, and how many mails we sent since."""

    kind: str
    at: float
    sends_since: int = 0


@dataclass(frozen=True)
class PersonState:
    """Everything the policy engine may read about one address, fetched in one round trip."""

    address: str
    consents: Mapping[str, Consent] = field(default_factory=dict)  # list -> active consent
    refusals: Mapping[str, Refusal] = field(default_factory=dict)  # scope -> refusal
    last_engaged: float | None = None  # any kind, opens included
    sends_since_engagement: int = 0  # since the last engagement of any kind
    first_send: float | None = None
    # stream -> times of recent sends (at least the last 31 days), oldest first
    sends: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    prefs: Preferences = field(default_factory=Preferences)
    suppressed: bool = False  # erased at the person's request: only a hashed "no" is left
    # When people at this address's domain first complained (the last GUARD_LOOKBACK), oldest
    # first: the domain guard's input, read in the same round trip as the rest.
    domain_complaints: tuple[float, ...] = ()
    engagement: Mapping[str, Engagement] = field(default_factory=dict)  # kind -> latest
    total_sends: int = 0  # every marketing copy delivered, ever
    repermission: Mapping[str, float] = field(default_factory=dict)  # stream -> when it went
    # The recipient's mailbox provider ("" when not one heed groups, or none is pushing back)
    # and that provider's recent throttling, (time, cause) oldest first: the provider guard's input.
    provider: str = ""
    provider_throttles: tuple[tuple[float, str], ...] = ()

    def engaged(self, kinds: frozenset[str] | tuple[str, ...]) -> tuple[float | None, int]:
        """(last engagement of one of ``kinds``, mails sent since it): what silence counts.

        A state without per-kind records (built by hand, or nothing recorded yet) has
        only the any-kind fields, and they count.
        """
        if not self.engagement:
            return self.last_engaged, self.sends_since_engagement
        counted = [e for e in self.engagement.values() if e.kind in kinds]
        if not counted:
            return None, max(self.total_sends, self.sends_since_engagement)
        latest = max(counted, key=lambda e: e.at)
        return latest.at, latest.sends_since


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope as the client gave it."""

    sender: str  # "" for the null reverse-path <>
    recipients: tuple[str, ...]
    client_ip: str = ""
    authenticated_as: str | None = None


class Headers(Protocol):
    """Read access to a message's header block (parsed once, see proxy/message.py)."""

    def get_all(self, name: str) -> list[str]:
        """Unfolded values of every header field called ``name`` (case-insensitive)."""
        ...
