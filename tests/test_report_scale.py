"""`heed report` at scale: on bench/report.py's realistic mix, the figures a full read gives."""

from __future__ import annotations

import json
import random
from collections import Counter
from itertools import chain
from typing import Any

import pytest
import redis.asyncio as aioredis

from bench.report import audit, people
from proxy.audit import AuditEntry
from proxy.clock import ManualClock
from proxy.keys import Keys, domain_of
from proxy.policy import Policy, lifecycle_stage, load_policies
from proxy.providers.catalog import Catalog
from proxy.report.bulk import blind_domains
from proxy.report.compute import Report, _People, build_report, guard_state
from proxy.report.fold import DELAYED, DELIVERED, DROPPED, Fold, Violation, _utc_day
from proxy.report.heard import source_of
from proxy.report.people import Population, survey
from proxy.report.render_html import render_html
from proxy.report.render_text import as_dict, render_text
from proxy.report.trail import ORDER, ordered
from proxy.state import State
from tests.conftest import ROOT

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

DAY = 86400.0
NOW = 1_800_000_000.0
PEOPLE, ENTRIES = 3000, 6000


@pytest.fixture
def policy() -> Policy:
    return load_policies(ROOT / "policies")


@pytest.fixture
async def state(aredis: aioredis.Redis, keys: Keys) -> State:
    """Three thousand people and six thousand audit entries over 60 days (seeded)."""
    rng = random.Random(3)
    pipe = aredis.pipeline(transaction=False)
    for args in chain(people(PEOPLE, NOW, rng), audit(ENTRIES, PEOPLE, NOW, rng)):
        pipe.execute_command(*args)
    await pipe.execute()
    return State(aredis, keys, ManualClock(NOW))


