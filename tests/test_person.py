"""proxy/person.py: a person's raw replies, as redis-py or as a script gives them, read alike."""

from __future__ import annotations

import json

from proxy.person import person

CONSENT = json.dumps({"list": "marketing", "granted_at": 1_800_000_000.0, "source": "form",
                      "ip": "192.0.2.1", "text": "yes please"}).encode()
REFUSAL = json.dumps({"kind": "unsubscribe", "at": 1_800_000_100.0, "channel": "one-click"})


def test_script_replies_read_as_redis_py_replies() -> None:
    # redis-py: HGETALL -> dict, ZRANGEBYSCORE WITHSCORES -> [(member, float)].
    as_client = person(
        "a@example.org", {b"marketing": CONSENT}, {b"news": REFUSAL.encode()},
        {b"sends_since": b"2", b"total_sends": b"5", b"last_engaged": b"1800000050.5"},
        {b"timezone": b"Europe/Paris", b"off": b'["news"]'},
        [(b"marketing|00aa", 1_800_000_200.25), (b"news|00bb", 1_800_000_300.0)],
        [(b"b@example.org", 1_800_000_000.0)], suppressed=0)
    # READ_PERSON (proxy/scripts.py): flat field/value and member/score lists, scores as text.
    as_script = person(
        "a@example.org", [b"marketing", CONSENT], [b"news", REFUSAL.encode()],
        [b"sends_since", b"2", b"total_sends", b"5", b"last_engaged", b"1800000050.5"],
        [b"timezone", b"Europe/Paris", b"off", b'["news"]'],
        [b"marketing|00aa", b"1800000200.25", b"news|00bb", b"1800000300"],
        [(b"b@example.org", 1_800_000_000.0)], suppressed=0)
    assert as_script == as_client
    assert as_script.sends == {"marketing": (1_800_000_200.25,), "news": (1_800_000_300.0,)}
    assert as_script.sends_since_engagement == 2 and as_script.total_sends == 5
    assert "marketing" in as_script.consents and "news" in as_script.refusals
    assert as_script.domain_complaints == (1_800_000_000.0,)


def test_nothing_stored_is_an_empty_person() -> None:
    empty = person("a@example.org", [], [], [], [], [], None, suppressed=False)
    assert empty == person("a@example.org", {}, {}, {}, {}, [], None, suppressed=False)
    assert not empty.consents and not empty.refusals and empty.sends == {}
