"""Policy loader: good files load; every kind of mistake is reported with its file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxy.errors import PolicyError
from proxy.policy import Policy, Stream, load_policies
from proxy.policy.conditions import Cap, QuietHours
from proxy.types import Action, DropMode

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
version: "v7"
default_stream: promo
streams:
  promo:
    list: offers
    silence:
      lapsing: {sends: 5, or_days: 60, min_sends: 3}
    rules:
      - if: refused
        kinds: [unsubscribe, complaint]
        then: reject
      - if: cap
        stage: lapsing
        per_week: 1
        then: delay
      - if: no_consent
        then: {delay: 2d}
  receipts:
    kind: transactional
classify:
  - sender: "*@Shop.example.com"
    stream: receipts
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def errors_of(directory: Path) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policies(directory)
    return info.value.errors


def test_good_directory_loads(tmp_path: Path) -> None:
    policy = load_policies(write(tmp_path, "a.yaml", GOOD))
    assert isinstance(policy, Policy)
    assert policy.default_stream == "promo"
    assert policy.version.startswith("v7+") and len(policy.version) == len("v7+") + 12
    promo, receipts = policy.streams["promo"], policy.streams["receipts"]
    assert isinstance(promo, Stream)
    assert (promo.marketing, promo.list, promo.drop, promo.unsubscribe) == (
        True, "offers", DropMode.REJECT, "replace")
    assert promo.consent_required and promo.needs_state and not promo.shadow
    assert promo.default is Action.DELIVER
    refused, cap, consent = promo.rules
    assert refused.drop_mode is DropMode.REJECT and refused.action is Action.DROP
    assert refused.condition.kinds == {"unsubscribe", "complaint"}  # type: ignore[attr-defined]
    assert refused.where == f"{tmp_path / 'a.yaml'}:9"
    assert isinstance(cap.condition, Cap) and cap.condition.per_week == 1
    assert cap.stages == {"lapsing"} and cap.action is Action.DELAY and cap.delay is None
    assert consent.delay == 2 * 86400
    assert (receipts.marketing, receipts.unsubscribe, receipts.consent_required) == (
        False, "off", False)
    assert receipts.list == "receipts" and not receipts.needs_state
    assert policy.classification[0].senders == ("*@shop.example.com",)
    assert policy.files == (tmp_path / "a.yaml",)


def test_version_changes_with_content(tmp_path: Path) -> None:
    one = load_policies(write(tmp_path, "a.yaml", GOOD)).version
    two = load_policies(write(tmp_path, "a.yaml", GOOD + "# a comment\n")).version
    assert one != two and one.split("+")[0] == two.split("+")[0] == "v7"


def test_files_merge_in_name_order(tmp_path: Path) -> None:
    write(tmp_path, "20-b.yml", """\
        classify:
          - headers: {X-Kind: receipt}
            stream: receipts
        """)
    write(tmp_path, "10-a.yaml", GOOD)
    write(tmp_path, "notes.txt", "not: [policy")
    policy = load_policies(tmp_path)
    assert [p.name for p in policy.files] == ["10-a.yaml", "20-b.yml"]
    assert [c.stream for c in policy.classification] == ["receipts", "receipts"]
    assert policy.classification[1].headers == (("x-kind", "receipt"),)


def test_shipped_policies_load() -> None:
    policy = load_policies(ROOT / "policies")
    assert policy.default_stream == "marketing"
    assert set(policy.streams) >= {"marketing", "newsletter", "transactional"}
    marketing = policy.streams["marketing"]
    assert marketing.marketing and marketing.drop is DropMode.REJECT
    quiet = [r.condition for r in marketing.rules if isinstance(r.condition, QuietHours)]
    assert quiet and quiet[0].start == (21, 0) and quiet[0].zone.key == "Europe/Berlin"
    assert policy.streams["newsletter"].list == "weekly-digest"
    assert not policy.streams["transactional"].needs_state
    # The envelope-only marketing sender rule comes first: decidable at RCPT.
    assert policy.classification[0].senders == ("*@news.example.com",)
    assert policy.classification[1].stream_header == "X-Heed-Stream"


def test_missing_and_empty_directory(tmp_path: Path) -> None:
    assert "does not exist" in errors_of(tmp_path / "nope")[0]
    (tmp_path / "README").write_text("hi")
    [error] = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path}:1: ") and "no policy files" in error


def test_invalid_yaml_has_line(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "default_stream: x\nstreams:\n  x: {kind: [\n")
    [error] = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path / 'a.yaml'}:") and "invalid YAML" in error


def test_collects_every_error_with_lines(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """\
        default_stream: promo
        colour: blue
        streams:
          promo:
            drop: bounce
            shadow: "yes"
            rules:
              - if: sparkles
                then: drop
              - if: cap
                per_day: 0
                then: delay
              - if: refused
                then: delay
              - if: cap
                per_week: 2
                frequency: 3
                then: delay
              - if: quiet_hours
                start: "25:00"
                end: "8am"
                zone: Mars/Olympus
                then: delay
              - if: no_consent
                then: {delay: soon}
              - if: paused
                then: explode
              - if: lifecycle
                stage: lapsing
                then: drop
              - if: opted_out
                stage: [sleepy]
                then: drop
              - if: quiet_hours
                end: "08:00"
                then: delay
        classify:
          - headers: {X-Kind: bulk}
            stream: nowhere
          - stream: promo
          - sender: "*@x"
            stream: promo
            stream_from_header: X-S
        """)
    p = tmp_path / "a.yaml"
    errors = errors_of(tmp_path)
    expected = {
        2: "unknown key 'colour'",
        5: "drop must be one of reject, discard",
        6: "shadow: expected true or false",
        8: "unknown condition 'sparkles'",
        11: "cap.per_day: expected a whole number of at least 1",
        14: "'refused' gives no release time",
        17: "unknown key 'frequency' for condition 'cap'",
        20: "quiet_hours.start: expected a time like",
        21: "quiet_hours.end: expected a time like",
        22: "unknown time zone 'Mars/Olympus'",
        25: "then.delay: expected a duration",
        27: "then must be one of deliver, drop, reject, discard, delay",
        29: "stage 'lapsing' needs `silence: {lapsing: ...}`",
        32: "unknown stage",
        34: "condition 'quiet_hours' needs 'start'",
        39: "unknown stream 'nowhere'",
        40: "matches every message",
        41: "exactly one of `stream:` or `stream_from_header:`",
    }
    for line, text in expected.items():
        assert any(e.startswith(f"{p}:{line}: ") and text in e for e in errors), (line, errors)
    assert len(errors) == len(expected), errors


def test_stream_defined_twice_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", "streams:\n  other: {kind: transactional}\n  promo: {}\n")
    [error] = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path / 'b.yaml'}:3: ")
    assert f"already defined at {tmp_path / 'a.yaml'}:4" in error


def test_default_stream_missing_duplicate_or_unknown(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD.replace("default_stream: promo\n", ""))
    [error] = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path / 'a.yaml'}:1: ") and "no default_stream" in error

    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", "\n\ndefault_stream: receipts\n")
    [error] = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path / 'b.yaml'}:3: ")
    assert f"default_stream given twice (also at {tmp_path / 'a.yaml'}:2)" in error

    (tmp_path / "b.yaml").unlink()
    write(tmp_path, "a.yaml", GOOD.replace("default_stream: promo", "default_stream: gone"))
    [error] = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path / 'a.yaml'}:2: ") and "'gone' is not a stream" in error


def test_duplicate_keys_and_wrong_types(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", """\
        default_stream: promo
        streams:
          promo:
            list: offers
            list: deals
            silence: {lapsing: {sends: "many"}, inactive: {min_sends: 2}}
            rules: {if: refused}
        """)
    p = tmp_path / "a.yaml"
    errors = errors_of(tmp_path)
    assert any(e.startswith(f"{p}:5: ") and "'list' given twice" in e for e in errors), errors
    assert any(e.startswith(f"{p}:6: ") and "silence.lapsing.sends" in e for e in errors)
    assert any(e.startswith(f"{p}:6: ") and "needs sends or or_days" in e for e in errors)
    assert any(e.startswith(f"{p}:7: ") and "rules must be a list" in e for e in errors)


def test_cap_across_unknown_stream(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD.replace("per_week: 1", "per_week: 1\n        streams: [x]"))
    [error] = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path / 'a.yaml'}:12: ") and "unknown stream 'x'" in error


def test_unquoted_times_are_read_as_written(tmp_path: Path) -> None:
    # YAML 1.1 would make 21:00 the number 1260; the loader keeps the text.
    write(tmp_path, "a.yaml", """\
        default_stream: s
        streams:
          s:
            rules:
              - {if: quiet_hours, start: 21:30, end: 7:05, zone: UTC, then: delay}
        """)
    rule = load_policies(tmp_path).streams["s"].rules[0]
    assert isinstance(rule.condition, QuietHours)
    assert (rule.condition.start, rule.condition.end) == ((21, 30), (7, 5))


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", "- just\n- a list\n")
    [error] = errors_of(tmp_path)
    assert error.startswith(f"{tmp_path / 'b.yaml'}:1: ") and "must be a mapping" in error


def test_a_stream_without_keys_takes_the_defaults(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "default_stream: plain\nstreams:\n  plain:\n")
    stream = load_policies(tmp_path).streams["plain"]
    assert (stream.marketing, stream.list, stream.consent_required, stream.rules) == (
        True, "plain", True, ())


LABELLED = """\
version: "v1"
default_stream: digest
streams:
  digest:
    list: weekly-digest
    label:
      en: Weekly digest
      vi: Bản tin hằng tuần
    description: One email a week
  offers:
    label: Offers
  quiet:
    kind: marketing
  receipts:
    kind: transactional
