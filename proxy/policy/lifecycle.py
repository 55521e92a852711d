"""Lifecycle stages from silence: thresholds, which engagement counts, and re-permission."""

from __future__ import annotations

import time
from dataclasses import dataclass

from proxy.types import ENGAGEMENT_KINDS, PersonState

DAY = 86400.0
# Lifecycle stages, warmest first. Silence thresholds decide lapsing and inactive;
# "loyal" is recent engagement, "active" everyone else.
STAGES = ("loyal", "active", "lapsing", "inactive")
# Opens are weak evidence: image proxies (Apple Mail Privacy Protection fetches every
# image on delivery) and link scanners "open" mail nobody read. A policy may count them.
# Machine clicks are link scanners' requests: never a person's answer by default.
COUNTED = frozenset(ENGAGEMENT_KINDS) - {"open", "machine-click"}


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


@dataclass(frozen=True)
class Threshold:
    """Silence that puts a person in a stage: N unanswered sends, or days of silence."""

    sends: int | None = None  # sends since the last engagement
    or_days: float | None = None  # days since last engagement (or first send)...
    min_sends: int = 1  # ...but only once we wrote at least this often: our silence is not theirs

    def reached(self, sends: int, days: float) -> bool:
        if self.sends is not None and sends >= self.sends:
            return True
        return self.or_days is not None and days >= self.or_days and sends >= self.min_sends

    def describe(self) -> str:
        parts = [f"{self.sends} mails unanswered"] if self.sends is not None else []
        if self.or_days is not None:
            parts.append(f"{self.or_days:g} days silent after at least {self.min_sends} mails")
        return " or ".join(parts)


@dataclass(frozen=True)
class Assessment:
    """A person's stage under one stream's thresholds, with the facts it rests on."""

    stage: str
    last_engaged: float | None  # the last engagement of a kind that counts
    sends_since: int  # mails sent since then (since the start when never)
    days: float  # days of silence: since last_engaged, or since the first mail

    def describe(self) -> str:
        engaged = f"last engaged {_when(self.last_engaged)}" if self.last_engaged else (
            "never engaged")
        return f"{self.stage}: {self.sends_since} sends since engagement, {engaged}"


@dataclass(frozen=True)
class Silence:
    """A stream's lifecycle thresholds (``silence:`` in the file)."""

    lapsing: Threshold | None = None
    inactive: Threshold | None = None
    loyal_days: float = 14.0  # engaged this recently (and not silent) -> loyal
    engagement: frozenset[str] = COUNTED  # the event kinds that break silence

    def assess(self, state: PersonState, now: float) -> Assessment:
        """The stage for this person now, counting only this stream's engagement kinds."""
        last, sends = state.engaged(self.engagement)
        since = last if last is not None else state.first_send
        days = max(0.0, (now - since) / DAY) if since is not None else 0.0
        if self.inactive is not None and self.inactive.reached(sends, days):
            stage = "inactive"
        elif self.lapsing is not None and self.lapsing.reached(sends, days):
            stage = "lapsing"
        elif last is not None and now - last <= self.loyal_days * DAY:
            stage = "loyal"
        else:
            stage = "active"
        return Assessment(stage, last, sends, days)

    def stage(self, state: PersonState, now: float) -> str:
        """loyal, active, lapsing or inactive for this person now."""
        return self.assess(state, now).stage

    def can_reach(self, stage: str) -> bool:
        """False for a stage these thresholds never produce (a rule on it would never apply)."""
        return getattr(self, stage, True) is not None if stage in STAGES else False

    def describe(self) -> str:
        """The thresholds in words, for `heed explain`."""
        parts = [f"{name} at {t.describe()}" for name, t in
                 (("lapsing", self.lapsing), ("inactive", self.inactive)) if t is not None]
        parts.append(f"loyal when engaged within {self.loyal_days:g} days")
        parts.append(f"engagement counted: {', '.join(sorted(self.engagement))}")
        return "; ".join(parts)


def repermission_due(silence: Silence, stream: str, state: PersonState, now: float) -> bool:
    """True while an inactive person has not been re-asked since they last engaged."""
    assessed = silence.assess(state, now)
    if assessed.stage != "inactive":
        return False
    asked = state.repermission.get(stream)
    return asked is None or (assessed.last_engaged is not None and asked < assessed.last_engaged)
