"""The engine and its conditions: pure decisions from a person's state and a fixed clock."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from proxy.policy import Policy, Silence, Threshold, decide, lifecycle_stage, load_policies
from proxy.types import (
    Action,
    Consent,
    DropMode,
    PersonState,
    Preferences,
    Reason,
    Refusal,
)

DAY, HOUR = 86400.0, 3600.0
NOW = 1_800_000_000.0  # 2027-01-15 08:00 UTC, 09:00 in Berlin
ADDR = "ana@example.org"
CONSENT = {"offers": Consent("offers", NOW - 100 * DAY, source="signup form")}


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()


def berlin(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


def person(**kw: object) -> PersonState:
    kw.setdefault("consents", CONSENT)
    return PersonState(address=ADDR, **kw)  # type: ignore[arg-type]


def policy(tmp_path: Path, rules: str, **stream: str) -> Policy:
    extra = "".join(f"    {k}: {v}\n" for k, v in stream.items())
    text = ("default_stream: promo\nstreams:\n  promo:\n    list: offers\n" + extra
            + "    rules:\n" + textwrap.indent(textwrap.dedent(rules), "      ")
            + "  receipts:\n    kind: transactional\n")
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    return load_policies(tmp_path)


SILENCE = "{lapsing: {sends: 5, or_days: 60, min_sends: 3}, inactive: {sends: 10}}"


# --- the engine ------------------------------------------------------------------------


def test_transactional_always_delivers(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: refused, then: drop}\n")
    refused = person(consents={}, refusals={"*": Refusal("*", "complaint", NOW - DAY)})
    d = decide(p, "receipts", refused, NOW)
    assert (d.action, d.stream, d.reasons, d.shadow) == (Action.DELIVER, "receipts", (), False)


def test_first_matching_rule_decides(tmp_path: Path) -> None:
    p = policy(tmp_path, """\
        - {if: refused, then: drop}
        - {if: no_consent, then: discard}
        - {if: cap, per_day: 1, then: delay}
        """)
    both = person(consents={}, refusals={"offers": Refusal("offers", "unsubscribe", NOW - DAY,
                                                           "one-click")})
    d = decide(p, "promo", both, NOW)
    assert d.action is Action.DROP and d.drop_mode is DropMode.REJECT and d.until is None
    assert [r.code for r in d.reasons] == ["refused"]
    assert "unsubscribe from list 'offers'" in d.reasons[0].detail
    assert "via one-click" in d.reasons[0].detail and "2027-01-14" in d.reasons[0].detail
    d = decide(p, "promo", person(consents={}), NOW)
    assert (d.action, d.drop_mode, d.reasons[0].code) == (Action.DROP, DropMode.DISCARD,
                                                          "no_consent")
    assert d.rejects_at_rcpt is False


def test_no_opinion_is_not_deliver(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: paused, then: deliver}\n", default="drop", drop="discard")
    d = decide(p, "promo", person(), NOW)  # no rule has an opinion: the default decides
    assert (d.action, d.drop_mode) == (Action.DROP, DropMode.DISCARD)
    assert d.reasons[0].code == "default"
    paused = person(prefs=Preferences(paused_until=NOW + DAY))
    d = decide(p, "promo", paused, NOW)  # the rule's opinion is "deliver"
    assert d.action is Action.DELIVER and d.reasons[0].code == "paused"
    p = policy(tmp_path, "- {if: paused, then: drop}\n")
    d = decide(p, "promo", person(), NOW)
    assert (d.action, d.reasons) == (Action.DELIVER, ())


def test_refused_scopes_and_kinds(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: refused, kinds: [complaint, bounce], then: drop}\n")
    unsub = person(refusals={"offers": Refusal("offers", "unsubscribe", NOW - DAY)})
    assert decide(p, "promo", unsub, NOW).action is Action.DELIVER
    other_list = person(refusals={"news": Refusal("news", "complaint", NOW - DAY)})
    assert decide(p, "promo", other_list, NOW).action is Action.DELIVER
    everything = person(refusals={"*": Refusal("*", "bounce", NOW - DAY, "dsn")})
    d = decide(p, "promo", everything, NOW)
    assert d.action is Action.DROP and "bounce from all marketing" in d.reasons[0].detail


def test_no_consent_uses_the_streams_list(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: no_consent, then: drop}\n")
    d = decide(p, "promo", person(consents={"promo": CONSENT["offers"]}), NOW)
    assert d.action is Action.DROP and d.reasons == (
        Reason("no_consent", "no consent on record for list 'offers'"),)
    assert decide(p, "promo", person(), NOW).action is Action.DELIVER


def test_opted_out_and_paused(tmp_path: Path) -> None:
    p = policy(tmp_path, """\
        - {if: opted_out, then: drop}
        - {if: paused, then: delay}
        """)
    for off in ({"promo"}, {"offers"}):
        d = decide(p, "promo", person(prefs=Preferences(off=frozenset(off))), NOW)
        assert d.action is Action.DROP and d.reasons[0].code == "opted_out"
    d = decide(p, "promo", person(prefs=Preferences(paused_until=NOW + 5 * DAY)), NOW)
    assert (d.action, d.until, d.reasons[0].code) == (Action.DELAY, NOW + 5 * DAY, "paused")
    over = person(prefs=Preferences(paused_until=NOW - 1))
    assert decide(p, "promo", over, NOW).action is Action.DELIVER


def test_fixed_delay(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: no_consent, then: {delay: 2d}}\n")
    d = decide(p, "promo", person(consents={}), NOW)
    assert (d.action, d.until, d.drop_mode) == (Action.DELAY, NOW + 2 * DAY, None)


def test_shadow_mode_delivers_and_says_what_would_happen(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: refused, then: drop}\n- {if: cap, per_day: 1, then: delay}\n",
               shadow="true")
    refused = person(refusals={"*": Refusal("*", "complaint", NOW - DAY)})
    d = decide(p, "promo", refused, NOW)
    assert (d.action, d.shadow, d.drop_mode) == (Action.DELIVER, True, None)
    [reason] = d.reasons
    assert reason.code == "shadow" and reason.detail.startswith("would drop (reject): refused: ")
    d = decide(p, "promo", person(sends={"promo": (NOW - HOUR,)}), NOW)
    assert d.action is Action.DELIVER and d.until is None and d.shadow
    assert d.reasons[0].detail.startswith("would delay until 2027-01-16 07:00 UTC: cap: ")
    d = decide(p, "promo", person(), NOW)
    assert (d.action, d.shadow, d.reasons) == (Action.DELIVER, True, ())


# --- lifecycle -------------------------------------------------------------------------


def test_lifecycle_stages() -> None:
    silence = Silence(lapsing=Threshold(sends=5, or_days=60, min_sends=3),
                      inactive=Threshold(sends=10, or_days=180, min_sends=5))
    assert lifecycle_stage(silence, person(last_engaged=NOW - 3 * DAY), NOW) == "loyal"
    assert lifecycle_stage(silence, person(last_engaged=NOW - 20 * DAY), NOW) == "active"
    assert lifecycle_stage(silence, person(), NOW) == "active"  # new: nothing sent yet
    assert lifecycle_stage(silence, person(sends_since_engagement=5,
                                           last_engaged=NOW - 3 * DAY), NOW) == "lapsing"
    # 70 days of silence counts only after at least min_sends mails.
    quiet = {"last_engaged": NOW - 70 * DAY}
    assert lifecycle_stage(silence, person(sends_since_engagement=2, **quiet), NOW) == "active"
    assert lifecycle_stage(silence, person(sends_since_engagement=3, **quiet), NOW) == "lapsing"
    assert lifecycle_stage(silence, person(sends_since_engagement=10), NOW) == "inactive"
    # Never engaged: days count from the first send.
    never = person(sends_since_engagement=6, first_send=NOW - 200 * DAY)
    assert lifecycle_stage(silence, never, NOW) == "inactive"
    assert lifecycle_stage(Silence(), person(sends_since_engagement=99), NOW) == "active"


def test_lifecycle_condition_and_stage_filter(tmp_path: Path) -> None:
    p = policy(tmp_path, """\
        - {if: lifecycle, stage: inactive, then: discard}
        - {if: cap, stage: lapsing, per_week: 1, then: delay}
        - {if: cap, per_week: 3, then: delay}
        """, silence=SILENCE)
    assert lifecycle_stage(p.streams["promo"], person(sends_since_engagement=10), NOW) == (
        "inactive")
    d = decide(p, "promo", person(sends_since_engagement=12, last_engaged=NOW - 90 * DAY), NOW)
    assert (d.action, d.drop_mode, d.reasons[0].code) == (Action.DROP, DropMode.DISCARD,
                                                          "lifecycle")
    assert d.reasons[0].detail.startswith("inactive: 12 sends since engagement, last engaged ")
    sent = {"promo": (NOW - 3 * DAY,)}
    lapsing = person(sends_since_engagement=6, sends=sent)
    d = decide(p, "promo", lapsing, NOW)
    assert (d.action, d.until) == (Action.DELAY, NOW + 4 * DAY)
    active = person(sends_since_engagement=1, sends=sent)  # the lapsing cap is not theirs
    assert decide(p, "promo", active, NOW).action is Action.DELIVER


# --- caps ------------------------------------------------------------------------------


def test_cap_release_is_when_the_oldest_send_leaves_the_window(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: cap, per_day: 1, per_week: 3, then: delay}\n")
    d = decide(p, "promo", person(sends={"promo": (NOW - 3 * HOUR,)}), NOW)
    assert (d.action, d.until) == (Action.DELAY, NOW - 3 * HOUR + DAY)
    assert d.reasons == (Reason("cap", "1 sent in 1d, limit 1 per day"),)
    # A send exactly a day ago has left the day window; the week holds three.
    week = (NOW - 6 * DAY, NOW - 2 * DAY, NOW - DAY)
    d = decide(p, "promo", person(sends={"promo": week}), NOW)
    assert (d.until, d.reasons[0].detail) == (NOW + DAY, "3 sent in 7d, limit 3 per week")
    # Four in the week (the tool sent past the cap): free when two have left.
    four = (NOW - 6 * DAY, NOW - 5 * DAY, NOW - 4 * DAY, NOW - 2 * DAY)
    assert decide(p, "promo", person(sends={"promo": four}), NOW).until == NOW + 2 * DAY
    # Older sends and other streams' sends do not count.
    others = person(sends={"promo": (NOW - 8 * DAY,) * 5, "news": (NOW - HOUR,)})
    assert decide(p, "promo", others, NOW).action is Action.DELIVER


def test_cap_both_windows_reached_waits_for_the_later(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: cap, per_day: 1, per_week: 2, then: delay}\n")
    d = decide(p, "promo", person(sends={"promo": (NOW - 5 * DAY, NOW - HOUR)}), NOW)
    assert d.until == NOW + 2 * DAY and "per week" in d.reasons[0].detail


def test_cap_across_streams_and_monthly(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: cap, per_month: 2, streams: [promo, receipts], then: delay}\n")
    sends = {"promo": (NOW - 20 * DAY,), "receipts": (NOW - 10 * DAY,)}
    d = decide(p, "promo", person(sends=sends), NOW)
    assert d.until == NOW + 10 * DAY and "limit 2 per month" in d.reasons[0].detail


@pytest.mark.parametrize(("frequency", "sent_ago", "until"), [
    ("weekly", 3 * DAY, 4 * DAY),
    ("monthly", 10 * DAY, 20 * DAY),
    (None, 10 * DAY, None),
])
def test_cap_honours_the_persons_frequency(tmp_path: Path, frequency: str | None,
                                           sent_ago: float, until: float | None) -> None:
    p = policy(tmp_path, "- {if: cap, per_day: 1, then: delay}\n")
    state = person(sends={"promo": (NOW - sent_ago,)}, prefs=Preferences(frequency=frequency))
    d = decide(p, "promo", state, NOW)
    if until is None:
        assert d.action is Action.DELIVER
    else:
        assert (d.action, d.until, d.reasons[0].code) == (Action.DELAY, NOW + until, "frequency")
        assert str(frequency) in d.reasons[0].detail


def test_cap_words_name_the_window_that_holds(tmp_path: Path) -> None:
    """The detail's words are made only for the window that holds the mail: the same text."""
    p = policy(tmp_path, "- {if: cap, per_day: 5, per_week: 1, then: delay}\n")
    state = person(sends={"promo": (NOW - 2 * DAY,)}, prefs=Preferences(frequency="monthly"))
    d = decide(p, "promo", state, NOW)
    assert d.reasons == (Reason("frequency",
                                "1 sent in 30d, limit 1 (monthly, the person's choice)"),)
    assert decide(p, "promo", person(prefs=Preferences(frequency="weekly")), NOW).action \
        is Action.DELIVER  # nothing sent yet: no window holds


