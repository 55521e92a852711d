"""Line endings made safe and headers parsed once, for any bytes a client may send."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.message import Message, MessageRejected, normalise
from proxy.rewrite import add_unsubscribe


@pytest.mark.parametrize("ending", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r\r\n.\r\n",
                                    b"\r.\n", b"\n.\r"])
def test_smuggling_endings_become_plain_lines(ending: bytes) -> None:
    data = normalise(b"Subject: x\r\n\r\nbody" + ending + b"MAIL FROM:<e@x>\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b".", b" "]), max_size=40))
def test_only_bare_endings_change_and_all_of_them_do(parts: list[bytes]) -> None:
    raw = b"".join(parts)
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", raw)  # CRLF stays, bare CR/LF -> CRLF
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert normalise(raw) == expected


def test_nul_is_refused() -> None:
    with pytest.raises(MessageRejected):
        normalise(b"Subject: x\r\n\r\na\x00b\r\n")


def test_broken_headers_are_kept_but_not_matched() -> None:
    m = Message.parse(normalise(b"no colon here\r\nSubject: ok\r\n \tfolded\r\n:\r\n\r\nbody"))
    assert m.get("Subject") == "ok \tfolded"  # RFC 5322 §2.2.3: unfolding drops CRLF only
    assert m.data.startswith(b"no colon here\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_are_refused_cleanly(raw: bytes) -> None:
    try:
        data = normalise(raw)
    except MessageRejected:
        assert b"\x00" in raw
        return
    m = Message.parse(data)
    out = add_unsubscribe(m.header_block, https_url="https://h.test/u/T",
                          mailto="unsubscribe+T@h.test").headers
    assert out.endswith(b"\r\n") and b"List-Unsubscribe-Post" in out
    assert m.body in data
