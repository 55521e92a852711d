"""The audit trail folded into the report's figures, a page of raw entries at a time.

Most of what a decision adds depends only on its outcome, stream, first reason's code,
one-click and body-link fields and its day: those are counted per distinct combination
while the trail is read (a month has a few thousand) and turned into figures once, at the
end. Reasons carry per-person detail (a refusal's time, a local hour), so they are read
down to what a figure uses before they are counted: the combinations stay few. Per entry
only what depends on the person is looked at: the recipient's domain, and for the few
recipients with a refusal, whether a delivery broke it. Refusals and tool-told entries
(a few in a hundred) are read whole. The definitions are compute.py's (docs/report.md).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from proxy.keys import domain_of
from proxy.policy import Policy
from proxy.report.heard import source_of
from proxy.report.trail import ORDER, ordered

if TYPE_CHECKING:
    from proxy.report.compute import Report

DELIVERED = ("delivered", "released")
DROPPED = ("reject", "rejected", "discarded", "dropped-at-release")
DELAYED = ("queued",)
# How many actions leaving takes, by the channel the refusal came through: the mail
# client's button posts once (RFC 8058); a mailto is one send; the link's page is
# open + press, for its list or for all marketing alike; the preference centre is
# only reached from that page (no mail carries its link), so its "leave everything"
# is open the link + "choose what you receive" + press: three.
CLICKS = {"one-click": 1, "mailto": 1, "page": 2, "preference-centre": 3}
_SHADOW = re.compile(r"shadow: would (\w+)\b.*?: ([a-z_][a-z0-9_-]*): ")
DAY = 86400


@dataclass
class Violation:
    address: str
    scope: str
    refused_at: float
    delivered_at: float
    stream: str
    shadow: bool


# Reasons as far as a figure reads them: the first one's code, and for a shadow
# decision what it would have done ("would drop: no_consent"), else None.
Because = tuple[str, str | None]
NO_REASON: Because = ("none", None)
KEPT = 4096  # reasons remembered as read (most repeat; ones with a time in them do not)


class _Plan(NamedTuple):
    """What a decision with these fields adds, whoever it went to."""

    outcome: str
    stream: str
    code: str  # the first reason's code, "none" without one
    would: str | None  # a shadow decision's would-be action, else None
    scope: str  # the list a refusal of which it breaks
    one_click: str
    body_link: str
    delivered: bool  # a marketing copy that went out
    guard: str | None  # how the domain guard counts it, None when it did not decide


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _reasons(raw: bytes) -> tuple[str, ...]:
    if raw in (b"[]", b""):  # most entries: no JSON parse for them
        return ()
    text = _text(raw)
    try:
        return tuple(str(r) for r in json.loads(text))
    except (ValueError, TypeError):
        return (text,)


def _because(raw: bytes) -> Because:
    """What the figures read of an entry's reasons (the JSON list as recorded)."""
    reasons = _reasons(raw)
    if not reasons:
        return NO_REASON
    code = reasons[0].split(":", 1)[0].strip() or "none"
    if code != "shadow":
        return code, None
    m = _SHADOW.match(reasons[0])
    return code, f"would {m.group(1)}: {m.group(2)}" if m else "would deliver"


@lru_cache(maxsize=512)
def _utc_day(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY))


def _domain_key(recipient: bytes) -> bytes:
    """What the recipient's domain is counted by: from its last "@" on when that is ASCII
    (domain_of gives the same for it as for the whole address), else the whole address."""
    at = recipient.rfind(b"@")
    tail = recipient[at:]
    return tail if at >= 0 and tail.isascii() else recipient