# --- quiet hours -----------------------------------------------------------------------

QUIET = "- {if: quiet_hours, start: '21:00', end: '08:00', zone: Europe/Berlin, " \
        "recipient_zone: true, then: delay}\n"


@pytest.mark.parametrize(("now", "until"), [
    (berlin(2027, 1, 15, 22, 30), berlin(2027, 1, 16, 8, 0)),  # evening: tomorrow morning
    (berlin(2027, 1, 15, 21, 0), berlin(2027, 1, 16, 8, 0)),  # the window starts at 21:00
    (berlin(2027, 1, 16, 3, 0), berlin(2027, 1, 16, 8, 0)),  # after midnight: this morning
    (berlin(2027, 1, 15, 8, 0), None),  # ...and ends at 08:00
    (berlin(2027, 1, 15, 20, 59), None),
    # DST: the night the clocks go forward is an hour shorter in UTC...
    (berlin(2027, 3, 27, 22, 0), utc(2027, 3, 28, 6, 0)),
    # ...and the night they go back an hour longer.
    (berlin(2027, 10, 30, 22, 0), utc(2027, 10, 31, 7, 0)),
])
def test_quiet_hours_across_midnight_and_dst(tmp_path: Path, now: float,
                                             until: float | None) -> None:
    d = decide(policy(tmp_path, QUIET), "promo", person(), now)
    assert d.until == until
    assert d.action is (Action.DELIVER if until is None else Action.DELAY)
    if until is not None:
        assert d.reasons[0].code == "quiet_hours" and "Europe/Berlin" in d.reasons[0].detail


