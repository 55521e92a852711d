"""The compliance figures, computed from the audit stream (read in chunks) and person state.

Definitions (also in docs/report.md):
- a refusal is an audit ``change`` entry with outcome ``refused`` in the window; the
  first one per person and scope (a list, or ``*`` for all marketing) is the one tracked;
- it is *honoured* when no marketing copy for that scope was delivered to the person
  after it was recorded (audit ``delivered``/``released`` entries, shadow deliveries too);
- its *time to effect* is the time from the refusal's record to the last such delivery
  (0 when there was none): how long mail still went out after the person said no;
- a complaint is a refusal of kind ``complaint``; its domain is the person's domain;
- a tracked refusal was *told* when a ``tool-told`` entry for its list (or, for a refusal
  of every list, any list) follows it: the tool heard of it (proxy/tell/).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from proxy.errors import StateUnavailable
from proxy.policy import Policy, lifecycle_stage
from proxy.providers.catalog import Catalog
from proxy.providers.guard import Throttles
from proxy.providers.lookup import ProviderLookup
from proxy.report.bulk import blind_domains, pauses
from proxy.report.fold import Fold, Violation
from proxy.report.heard import Answers
from proxy.report.people import SAMPLE, Population, survey
from proxy.report.trail import pages
from proxy.state import State
from proxy.types import PersonState

LINES = (0.001, 0.003)  # complaint-rate lines: 0.1 % (keep below), 0.3 % (never reach)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Report:
    since: float
    now: float
    policy_version: str
    entries: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # by kind, every record
    channels: Counter[str] = field(default_factory=Counter)  # by channel, first per scope
    tracked: int = 0  # first refusal per person and scope
    effect: list[float] = field(default_factory=list)  # seconds, one per tracked refusal
    violations: list[Violation] = field(default_factory=list)
    stopped: int = 0  # later marketing copies dropped because of a refusal
    clicks: Counter[int] = field(default_factory=Counter)
    delivered: Counter[str] = field(default_factory=Counter)  # marketing, by stream
    signed: int = 0
    by_domain: Counter[str] = field(default_factory=Counter)  # delivered marketing
    complaints: Counter[str] = field(default_factory=Counter)  # complaining people, by domain
    drops: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    delays: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    shadow: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    shadow_delivered: Counter[str] = field(default_factory=Counter)
    guarded: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    guard_now: dict[str, int] = field(default_factory=dict)  # domain -> complaints on record
    lifecycle: dict[str, Counter[str]] = field(default_factory=dict)
    # Whose state the lifecycle and re-permission counts were read from: everyone, or a
    # uniform sample (then each count is an estimate within ``people.margin``, 95 %).
    people: Population = field(default_factory=lambda: Population(0, 0, True))
    # When the oldest entry the trail still keeps was recorded (audit.max_entries and
    # audit.max_age trim it): a window starting before it is not covered whole.
    oldest_kept: float | None = None
    daily: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    heard: Counter[str] = field(default_factory=Counter)  # engagement by source (heard.py)
    asked: dict[str, Counter[str]] = field(default_factory=dict)  # re-permission answers
    # Bulk-sender rules (proxy/report/bulk.py): delivered marketing by body link
    # ("yes", "inserted", "no", "not checked"), domains whose provider reports no
    # complaint per message (domain -> provider), and each provider pause.
    body_links: Counter[str] = field(default_factory=Counter)
    blind: dict[str, str] = field(default_factory=dict)
    pauses: list[Any] = field(default_factory=list)
    # Tracked refusals the tool was told of (proxy/tell/): seconds from refusal to told.
    told: dict[tuple[str, str], float] = field(default_factory=dict)

    # --- derived figures -----------------------------------------------------------
    @property
    def uncovered(self) -> bool:
        """The window starts before the oldest entry the audit trail keeps."""
        return self.oldest_kept is None or self.oldest_kept > self.since

    @property
    def honoured(self) -> int:
        return self.tracked - len({(v.address, v.scope) for v in self.violations})

    @property
    def effect_max(self) -> float:
        return max(self.effect, default=0.0)

    @property
    def effect_p99(self) -> float:
        return percentile(self.effect, 0.99)

    @property
    def told_share(self) -> float | None:
        return len(self.told) / self.tracked if self.tracked else None

    def told_seconds(self, q: float) -> float:
        return percentile(list(self.told.values()), q)

    @property
    def delivered_total(self) -> int:
        return sum(self.delivered.values())

    @property
    def signed_share(self) -> float | None:
        return self.signed / self.delivered_total if self.delivered_total else None

    @property
    def body_link_share(self) -> float | None:
        """Delivered marketing with a visible unsubscribe link in the body (tool's or heed's)."""
        n = self.body_links["yes"] + self.body_links["inserted"]
        return n / self.delivered_total if self.delivered_total else None

    @property
    def complaint_total(self) -> int:
        return sum(self.complaints.values())

    def rate(self, domain: str | None = None) -> float | None:
        """Complaints per delivered marketing copy (overall, or for one receiving domain)."""
        if domain is None:
            sent, got = self.delivered_total, self.complaint_total
        else:
            sent, got = self.by_domain[domain], self.complaints[domain]
        return got / sent if sent else (None if not got else math.inf)

    def domains(self) -> list[str]:
        """Receiving domains with complaints or mail, most complaints (then mail) first."""
        names = set(self.complaints) | set(self.by_domain)
        return sorted(names, key=lambda d: (-self.complaints[d], -self.by_domain[d], d))


class _People:
    """Folds each person read into the lifecycle and re-permission counts."""

    def __init__(self, policy: Policy, now: float) -> None:
        self.streams = [s for s in policy.streams.values() if s.marketing]
        self.now = now
        self.stages: dict[str, Counter[str]] = {s.name: Counter() for s in self.streams}
        self.answers = Answers(policy)

    def add(self, person: PersonState) -> None:
        """Stage per marketing stream the person may get (active consent to its list, or
        no consent needed), or ``refused``; and their answer to a re-permission ask."""
        for s in self.streams:
            if s.consent_required and s.list not in person.consents:
                continue
            if any(scope in person.refusals for scope in (s.list, "*")):
                self.stages[s.name]["refused"] += 1
                continue
            self.stages[s.name][lifecycle_stage(s, person, self.now)] += 1
        self.answers.add(person)


def _scaled(counts: dict[str, Counter[str]], people: Population) -> dict[str, Counter[str]]:
    return {name: Counter({k: people.scale(v) for k, v in c.items()})
            for name, c in counts.items()}


async def guard_state(state: State, domains: list[str], now: float,
                      lookback: float) -> dict[str, int]:
    """Complaints on record per domain (what the domain guard reads), one round trip."""
    if not domains:
        return {}
    try:
        pipe = state.redis.pipeline(transaction=False)
        for d in domains:
            pipe.zcount(state.keys.domain_complaints(d), now - lookback, now)
        counts = await pipe.execute()
    except RedisError as exc:
        raise StateUnavailable("redis unavailable") from exc
    return {d: int(c) for d, c in zip(domains, counts, strict=True) if c}


async def build_report(state: State, policy: Policy, *, since: float, now: float,
                       lookback: float, catalog: Catalog | None = None,
                       lookup: ProviderLookup | None = None,
                       throttles: Throttles | None = None,
                       sample: int | None = SAMPLE) -> Report:
    """Every figure for the window [since, now]; ``lookback`` bounds the guard's count;
    the lifecycle figures read ``sample`` people when there are more (None: everyone)."""
    report = Report(since=since, now=now, policy_version=policy.version)
    fold = Fold(report, policy, since, now)
    async with aclosing(pages(state.redis, state.keys, since)) as trail:
        async for page in trail:
            fold.page(page)
    fold.finish()
    first = await state.audit.oldest()
    report.oldest_kept = first.at if first is not None else None
    folds = _People(policy, now)
    report.people = await survey(state, folds.add, sample=sample)
    report.lifecycle = _scaled(folds.stages, report.people)
    report.asked = _scaled(folds.answers.counts, report.people)
    report.guard_now = await guard_state(state, sorted(set(report.complaints)
                                                       | set(report.guarded)), now, lookback)
    report.blind = await blind_domains(report.domains(), catalog or Catalog(), lookup)
    report.pauses = pauses(policy, throttles or {}, since, now)
    return report
