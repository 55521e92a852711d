"""Header rewrite: both RFC 8058 fields, replace and keep, folding, body untouched."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.rewrite import add_unsubscribe, header_fields, split_message

URL = "https://heed.example/u/TOKEN123"
MAILTO = "unsubscribe+TOKEN123@heed.example"
HEAD = (
    b"Received: from tool.example by heed; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"From: News <news@example.com>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: Hello\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
)
BODY = b"Line one  \r\n.leading dot\r\n\xe2\x82\xac 8bit \t\r\n\r\n\r\n"


def parse(head: bytes) -> email.message.Message:
    return email.message_from_bytes(head + b"\r\n", policy=email.policy.compat32)


def test_split_message_keeps_the_body_byte_for_byte() -> None:
    head, body = split_message(HEAD + b"\r\n" + BODY)
    assert (head, body) == (HEAD, BODY)


def test_adds_both_fields_after_the_existing_ones() -> None:
    result = add_unsubscribe(HEAD, https_url=URL, mailto=MAILTO)
    assert result.headers.startswith(HEAD)  # trace fields stay on top
    msg = parse(result.headers)
    assert msg["List-Unsubscribe"].replace("\r\n", "") == f"<{URL}>, <mailto:{MAILTO}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert result.replaced == []
    assert result.headers.endswith(b"\r\n")


def test_short_header_on_one_line_long_one_folded_between_uris() -> None:
    short = add_unsubscribe(b"", https_url="https://h.example/u/T", mailto="u+T@h.example")
    assert short.headers.split(b"\r\n")[0] == (
        b"List-Unsubscribe: <https://h.example/u/T>, <mailto:u+T@h.example>"
    )
    token = "A" * 30
    long = add_unsubscribe(b"", https_url=f"https://h.example/u/{token}",
                           mailto=f"unsubscribe+{token}@h.example")
    lines = long.headers.split(b"\r\n")
    assert lines[0] == f"List-Unsubscribe: <https://h.example/u/{token}>,".encode()
    assert lines[1] == f" <mailto:unsubscribe+{token}@h.example>".encode()
    assert all(len(line) <= 78 for line in lines)


def test_replaces_a_folded_existing_field_and_reports_its_https_uri() -> None:
    theirs = (
        b"list-unsubscribe: <mailto:leave@tool.example?subject=x>,\r\n"
        b"\t<https://tool.example/unsub?id=42&l=7>\r\n"
        b"List-Unsubscribe-POST: List-Unsubscribe=One-Click\r\n"
    )
    result = add_unsubscribe(HEAD + theirs + b"X-Tail: 1\r\n", https_url=URL, mailto=MAILTO)
    msg = parse(result.headers)
    assert len(msg.get_all("List-Unsubscribe") or []) == 1
    assert len(msg.get_all("List-Unsubscribe-Post") or []) == 1
    assert URL in msg["List-Unsubscribe"]
    assert b"tool.example/unsub" not in result.headers
    assert b"\t<https" not in result.headers  # the continuation line went with its field
    assert msg["X-Tail"] == "1"
    assert result.replaced == ["https://tool.example/unsub?id=42&l=7"]


def test_keep_leaves_the_tools_own_field_and_adds_nothing() -> None:
    theirs = b"List-Unsubscribe: <https://tool.example/unsub?id=42>\r\n"
    result = add_unsubscribe(HEAD + theirs, https_url=URL, mailto=MAILTO, existing="keep")
    assert result.headers == HEAD + theirs
    assert result.kept and result.replaced == []


def test_keep_adds_ours_when_the_tool_wrote_none() -> None:
    result = add_unsubscribe(HEAD, https_url=URL, mailto=MAILTO, existing="keep")
    assert not result.kept
    assert URL.encode() in result.headers


def test_whole_message_body_is_untouched() -> None:
    head, body = split_message(HEAD + b"\r\n" + BODY)
    result = add_unsubscribe(head, https_url=URL, mailto=MAILTO)
    rebuilt = result.headers + b"\r\n" + body
    assert rebuilt.endswith(b"\r\n\r\n" + BODY)
    assert split_message(rebuilt)[1] == BODY


def test_mailto_prefix_is_not_doubled() -> None:
    result = add_unsubscribe(b"", https_url=URL, mailto="mailto:" + MAILTO)
    assert b"<mailto:mailto:" not in result.headers


def test_header_injection_is_refused() -> None:
    for url in (URL + "\r\nBcc: x@evil.example", URL + ">, <https://evil.example"):
        with pytest.raises(ValueError):
            add_unsubscribe(HEAD, https_url=url, mailto=MAILTO)
    with pytest.raises(ValueError):
        add_unsubscribe(HEAD, https_url=URL, mailto=MAILTO, existing="merge")


def test_header_fields_keeps_continuations_with_their_field() -> None:
    block = b"A: 1\r\n 2\r\nB: 3\r\n\t4\r\n 5\r\nC: 6\r\n"
    assert header_fields(block) == [b"A: 1\r\n 2\r\n", b"B: 3\r\n\t4\r\n 5\r\n", b"C: 6\r\n"]
    assert b"".join(header_fields(b" stray\r\nA: 1\r\n")) == b" stray\r\nA: 1\r\n"


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from([b"A: 1", b"\r\n", b"\r", b"\n", b" ", b"\t", b"x", b":"]),
                max_size=14))
def test_header_fields_cuts_where_a_field_starts(pieces: list[bytes]) -> None:
    # The cut as first written: at each line start after a CRLF that is not a continuation.
    block = b"".join(pieces)
    reference = [f for f in re.split(rb"(?<=\r\n)(?![ \t])", block) if f]
    assert header_fields(block) == reference
