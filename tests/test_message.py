"""Line endings made safe and headers parsed once, for any bytes a client may send."""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.message import Message, MessageRejected, fit_long_lines, has_long_lines, normalise
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


def test_long_lines_are_re_encoded_quoted_printable_and_nothing_else_changes() -> None:
    long_html = "<p>" + "y" * 3000 + "\u20ac</p>"
    data = ("From: a@example.com\r\nSubject: s\r\n  folded\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/alternative; boundary="B"\r\n\r\npre\r\n'
            "--B\r\nContent-Type: text/plain\r\n\r\nshort\r\n"
            "--B\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
            f"\r\n{long_html}\r\n--B--\r\n").encode()
    assert has_long_lines(data)
    out = fit_long_lines(data)
    assert not has_long_lines(out)
    assert out.startswith(b"From: a@example.com\r\nSubject: s\r\n  folded\r\n")
    assert b"--B\r\nContent-Type: text/plain\r\n\r\nshort\r\n" in out  # other parts as they were
    parsed = email.message_from_bytes(out, policy=email.policy.default)
    html = [p for p in parsed.walk() if p.get_content_type() == "text/html"][0]
    assert html["Content-Transfer-Encoding"] == "quoted-printable"
    assert html.get_content().strip() == long_html
    short = b"From: a@example.com\r\n\r\n" + b"z" * 998 + b"\r\n"
    assert not has_long_lines(short) and fit_long_lines(short) == short


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1200), st.sampled_from([b"\r\n", b"\r", b"\n", b""])),
                max_size=6))
def test_has_long_lines_finds_999_octets_between_line_ends(lines: list[tuple[int, bytes]]) -> None:
    """The definition: 999 octets without CR or LF (RFC 5321 §4.5.3.1.6), any line ends."""
    body = b"".join(b"x" * n + end for n, end in lines)
    assert has_long_lines(body) == (re.search(rb"[^\r\n]{999}", body) is not None)