"""


def test_labels_per_language_fall_back_to_english_for_that_stream_only(tmp_path: Path) -> None:
    policy = load_policies(write(tmp_path, "a.yaml", LABELLED))
    digest = policy.streams["digest"]
    assert digest.label("vi").text == "Bản tin hằng tuần" and digest.label("vi").lang == "vi"
    assert (digest.label("th").text, digest.label("th").lang) == ("Weekly digest", "en")
    assert digest.description("ar").text == "One email a week"  # one text is English
    assert policy.streams["offers"].label("ar").text == "Offers"
    assert policy.streams["quiet"].label("th").text == "quiet"  # no label: the list's name
    assert policy.list_label("weekly-digest", "vi").text == "Bản tin hằng tuần"
    assert policy.list_label("gone-list", "vi").text == "gone-list"
    # `heed check` warns, file:line, for each marketing stream missing a page language.
    path = tmp_path / "a.yaml"
    assert policy.warnings == (
        f"{path}:6: stream 'digest' has no label in ar, th; its pages show the English "
        "label there",
        f"{path}:11: stream 'offers' has no label in vi, ar, th; its pages show the English "
        "label there",
        f"{path}:13: stream 'quiet' has no label in en, vi, ar, th; its pages show the list "
        "name there",
    )


def test_label_mistakes_are_errors_with_lines(tmp_path: Path) -> None:
    errors = errors_of(write(tmp_path, "a.yaml", """\
        default_stream: a
        streams:
          a:
            label: {en: A, xx: Nope}
            description: {vi: ""}
          b:
            label: [A]
        """))
    assert any(e.endswith("a.yaml:4: label: unknown key 'xx' (expected one of en, vi, ar, th)")
               for e in errors), errors
    assert any(e.endswith("a.yaml:5: description.vi must not be empty") for e in errors), errors
    assert any(e.endswith("a.yaml:7: label: keys must be text") or "a.yaml:7: label" in e
               for e in errors), errors


def test_the_shipped_policy_has_every_label_in_every_language() -> None:
    policy = load_policies(ROOT / "policies")
    assert policy.warnings == ()
    for stream in policy.streams.values():
        if stream.marketing:
            assert set(stream.labels) == set(stream.descriptions) == {"en", "vi", "ar", "th"}