def test_quiet_hours_dst_lengths() -> None:
    assert utc(2027, 3, 28, 6, 0) - berlin(2027, 3, 27, 22, 0) == 9 * HOUR
    assert utc(2027, 10, 31, 7, 0) - berlin(2027, 10, 30, 22, 0) == 11 * HOUR


def test_quiet_hours_in_the_recipients_zone(tmp_path: Path) -> None:
    p = policy(tmp_path, QUIET)
    now = berlin(2027, 1, 15, 12, 0)  # noon in Berlin, 23:00 in Sydney, 06:00 in New York
    sydney = person(prefs=Preferences(timezone="Australia/Sydney"))
    d = decide(p, "promo", sydney, now)
    until = datetime(2027, 1, 16, 8, 0, tzinfo=ZoneInfo("Australia/Sydney")).timestamp()
    assert (d.action, d.until) == (Action.DELAY, until)
    assert "Australia/Sydney" in d.reasons[0].detail
    ny = person(prefs=Preferences(timezone="America/New_York"))
    assert decide(p, "promo", ny, now).until == utc(2027, 1, 15, 13, 0)
    # A zone we cannot read falls back to the rule's zone (noon in Berlin: not quiet).
    bogus = person(prefs=Preferences(timezone="Mars/Olympus"))
    assert decide(p, "promo", bogus, now).action is Action.DELIVER
    fixed = policy(tmp_path, QUIET.replace("true", "false"))
    assert decide(fixed, "promo", sydney, now).action is Action.DELIVER


