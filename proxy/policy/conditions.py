"""The named conditions a rule can test; each says why it matched, or has no opinion (None)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from proxy.policy.lifecycle import Assessment, repermission_due
from proxy.policy.model import DAY, STAGES, Stream
from proxy.settings import parse_duration
from proxy.types import GLOBAL_SCOPE, REFUSAL_KINDS, PersonState, Reason


@dataclass(frozen=True)
class Match:
    """A condition's opinion: why, and (for conditions that hold mail) when it may go."""

    reason: Reason
    until: float | None = None


@dataclass
class Context:
    """What a condition may read: the stream, the person's state, the time."""

    stream: Stream
    state: PersonState
    now: float
    # Set by a `lifecycle` rule that let this message pass as the re-permission message:
    # if the walk ends in deliver, delivering it spends the person's one re-ask.
    repermission: Reason | None = None
    # Worked out on first use, then kept. Not functools.cached_property: that takes a
    # lock on every first read (Python 3.11), and a context lives for one decision.
    _assessment: Assessment | None = field(default=None, init=False, repr=False,
                                           compare=False)

    @property
    def assessment(self) -> Assessment:
        if self._assessment is None:
            self._assessment = self.stream.silence.assess(self.state, self.now)
        return self._assessment

    @property
    def stage(self) -> str:
        return self.assessment.stage


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


# --- parameter converters: raise ValueError with a message for people ----------------


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number of at least 1, got {value!r}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _names(allowed: tuple[str, ...], what: str) -> Callable[[Any], frozenset[str]]:
    def convert(value: Any) -> frozenset[str]:
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise ValueError(f"unknown {what} {bad or items!r}; expected {', '.join(allowed)}")
        return frozenset(items)

    return convert


def _clock_time(value: Any) -> tuple[int, int]:
    text = str(value)
    hh, colon, mm = text.partition(":")
    if colon and hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60 and len(mm) == 2:
        return int(hh), int(mm)
    raise ValueError(f"expected a time like \"21:00\", got {value!r}")


def zone(value: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r} (expected an IANA name)") from None


def _stream_names(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"expected a stream name or a list of them, got {value!r}")
    return tuple(items)


# --- the conditions ------------------------------------------------------------------


class Condition:
    """A named test of a person's state; ``params`` convert the rule's keys to fields."""

    name: ClassVar[str]
    description: ClassVar[str]
    params: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}
    required: ClassVar[frozenset[str]] = frozenset()
    releases: ClassVar[bool] = False  # says when held mail may go, so `then: delay` works

    def check(self, ctx: Context) -> Match | None:
        raise NotImplementedError

    def problems(self, stream: Stream, streams: Mapping[str, Stream]) -> list[str]:
        """Reasons this rule can never work on ``stream`` (reported at load time)."""
        return []


@dataclass(frozen=True)
class Refused(Condition):
    name = "refused"
    description = "the person said no to this stream's list, or to all marketing"
    params = {"kinds": _names(REFUSAL_KINDS, "refusal kind")}
    kinds: frozenset[str] = frozenset(REFUSAL_KINDS)

    def check(self, ctx: Context) -> Match | None:
        for scope in (ctx.stream.list, GLOBAL_SCOPE):
            refusal = ctx.state.refusals.get(scope)
            if refusal is not None and refusal.kind in self.kinds:
                what = "all marketing" if scope == GLOBAL_SCOPE else f"list {scope!r}"
                via = f" via {refusal.channel}" if refusal.channel else ""
                detail = f"{refusal.kind} from {what} on {when(refusal.at)}{via}"
                return Match(Reason(self.name, detail))
        return None


@dataclass(frozen=True)
class NoConsent(Condition):
    name = "no_consent"
    description = "the stream needs consent and there is no active consent for its list"

    def check(self, ctx: Context) -> Match | None:
        if ctx.stream.consent_required and ctx.stream.list not in ctx.state.consents:
            return Match(Reason(self.name, f"no consent on record for list {ctx.stream.list!r}"))
        return None

    def problems(self, stream: Stream, streams: Mapping[str, Stream]) -> list[str]:
        if stream.consent_required:
            return []
        return ["no_consent never matches on a stream with `consent: not_required`"]