class PerEntry:
    """The trail folded as it was before decisions were counted per combination of their
    fields: every figure of each entry added as it is read (refusals and tool-told
    entries, read whole either way, by the same code)."""

    def __init__(self, r: Report, policy: Policy) -> None:
        self.r, self.policy, self.fold = r, policy, Fold(r, policy, 0.0, NOW)

    def add(self, e: AuditEntry) -> None:
        r, fold = self.r, self.fold
        r.entries += 1
        if e.kind == "change" and e.outcome == "engaged":
            r.heard[source_of(e.detail)] += 1
        elif e.kind == "change" and e.outcome == "refused":
            fold._refusal(e.recipient, e.stream, e.detail, e.at)
        elif e.kind == "change" and e.outcome == "tool-told":
            fold._told(e.recipient, e.stream, e.at)
        elif e.kind == "decision":
            self.decision(e)

    def decision(self, e: AuditEntry) -> None:
        r = self.r
        code = e.reasons[0].split(":", 1)[0].strip() or "none" if e.reasons else "none"
        known = self.policy.streams.get(e.stream)
        marketing = known.marketing if known else bool(e.one_click)
        if e.outcome in DELIVERED and marketing:
            r.delivered[e.stream] += 1
            r.by_domain[domain_of(e.recipient)] += 1
            r.daily[_utc_day(int(e.at // DAY))]["delivered"] += 1
            r.signed += e.one_click == "signed"
            r.body_links[e.body_link or "not checked"] += 1
            for scope in (known.list if known else e.stream, "*"):
                since = self.fold.refused.get((e.recipient, scope))
                if since is not None and e.at >= since:
                    r.violations.append(Violation(e.recipient, scope, since, e.at, e.stream,
                                                  code == "shadow"))
                    self.fold.last[(e.recipient, scope)] = e.at
        if code == "shadow":
            raise AssertionError("the generated trail has no shadow stream")
        if e.outcome in DROPPED:
            r.drops[e.stream][code] += 1
            r.stopped += code == "refused"
        elif e.outcome in DELAYED:
            r.delays[e.stream][code if code != "none" else "upstream retry"] += 1
        if code == "domain_guard":
            r.guarded[domain_of(e.recipient)]["dropped" if e.outcome in DROPPED else
                                              "held" if e.outcome in DELAYED else e.outcome] += 1


async def reference(state: State, policy: Policy, since: float) -> Report:
    """The slow way the report was made before: the whole trail parsed into AuditEntry
    records and folded one by one, then every person's full snapshot, one at a time."""
    r = Report(since=since, now=NOW, policy_version=policy.version)
    reader = PerEntry(r, policy)
    for _id, fields in await state.redis.xrange(state.keys.audit):
        entry = AuditEntry.from_fields(fields)
        if since <= entry.at <= NOW:
            reader.add(entry)
    reader.fold.finish()
    oldest = await state.audit.oldest()
    r.oldest_kept = oldest.at if oldest else None
    marketing = [s for s in policy.streams.values() if s.marketing]
    r.lifecycle = {s.name: Counter() for s in marketing}
    everyone = await state.redis.smembers(state.keys.people)
    for address in sorted(a.decode() for a in everyone):
        person = await state.snapshot(address)
        for s in marketing:
            if s.consent_required and s.list not in person.consents:
                continue
            if any(scope in person.refusals for scope in (s.list, "*")):
                r.lifecycle[s.name]["refused"] += 1
                continue
            r.lifecycle[s.name][lifecycle_stage(s, person, NOW)] += 1
    folds = _People(policy, NOW)  # re-permission: its own full pass before, the same fold
    for address in sorted(a.decode() for a in everyone):
        folds.answers.add(await state.snapshot(address))
    r.asked = folds.answers.counts
    r.people = Population(len(everyone), len(everyone), True)
    # Unchanged by the faster reading: the same helpers as build_report.
    r.guard_now = await guard_state(state, sorted(set(r.complaints) | set(r.guarded)), NOW, DAY)
    r.blind = await blind_domains(r.domains(), Catalog(), None)
    return r


async def test_the_figures_are_those_of_a_full_read(state: State, policy: Policy) -> None:
    since = NOW - 30 * DAY
    fast = await build_report(state, policy, since=since, now=NOW, lookback=DAY)
    slow = await reference(state, policy, since)
    assert fast.people.exact and fast.people.read == PEOPLE  # fewer than SAMPLE: everyone
    assert 0 < fast.entries < ENTRIES  # half the trail is older than the window
    assert sum(fast.lifecycle["marketing"].values()) > PEOPLE * 0.8
    got, want = as_dict(fast), as_dict(slow)
    assert got == want
    assert got["refusals"]["not_honoured"] and got["domain_guard"]  # the pairs are there
    for name in set(got) - {"lifecycle", "repermission"}:  # people are read in another order
        assert json.dumps(got[name]) == json.dumps(want[name])  # keys in the same order too
    assert "sample" not in render_text(fast)


async def test_a_sample_estimates_every_count_within_its_stated_margin(
        state: State, policy: Policy) -> None:
    exact = _People(policy, NOW)
    everyone = await survey(state, exact.add, sample=None)
    sampled = _People(policy, NOW)
    part = await survey(state, sampled.add, sample=600)
    assert everyone == Population(PEOPLE, PEOPLE, True)
    assert not part.exact and part.total == PEOPLE and 450 < part.read < 750
    assert part.margin > 0
    for stage, n in exact.stages["marketing"].items():
        estimate = part.scale(sampled.stages["marketing"][stage])
        assert abs(estimate - n) <= part.margin, (stage, estimate, n, part.margin)
    report = await build_report(state, policy, since=NOW - 30 * DAY, now=NOW, lookback=DAY,
                                sample=600)
    assert report.people == part  # the same people each time: the choice hashes addresses
    assert f"uniform sample of {part.read:,} of 3,000 people" in render_text(report)
    assert f"uniform sample of {part.read:,} of 3,000 people" in render_html(report)
    assert as_dict(report)["people"] == {"total": 3000, "read": part.read, "exact": False,
                                         "margin_95": part.margin}


def test_the_margin_is_the_worst_case_95_percent_interval() -> None:
    # 1.96 · 1,000,000 · sqrt(0.25 / 10,000 · 990,000 / 999,999) = 9,751
    assert Population(1_000_000, 10_000, False).margin == 9751
    assert Population(1_000_000, 10_000, False).scale(1234) == 123_400
    assert Population(500, 500, True).margin == 0


async def test_a_window_older_than_the_trail_says_so(state: State, policy: Policy) -> None:
    """The trail holds 60 days: a 90-day window is not covered whole, and the text says it."""
    r: Any = await build_report(state, policy, since=NOW - 90 * DAY, now=NOW, lookback=DAY)
    assert r.uncovered and r.oldest_kept is not None and r.oldest_kept > NOW - 61 * DAY
    assert "Note: The audit trail's oldest entry kept is from " in render_text(r)
    assert as_dict(r)["window"]["covered_whole"] is False
    covered = await build_report(state, policy, since=NOW - 30 * DAY, now=NOW, lookback=DAY)
    assert not covered.uncovered


def test_the_trail_reader_knows_the_order_entries_are_written_in() -> None:
    """An entry in AuditEntry.to_fields' order is read by position (proxy/report/trail.py);
    in another order, or as a map (decoded or not), it is put in that order first."""
    entry = AuditEntry(at=1.0, kind="decision", recipient="a@x.org", outcome="delivered",
                       stream="marketing", reasons=("cap: 3 a week",), one_click="signed")
    assert [k.encode() for k in entry.to_fields()] == ORDER
    flat = [b for k, v in entry.to_fields().items() for b in (k.encode(), v.encode())]
    assert ordered(flat) is flat
    assert ordered(dict(zip(flat[0::2], flat[1::2], strict=True))) == flat
    assert ordered(entry.to_fields()) == flat
    assert ordered(flat[2:] + flat[:2]) == flat
    assert ordered([b"kind", b"change"]) == [b for name in ORDER for b in (
        name, b"change" if name == b"kind" else b"")]


def test_reasons_with_a_time_in_them_keep_the_counted_combinations_few(policy: Policy) -> None:
    """Each drop's reason is unique (a refusal's time): counted by its code, not its text,
    so what the fold holds does not grow with the trail."""
    from proxy.report.fold import KEPT

    entries = [AuditEntry(at=NOW - i, kind="decision", recipient=f"p{i}@x.org",
                          outcome="reject", stream="marketing",
                          reasons=(f"refused: unsubscribe from marketing on {i}",))
               for i in range(KEPT + 1000)]
    page = [[b"%d-0" % i, [b for k, v in e.to_fields().items() for b in (k.encode(), v.encode())]]
            for i, e in enumerate(entries)]
    r = Report(since=NOW - DAY, now=NOW, policy_version=policy.version)
    fold = Fold(r, policy, NOW - DAY, NOW)
    fold.page(page)
    fold.finish()
    assert r.entries == len(entries) and r.stopped == len(entries)
    assert r.drops == {"marketing": {"refused": len(entries)}}
    assert len(fold.decided) <= 2 and len(fold.because) <= KEPT  # two UTC days at most


async def test_a_fold_that_fails_gives_the_trail_connection_back_at_once(
        state: State, policy: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trail is read on a connection of its own (proxy/report/trail.py): a report that
    fails part-way returns it to the pool then, not whenever the generator is collected."""
    def fail(self: Fold, page: Any) -> None:
        raise RuntimeError("fold failed")

    monkeypatch.setattr(Fold, "page", fail)
    with pytest.raises(RuntimeError, match="fold failed"):
        await build_report(state, policy, since=NOW - 30 * DAY, now=NOW, lookback=DAY)
    if isinstance(state.redis, aioredis.Redis):  # a Cluster's pages go through xrange
        assert not state.redis.connection_pool._in_use_connections