class Fold:
    """The trail's figures for [since, now], one page at a time (never the trail whole)."""

    def __init__(self, report: Report, policy: Policy, since: float, now: float) -> None:
        self.r = report
        self.policy = policy
        self.since, self.now = since, now
        self.refused: dict[tuple[str, str], float] = {}  # (address, scope) -> first time
        self.last: dict[tuple[str, str], float] = {}  # -> last delivery after it
        self.refusers: set[str] = set()  # addresses in self.refused
        self.complainers: set[str] = set()
        self.plans: dict[tuple[bytes, ...], _Plan] = {}
        # (outcome, stream, reasons, one_click, body_link, day) -> [plan, entries]
        self.decided: dict[tuple[Any, ...], list[Any]] = {}
        self.domains: dict[bytes, int] = {}  # delivered marketing by _domain_key
        self.guarded: dict[tuple[bytes, str], int] = {}
        self.because: dict[bytes, Because] = {}  # reasons as recorded -> as read
        self.sources: dict[bytes, str] = {}  # an engagement's detail -> how it was heard
        self.delivery_days: set[int] = set()

    def page(self, raw: list[Any]) -> None:
        """Fold one XRANGE reply ([id, fields] pairs); entries outside the window skipped."""
        since, now, decided, domains = self.since, self.now, self.decided, self.domains
        refusers, days, because = self.refusers, self.delivery_days, self.because
        n = 0
        for _id, f in raw:
            if type(f) is not list or f[0::2] != ORDER:
                f = ordered(f)
            try:
                at = float(f[1])
            except ValueError:
                at = 0.0
            if not since <= at <= now:
                continue
            n += 1
            kind = f[3]
            if kind == b"decision":
                why = because.get(f[25])
                if why is None:
                    if len(because) >= KEPT:
                        because.clear()
                    why = because[f[25]] = _because(f[25])
                key = (f[7], f[9], why, f[21], f[23], int(at // DAY))
                slot = decided.get(key)
                if slot is None:
                    slot = decided[key] = [self._plan(key), 0]
                slot[1] += 1
                plan = slot[0]
                if plan.delivered:
                    dom = _domain_key(f[5])
                    domains[dom] = domains.get(dom, 0) + 1
                    days.add(key[5])
                    if refusers and (address := _text(f[5])) in refusers:
                        self._broke(address, at, plan)
                if plan.guard is not None:
                    g = (_domain_key(f[5]), plan.guard)
                    self.guarded[g] = self.guarded.get(g, 0) + 1
            elif kind == b"change":
                outcome = f[7]
                if outcome == b"engaged":
                    self._engaged(f[19])
                elif outcome == b"refused":
                    self._refusal(_text(f[5]), _text(f[9]), _text(f[19]), at)
                elif outcome == b"tool-told":
                    self._told(_text(f[5]), _text(f[9]), at)
        self.r.entries += n

    def _plan(self, key: tuple[Any, ...]) -> _Plan:
        found = self.plans.get(key[:5])
        if found is not None:
            return found
        outcome, stream, (code, would) = _text(key[0]), _text(key[1]), key[2]
        one_click, body_link = _text(key[3]), _text(key[4])
        known = self.policy.streams.get(stream)
        marketing = known.marketing if known is not None else bool(one_click)
        guard = None
        if code == "domain_guard":
            guard = ("dropped" if outcome in DROPPED else "held" if outcome in DELAYED
                     else outcome)
        plan = _Plan(outcome, stream, code, would, known.list if known else stream,
                     one_click, body_link, outcome in DELIVERED and marketing, guard)
        self.plans[key[:5]] = plan
        return plan

    def _engaged(self, detail: bytes) -> None:
        """Engagement by how heed heard it, counted as it comes (the detail can be unique)."""
        source = self.sources.get(detail)
        if source is None:
            if len(self.sources) >= KEPT:
                self.sources.clear()
            source = self.sources[detail] = source_of(_text(detail))
        self.r.heard[source] += 1

    def _refusal(self, address: str, stream: str, detail: str, at: float) -> None:
        r = self.r
        kind = detail.split(" ", 1)[0] or "manual"
        channel = detail.rsplit(" via ", 1)[1] if " via " in detail else "-"
        r.refusals[kind] += 1
        daily = r.daily[_utc_day(int(at // DAY))]
        if int(at // DAY) in self.delivery_days and "delivered" not in daily:
            daily["delivered"] = 0  # counted at the end; first in the day's figures, as it came
        daily["refusals"] += 1
        if kind == "complaint" and address not in self.complainers:
            self.complainers.add(address)  # one complaint per person, however reported
            r.complaints[domain_of(address)] += 1
            daily["complaints"] += 1
        key = (address, stream or "*")
        if key in self.refused:
            return  # a repeat: the first one is the one that counts
        self.refused[key] = at
        self.refusers.add(address)
        r.tracked += 1
        r.channels[channel] += 1
        if kind == "unsubscribe" and channel in CLICKS:
            r.clicks[CLICKS[channel]] += 1

    def _broke(self, address: str, at: float, plan: _Plan) -> None:
        """A marketing copy delivered to someone who refused: after the refusal, a violation."""
        for scope in (plan.scope, "*"):
            since = self.refused.get((address, scope))
            if since is not None and at >= since:
                self.r.violations.append(Violation(address, scope, since, at, plan.stream,
                                                   plan.code == "shadow"))
                self.last[(address, scope)] = at

    def _told(self, address: str, stream: str, at: float) -> None:
        """The tool heard of a tracked refusal (of this list, or of every list)."""
        for scope in (stream, "*"):
            since = self.refused.get((address, scope))
            if since is not None and (address, scope) not in self.r.told:
                self.r.told[(address, scope)] = max(0.0, at - since)
                return

    def finish(self) -> None:
        """The figures counted per combination, in the order their first entries came."""
        r = self.r
        for key, at in self.refused.items():
            r.effect.append(max(0.0, self.last.get(key, at) - at))
        for combo, (p, n) in self.decided.items():
            if p.delivered:
                r.delivered[p.stream] += n
                r.daily[_utc_day(combo[5])]["delivered"] += n
                r.signed += n * (p.one_click == "signed")
                r.body_links[p.body_link or "not checked"] += n
            if p.would is not None:
                r.shadow[p.stream][p.would] += n
                r.shadow_delivered[p.stream] += n * (p.outcome in DELIVERED)
            elif p.outcome in DROPPED:
                r.drops[p.stream][p.code] += n
                r.stopped += n * (p.code == "refused")
            elif p.outcome in DELAYED:
                r.delays[p.stream][p.code if p.code != "none" else "upstream retry"] += n
        for dom, n in self.domains.items():
            r.by_domain[domain_of(_text(dom))] += n
        for (dom, label), n in self.guarded.items():
            r.guarded[domain_of(_text(dom))][label] += n