def test_quiet_hours_window_within_a_day(tmp_path: Path) -> None:
    p = policy(tmp_path, "- {if: quiet_hours, start: '12:00', end: '14:00', then: delay}\n")
    assert decide(p, "promo", person(), utc(2027, 1, 15, 13, 59)).until == utc(2027, 1, 15, 14)
    assert decide(p, "promo", person(), utc(2027, 1, 15, 14, 0)).action is Action.DELIVER
    assert decide(p, "promo", person(), utc(2027, 1, 15, 11, 59)).action is Action.DELIVER


# --- the shipped policy ----------------------------------------------------------------


def test_shipped_marketing_policy() -> None:
    p = load_policies(Path(__file__).resolve().parent.parent / "policies")
    ok = person(consents={"marketing": CONSENT["offers"]}, last_engaged=NOW - DAY)
    assert decide(p, "marketing", ok, NOW).action is Action.DELIVER
    d = decide(p, "marketing", person(consents={}), NOW)
    assert (d.action, d.drop_mode, d.reasons[0].code) == (Action.DROP, DropMode.REJECT,
                                                          "no_consent")
    night = berlin(2027, 1, 15, 23, 0)
    assert decide(p, "marketing", ok, night).until == berlin(2027, 1, 16, 8, 0)
    assert decide(p, "transactional", person(consents={}), night).action is Action.DELIVER
