"""Silence, properly: engagement kinds from the policy, stages from real Redis state, explain."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.audit import Audit
from proxy.clock import ManualClock
from proxy.errors import PolicyError
from proxy.explain import explain
from proxy.keys import Keys
from proxy.policy import Policy, decide, lifecycle_stage, load_policies
from proxy.state import State
from proxy.types import Action, DropMode

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

DAY = 86400.0
ADDR = "gil@example.org"


def policy(tmp_path: Path, silence_extra: str = "", rule_extra: str = "") -> Policy:
    text = textwrap.dedent(f"""\
        default_stream: promo
        streams:
          promo:
            list: offers
            silence:
              lapsing: {{sends: 3}}
              inactive: {{sends: 6}}
              loyal_days: 14
        {silence_extra}
            rules:
              - {{if: lifecycle, stage: inactive, then: discard{rule_extra}}}
              - {{if: lifecycle, stage: lapsing, then: {{delay: 1d}}}}
          receipts:
            kind: transactional
        """)
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    return load_policies(tmp_path)


async def sends(state: State, n: int, clock: ManualClock, *, every: float = DAY) -> None:
    """n delivered copies, as the mail path records them, ``every`` seconds apart."""
    for _ in range(n):
        pipe = state.redis.pipeline(transaction=False)
        state.record_sends(pipe, "promo", [ADDR], clock.now())
        await pipe.execute()
        clock.advance(every)


async def stage(state: State, p: Policy, now: float) -> str:
    return lifecycle_stage(p.streams["promo"], await state.snapshot(ADDR), now)


async def test_opens_do_not_count_by_default(aredis: aioredis.Redis, keys: Keys,
                                             clock: ManualClock, tmp_path: Path) -> None:
    state, p = State(aredis, keys, clock), policy(tmp_path)
    await sends(state, 4, clock)
    assert await stage(state, p, clock.now()) == "lapsing"
    # Apple Mail Privacy Protection fetched the images: an open today, nobody read it.
    await state.engage(ADDR, kind="open")
    snap = await state.snapshot(ADDR)
    assert snap.last_engaged == clock.now() and snap.sends_since_engagement == 0  # any kind
    assert lifecycle_stage(p.streams["promo"], snap, clock.now()) == "lapsing"
    d = decide(p, "promo", snap, clock.now())
    assert d.action is Action.DELAY and d.reasons[0].code == "lifecycle"
    assert d.reasons[0].detail == "lapsing: 4 sends since engagement, never engaged"
    # A click counts: loyal (engaged within loyal_days), mail flows.
    await state.engage(ADDR, kind="click")
    assert await stage(state, p, clock.now()) == "loyal"
    assert decide(p, "promo", await state.snapshot(ADDR), clock.now()).action is Action.DELIVER


async def test_opens_count_when_the_policy_says(aredis: aioredis.Redis, keys: Keys,
                                                clock: ManualClock, tmp_path: Path) -> None:
    state = State(aredis, keys, clock)
    p = policy(tmp_path, "      engagement: [open, click]")
    assert p.streams["promo"].silence.engagement == {"open", "click"}
    await sends(state, 4, clock)
    await state.engage(ADDR, kind="open")
    assert await stage(state, p, clock.now()) == "loyal"
    # ...and a reply does not, under this policy: two more sends, then a reply.
    await sends(state, 3, clock)
    await state.engage(ADDR, kind="reply")
    assert await stage(state, p, clock.now()) == "lapsing"


async def test_transitions_active_lapsing_inactive_and_back(
        aredis: aioredis.Redis, keys: Keys, clock: ManualClock, tmp_path: Path) -> None:
    state, p = State(aredis, keys, clock), policy(tmp_path)
    seen = [await stage(state, p, clock.now())]
    for _ in range(7):
        await sends(state, 1, clock)
        seen.append(await stage(state, p, clock.now()))
    assert seen == ["active"] * 3 + ["lapsing"] * 3 + ["inactive"] * 2
    d = decide(p, "promo", await state.snapshot(ADDR), clock.now())
    assert d.action is Action.DROP and d.drop_mode is DropMode.DISCARD
    await state.engage(ADDR, kind="preference-visit")
    assert await stage(state, p, clock.now()) == "loyal"
    clock.advance(20 * DAY)  # loyal_days passed with nothing sent: still active, not silent
    assert await stage(state, p, clock.now()) == "active"


async def test_a_late_event_counts_the_mails_after_it(aredis: aioredis.Redis, keys: Keys,
                                                      clock: ManualClock, tmp_path: Path) -> None:
    state, p = State(aredis, keys, clock), policy(tmp_path)
    start = clock.now()
    await sends(state, 5, clock)  # at start, +1d … +4d
    # A webhook reports today a click made after the second mail.
    await state.engage(ADDR, kind="click", at=start + 1.5 * DAY)
    snap = await state.snapshot(ADDR)
    assert snap.engagement["click"].sends_since == 3
    assert snap.engaged(p.streams["promo"].silence.engagement) == (start + 1.5 * DAY, 3)
    assert lifecycle_stage(p.streams["promo"], snap, clock.now()) == "lapsing"
    # An older event reported later does not move the time back.
    await state.engage(ADDR, kind="click", at=start)
    snap = await state.snapshot(ADDR)
    assert snap.engagement["click"].at == start + 1.5 * DAY and snap.last_engaged == (
        start + 1.5 * DAY)


async def test_records_from_before_kinds_keep_their_kind(aredis: aioredis.Redis, keys: Keys,
                                                         clock: ManualClock,
                                                         tmp_path: Path) -> None:
    state, p = State(aredis, keys, clock), policy(tmp_path)
    await aredis.hset(keys.engagement(ADDR), mapping={
        "last_engaged": repr(clock.now() - DAY), "sends_since": 2, "total_sends": 9,
        "first_send": repr(clock.now() - 90 * DAY), "last_kind": "reply"})
    snap = await state.snapshot(ADDR)
    assert snap.engagement["reply"].sends_since == 2
    assert lifecycle_stage(p.streams["promo"], snap, clock.now()) == "loyal"
    # A new open must not hide that reply: the script files it under its kind first.
    await state.engage(ADDR, kind="open")
    snap = await state.snapshot(ADDR)
    assert set(snap.engagement) == {"reply", "open"}
    assert snap.engaged(frozenset({"reply"})) == (clock.now() - DAY, 2)


async def test_unknown_engagement_kind_is_refused(aredis: aioredis.Redis, keys: Keys,
                                                  clock: ManualClock) -> None:
    with pytest.raises(ValueError, match="unknown engagement kind 'like'"):
        await State(aredis, keys, clock).engage(ADDR, kind="like")
    assert await aredis.exists(keys.engagement(ADDR)) == 0


async def test_explain_shows_each_streams_stage_and_why(aredis: aioredis.Redis, keys: Keys,
                                                        clock: ManualClock,
                                                        tmp_path: Path) -> None:
    state, p = State(aredis, keys, clock), policy(tmp_path, rule_extra=", repermission: true")
    await state.grant(ADDR, "offers")
    await sends(state, 4, clock)
    await state.engage(ADDR, kind="open")
    text = await explain(state, Audit(aredis, keys), ADDR, now=clock.now(), policy=p)
    assert "  promo: lapsing: 4 sends since engagement, never engaged" in text
    assert ("    thresholds: lapsing at 3 mails unanswered; inactive at 6 mails unanswered;"
            " loyal when engaged within 14 days; engagement counted: click, manual,"
            " preference-visit, repermission-yes, reply") in text
    assert "by kind (latest of each): open " in text
    assert "receipts:" not in text.split("lifecycle")[1].split("if a message")[0]
    await sends(state, 2, clock)
    text = await explain(state, Audit(aredis, keys), ADDR, now=clock.now(), policy=p)
    assert "  promo: inactive: 6 sends since engagement" in text
    assert "re-permission: due; the next message asks whether they still want" in text
    assert "  promo: would be: deliver because inactive: 6 sends" in text


def test_loader_errors_for_the_new_keys(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(textwrap.dedent("""\
        default_stream: promo
        streams:
          promo:
            silence:
              lapsing: {sends: 3}
              engagement: [opens, click]
            rules:
              - {if: lifecycle, stage: lapsing, repermission: true, then: discard}
              - {if: lifecycle, stage: lapsing, repermission: maybe, then: discard}
          digest:
            silence:
              inactive: {sends: 3}
              engagement: []
            rules:
              - {if: lifecycle, stage: inactive, repermision: true, then: discard}
          plain:
            rules:
              - {if: lifecycle, stage: inactive, repermission: true, then: discard}
        """), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path)
    f = tmp_path / "p.yaml"
    assert info.value.errors == [
        f"{f}:6: silence.engagement: unknown engagement kind 'opens'; expected open, click,"
        " reply, preference-visit, manual, machine-click, repermission-yes",
        f"{f}:9: lifecycle.repermission: expected true or false, got 'maybe'",
        f"{f}:13: silence.engagement: name at least one kind (nothing would ever break the"
        " silence)",
        f"{f}:15: unknown key 'repermision' for condition 'lifecycle' (expected stage,"
        " repermission, if, then, stage, note)",
        f"{f}:18: stage 'inactive' needs `silence: {{inactive: ...}}` on the stream",
        f"{f}:8: repermission lets one message through to inactive people: the rule's stage"
        " must include inactive",
    ]


def test_heed_engage_and_explain_commands(redis_url: str, tmp_path: Path) -> None:
    """The real commands against a real Redis: an open is recorded but not counted."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    def heed(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "proxy", *args, "--redis", redis_url,
                               "--policies", str(ROOT / "policies")], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})

    assert heed("consent", "grant", ADDR, "--list", "marketing").returncode == 0
    assert heed("engage", ADDR, "--kind", "open").returncode == 0
    bad = heed("engage", ADDR, "--kind", "like")
    assert bad.returncode != 0 and "invalid choice: 'like'" in bad.stderr
    out = heed("explain", ADDR).stdout
    assert "by kind (latest of each): open " in out
    assert "  marketing: active: 0 sends since engagement, never engaged" in out
    assert ("thresholds: lapsing at 5 mails unanswered or 60 days silent after at least 3"
            " mails; inactive at 10 mails unanswered or 180 days silent after at least 5 mails;"
            " loyal when engaged within 14 days; engagement counted: click, manual,"
            " preference-visit, repermission-yes, reply") in out
    assert heed("engage", ADDR, "--kind", "reply").returncode == 0
    assert "  marketing: loyal: 0 sends since engagement, last engaged " in heed(
        "explain", ADDR).stdout