@dataclass(frozen=True)
class Lifecycle(Condition):
    name = "lifecycle"
    description = "the person is in one of the given lifecycle stages (from silence thresholds)"
    params = {"stage": _names(STAGES, "stage"), "repermission": _flag}
    required = frozenset({"stage"})
    stage: frozenset[str] = frozenset()
    # Except once: the first message after someone turns inactive passes (the rules after
    # this one still apply), to ask whether they still want this mail. See docs/policy.md.
    repermission: bool = False

    def check(self, ctx: Context) -> Match | None:
        if ctx.stage not in self.stage:
            return None
        detail = ctx.assessment.describe()
        if self.repermission and repermission_due(ctx.stream.silence, ctx.stream.name,
                                                  ctx.state, ctx.now):
            ctx.repermission = Reason("repermission", f"{detail}; the one message that asks "
                                                      "whether they still want this mail")
            return None
        return Match(Reason(self.name, detail))

    def problems(self, stream: Stream, streams: Mapping[str, Stream]) -> list[str]:
        if self.repermission and "inactive" not in self.stage:
            return ["repermission lets one message through to inactive people: the rule's "
                    "stage must include inactive"]
        return []


# The person's own pace from the preference centre: (limit, window in days).
FREQUENCIES = {"weekly": (1, 7.0), "monthly": (1, 30.0)}


@dataclass(frozen=True)
class Cap(Condition):
    name = "cap"
    description = "the stream (or the person's chosen pace) already sent enough in a window"
    params = {"per_day": _count, "per_week": _count, "per_month": _count,
              "streams": _stream_names}
    releases = True
    per_day: int | None = None
    per_week: int | None = None
    per_month: int | None = None  # 30 days: state keeps at least 31 days of sends
    streams: tuple[str, ...] = ()  # count sends of these streams; () -> this stream

    def check(self, ctx: Context) -> Match | None:
        names = self.streams or (ctx.stream.name,)
        sends = sorted(t for n in names for t in ctx.state.sends.get(n, ()))
        if not sends:  # every limit is at least 1: nothing sent, nothing to hold
            return None
        limits = ((self.per_day, 1.0, "day"), (self.per_week, 7.0, "week"),
                  (self.per_month, 30.0, "month"))
        windows = [(n, d, "cap", w) for n, d, w in limits if n is not None]
        if ctx.state.prefs.frequency in FREQUENCIES:
            limit, days = FREQUENCIES[ctx.state.prefs.frequency]
            windows.append((limit, days, "frequency", ""))
        worst: Match | None = None
        for limit, days, code, per in windows:
            recent = [t for t in sends if t > ctx.now - days * DAY]
            if len(recent) < limit:
                continue
            # Free again once enough of the window's oldest sends have left it.
            release = recent[len(recent) - limit] + days * DAY
            if worst is None or worst.until is None or release > worst.until:
                # Words only for a window that holds the mail (most calls hold none).
                label = (f"per {per}" if per else
                         f"({ctx.state.prefs.frequency}, the person's choice)")
                detail = f"{len(recent)} sent in {days:g}d, limit {limit} {label}"
                worst = Match(Reason(code, detail), release)
        return worst

    def problems(self, stream: Stream, streams: Mapping[str, Stream]) -> list[str]:
        out = [f"unknown stream {n!r}" for n in self.streams if n not in streams]
        if self.per_day is self.per_week is self.per_month is None:
            out.append("cap needs per_day, per_week or per_month")
        return out


@dataclass(frozen=True)
class QuietHours(Condition):
    name = "quiet_hours"
    description = "it is night (or any set window) where the person is"
    params = {"start": _clock_time, "end": _clock_time, "zone": zone,
              "recipient_zone": _flag}
    required = frozenset({"start", "end"})
    releases = True
    start: tuple[int, int] = (21, 0)
    end: tuple[int, int] = (8, 0)
    zone: ZoneInfo = ZoneInfo("UTC")
    recipient_zone: bool = False  # use the person's own time zone when they gave one

    def _zone(self, ctx: Context) -> ZoneInfo:
        if self.recipient_zone and ctx.state.prefs.timezone:
            try:
                return zone(ctx.state.prefs.timezone)
            except ValueError:
                pass  # a zone we do not know: the stream's zone is the next best guess
        return self.zone

    def check(self, ctx: Context) -> Match | None:
        tz = self._zone(ctx)
        local = datetime.fromtimestamp(ctx.now, tz)
        minute = local.hour * 60 + local.minute
        start, end = _minutes(self.start), _minutes(self.end)
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return None
        # The next wall-clock `end` in that zone; zoneinfo applies the day's own UTC offset (DST).
        day = local.date() if minute < end else local.date() + timedelta(days=1)
        release = _at(day, self.end, tz)
        window = f"{self.start[0]:02}:{self.start[1]:02}-{self.end[0]:02}:{self.end[1]:02}"
        detail = f"{local:%H:%M} in {tz.key} is inside quiet hours {window}"
        return Match(Reason(self.name, detail), release)

    def problems(self, stream: Stream, streams: Mapping[str, Stream]) -> list[str]:
        return ["quiet hours start and end at the same time"] if self.start == self.end else []


