"""What heed keeps of the tool's own List-Unsubscribe (RFC 2369, RFC 8058), and the mailto mail."""

from __future__ import annotations

import pytest

from proxy.message import Message
from proxy.tell.mailto import BadMailto, parse_mailto, unsubscribe_mail
from proxy.tell.offer import Offer, personal, read_offer


def msg(*fields: str) -> Message:
    return Message.parse(("\r\n".join(fields) + "\r\n\r\nbody\r\n").encode())


def test_read_offer() -> None:
    both = msg("To: a@example.org", "List-Unsubscribe: <mailto:u@t.test?subject=x>,\r\n"
               " <https://t.test/u/1>", "List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    assert read_offer(both) == Offer("https://t.test/u/1", True, "mailto:u@t.test?subject=x")
    plain = msg("List-Unsubscribe: <https://t.test/u/1>")
    assert read_offer(plain) == Offer("https://t.test/u/1", False, "")
    # The Post field alone, beside only a mailto, is not one-click (RFC 8058 §3.1).
    post_only = msg("List-Unsubscribe: <mailto:u@t.test>",
                    "List-Unsubscribe-Post: List-Unsubscribe=One-Click")
    assert read_offer(post_only) == Offer("", False, "mailto:u@t.test")
    long = msg(f"List-Unsubscribe: <https://t.test/{'x' * 3000}>, <mailto:u@t.test>")
    assert read_offer(long) == Offer("", False, "mailto:u@t.test")
    assert read_offer(msg("Subject: none")) is None
    assert read_offer(msg("List-Unsubscribe: <ftp://t.test/x>")) is None
    assert Offer.from_json(Offer("https://t.test/u", True, "").to_json(5.0)) == (
        Offer("https://t.test/u", True, ""), 5.0)
    assert Offer.from_json("not json") is None


def test_personal_means_written_to_that_person_alone() -> None:
    assert personal(msg("To: Ana <Ana@Example.org>"), "ana@example.org")
    assert not personal(msg("To: ana@example.org, bo@example.org"), "ana@example.org")
    assert not personal(msg("To: list@example.org"), "ana@example.org")
    assert not personal(msg("Subject: no To"), "ana@example.org")


def test_mailto_parsing_and_the_mail() -> None:
    assert parse_mailto("mailto:u@t.test?subject=leave%2077&body=please") == (
        "u@t.test", "leave 77", "please")
    assert parse_mailto("mailto:?to=u@t.test") == ("u@t.test", "unsubscribe", "unsubscribe")
    # A subject that would start a new header field falls back to the default.
    assert parse_mailto("mailto:u@t.test?subject=x%0D%0ABcc:%20e@evil.test")[1] == "unsubscribe"
    for bad in ("mailto:a@t.test,b@t.test", "mailto:not-an-address", "https://t.test/"):
        with pytest.raises(BadMailto):
            parse_mailto(bad)
    to, data = unsubscribe_mail("mailto:u@t.test", "s@heed.test", "job1", 1_800_000_000,
                                "heed.test")
    assert to == "u@t.test" and b"Message-ID: <job1@heed.test>\r\n" in data
    assert data.endswith(b"\r\n\r\nunsubscribe\r\n")