def _minutes(hm: tuple[int, int]) -> int:
    return hm[0] * 60 + hm[1]


def _at(day: date, hm: tuple[int, int], tz: ZoneInfo) -> float:
    return datetime(day.year, day.month, day.day, hm[0], hm[1], tzinfo=tz).timestamp()


@dataclass(frozen=True)
class Paused(Condition):
    name = "paused"
    description = "the person paused this mail until a date (preference centre)"
    releases = True

    def check(self, ctx: Context) -> Match | None:
        until = ctx.state.prefs.paused_until
        if until is None or until <= ctx.now:
            return None
        return Match(Reason(self.name, f"paused by the person until {when(until)}"), until)


@dataclass(frozen=True)
class OptedOut(Condition):
    name = "opted_out"
    description = "the person switched this stream (or its list) off in the preference centre"

    def check(self, ctx: Context) -> Match | None:
        off = ctx.state.prefs.off
        for name in (ctx.stream.name, ctx.stream.list):
            if name in off:
                return Match(Reason(self.name, f"{name!r} switched off by the person"))
        return None


# The domain guard looks back at most this far (window and pause each); state keeps
# a domain's complaints for GUARD_LOOKBACK (proxy/state.py), which covers both.
GUARD_MAX_DAYS = 31


def _guard_span(value: Any) -> float:
    seconds = parse_duration(value)
    if not 0 < seconds <= GUARD_MAX_DAYS * DAY:
        raise ValueError(f"expected a duration between 1s and {GUARD_MAX_DAYS}d, got {value!r}")
    return seconds


@dataclass(frozen=True)
class DomainGuard(Condition):
    name = "domain_guard"
    description = ("people at the recipient's domain complained `complaints` times within "
                   "`window`: marketing to the domain pauses for `pause`")
    params = {"complaints": _count, "window": _guard_span, "pause": _guard_span}
    required = frozenset({"complaints", "window", "pause"})
    releases = True
    complaints: int = 3
    window: float = DAY
    pause: float = 2 * DAY

    def check(self, ctx: Context) -> Match | None:
        times = [t for t in ctx.state.domain_complaints if t <= ctx.now]
        n = self.complaints
        until = None
        for i in range(n - 1, len(times)):
            # The i-th complaint completes n within the window: the pause runs from it.
            if times[i] - times[i - n + 1] <= self.window:
                until = times[i] + self.pause
        if until is None or until <= ctx.now:
            return None
        domain = ctx.state.address.rpartition("@")[2]
        detail = (f"{n} or more complaints from people at {domain} within "
                  f"{self.window / 3600:g}h; marketing to {domain} paused until {when(until)}")
        return Match(Reason(self.name, detail), until)


@dataclass(frozen=True)
class ProviderGuard(Condition):
    name = "provider_guard"
    description = ("the recipient's mailbox provider (Google, Yahoo/AOL, Microsoft, …) sent a "
                   "throttling or reputation code: marketing to it pauses for `pause`, "
                   "doubling on each new push-back up to `max_pause`")
    params = {"pause": _guard_span, "max_pause": _guard_span, "window": _guard_span}
    required = frozenset({"pause"})
    releases = True
    pause: float = 3600.0
    max_pause: float = DAY
    # A push-back more than `window` after the last pause ended starts again at `pause`.
    window: float = DAY

    def check(self, ctx: Context) -> Match | None:
        until, cause, strikes = None, "", 0
        for at, why in ctx.state.provider_throttles:
            if at > ctx.now or (until is not None and at < until):
                continue  # a reply to mail sent before the pause began: the same episode
            if until is not None and at - until > self.window:
                strikes = 0
            strikes += 1
            until = at + min(self.pause * 2 ** (strikes - 1), max(self.max_pause, self.pause))
            cause = why
        if until is None or until <= ctx.now:
            return None
        detail = (f"{ctx.state.provider} pushed back ({cause}); marketing to it paused until "
                  f"{when(until)} (pause {strikes} in a row)")
        return Match(Reason(self.name, detail), until)


CONDITIONS: Mapping[str, type[Condition]] = {
    c.name: c for c in (Refused, NoConsent, Lifecycle, Cap, QuietHours, Paused, OptedOut,
                        DomainGuard, ProviderGuard)
}
