"""The header block read once (proxy/copy/head.py) and the shortcuts built on it write the
same bytes as the email package's own reading, on real mail and on generated header blocks.

Real mail: sisimai's set-of-emails (HEED_SET_OF_EMAILS) and the newsletter templates
(HEED_NEWSLETTER_MIRRORS), read at run time as in tests/test_bounce_corpus.py and
tests/test_bodylink.py; skipped, naming the variable, when absent. The reference is the
same code with every shortcut turned off: the header block through BytesHeaderParser, the
whole message through email.message_from_bytes, and each copy rendered even without links.
"""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import os
import quopri
import subprocess
import time
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proxy.copy.head
import proxy.finish
from proxy.bulk.bodylink import readable
from proxy.clock import ManualClock
from proxy.copy import personal
from proxy.copy.head import read_head
from proxy.dkim import DkimSigner
from proxy.finish import UnsubscribeAndSign
from proxy.message import Message, MessageRejected, normalise, split
from proxy.policy import Stream
from proxy.policy.bulk import BulkRules
from proxy.settings import UnsubscribeKey
from proxy.tokens import TokenSigner
from tests.dkim_keys import dkimpy_verify

SET_OF_EMAILS = Path(os.environ.get("HEED_SET_OF_EMAILS",
                                    "/work/.mirror/sisimai+set-of-emails/repo"))
MIRRORS = Path(os.environ.get("HEED_NEWSLETTER_MIRRORS", "/work/.mirror"))
TEMPLATES = ("leemunroe+responsive-html-email-template", "mailchimp+email-blueprints",
             "mjmlio+email-templates")
PARSER = BytesHeaderParser(policy=email.policy.compat32)


def _files(git_dir: Path, keep: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """The files of HEAD whose path starts or ends with ``keep``, read by one git process."""
    listing = subprocess.run(["git", "--git-dir", str(git_dir), "ls-tree", "-r", "HEAD"],
                             capture_output=True, check=True).stdout.decode().splitlines()
    entries = [(line.split("\t", 1)[1], line.split()) for line in listing]
    wanted = [(name, meta[2]) for name, meta in entries
              if meta[1] == "blob" and (name.startswith(keep) or name.endswith(keep))]
    out = subprocess.run(["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
                         input="".join(f"{sha}\n" for _, sha in wanted).encode(),
                         capture_output=True, check=True).stdout
    at = 0
    for name, _ in wanted:
        header_end = out.index(b"\n", at)
        size = int(out[at:header_end].split()[2])
        yield name, out[header_end + 1:header_end + 1 + size]
        at = header_end + 1 + size + 1


def _newsletter(html: bytes) -> Iterator[bytes]:
    """A template as a tool sends it: base64, 8bit, and in multipart/alternative (QP)."""
    head = (b"From: News <news@example.com>\r\nTo: a@example.org\r\nSubject: News\r\n"
            b"Message-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n")
    yield (head + b"Content-Type: text/html; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n"
           + base64.encodebytes(html).replace(b"\n", b"\r\n"))
    yield head + b'Content-Type: text/html; charset="UTF-8"\r\n\r\n' + html
    yield (head + b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n--b1\r\n'
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello https://x.example/a\r\n"
           b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
           + quopri.encodestring(html.replace(b"\r\n", b"\n")) + b"\r\n--b1--\r\n")


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, bytes]]:
    if not (SET_OF_EMAILS / "HEAD").exists():
        pytest.skip(f"no sisimai/set-of-emails at {SET_OF_EMAILS}: set HEED_SET_OF_EMAILS "
                    "to a bare git repository of it")
    found = []
    for name, raw in _files(SET_OF_EMAILS, ("maildir/", "to-be-debugged")):
        try:
            found.append((name, normalise(raw)))
        except MessageRejected:
            continue
    for repo in TEMPLATES:
        if not (MIRRORS / repo / "repo").is_dir():
            pytest.skip(f"newsletter corpus {MIRRORS / repo} absent (set "
                        "HEED_NEWSLETTER_MIRRORS)")
        for name, html in _files(MIRRORS / repo / "repo", (".html", ".mjml")):
            found += [(f"{name} #{i}", normalise(m)) for i, m in enumerate(_newsletter(html))]
    return found


def _same_as_parser(block: bytes) -> None:
    head, reference = read_head(block), PARSER.parsebytes(block)
    assert head.fields.items() == reference.items()
    assert head.fields.get_payload() == reference.get_payload()
    if head.whole:
        # The whole message read by the email package has these fields and the body
        # split() cuts: what readable() and the footer rely on.
        whole = email.message_from_bytes(block + b"\r\nbody\r\n", policy=email.policy.compat32)
        assert whole.items() == reference.items()
        if whole.get_content_maintype() not in ("multipart", "message"):
            assert whole.get_payload() == "body\r\n"


def test_read_head_matches_the_email_package_on_real_mail(
        corpus: list[tuple[str, bytes]]) -> None:
    for _, data in corpus:
        _same_as_parser(split(data)[0])


_LINE = st.one_of(
    st.builds(lambda n, v: n + b":" + v, st.sampled_from(
        [b"Subject", b"Content-Type", b"content-transfer-encoding", b"X-A", b"", b"From",
         b"Content-Language", b"Bad Name", b"\xc3\xa9"]),
        st.binary(max_size=12)),
    st.builds(lambda v: b" " + v, st.binary(max_size=8)),
    st.builds(lambda v: b"\t" + v, st.binary(max_size=8)),
    st.sampled_from([b"From a@b Mon Jan  1 00:00:00 2024", b"no colon here", b"",
                     b"Content-Type: multipart/mixed; boundary=x",
                     b"Content-Type: message/rfc822", b"Content-Type: text/html; charset=utf-8"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_LINE, max_size=6))
def test_read_head_matches_the_email_package_on_any_block(lines: list[bytes]) -> None:
    _same_as_parser(b"".join(line + b"\r\n" for line in lines))


def test_one_parse_reads_the_text_as_the_whole_message_does(
        corpus: list[tuple[str, bytes]]) -> None:
    for _, data in corpus:
        assert readable(data, read_head(split(data)[0])) == readable(data)


def _copies(corpus: list[tuple[str, bytes]], key, now: float) -> list[bytes]:  # noqa: ANN001
    clock = ManualClock(now)  # the same t= in both runs, and now for the verifier
    tokens = TokenSigner((UnsubscribeKey("k", b"0123456789abcdef0123"),), clock, 90 * 86400.0)
    owner = UnsubscribeAndSign(tokens, DkimSigner([key], clock), public_url="https://heed.test",
                               mailto_domain="heed.test", bounce_domain="heed.test")
    shipped = Stream("marketing", track_clicks=True, bulk=BulkRules(body_unsubscribe="insert"))
    streams = (shipped, dataclasses.replace(shipped, track_opens=True,
                                            bulk=BulkRules(body_unsubscribe="check")))
    out = []
    for n, (_, data) in enumerate(corpus):
        for stream in streams:
            prepared = owner.prepare(Message.parse(data))
            out.append(repr(sorted(prepared.destinations([stream]).items())).encode())
            out.append(prepared.facts(stream).body_link.encode())
            for k, ask in ((0, False), (1, stream is shipped)):
                personal.copy_id = lambda n=n, k=k: f"c{n}-{k}"  # type: ignore[misc]
                out.append(prepared.build(stream, f"r{k}@example.org", ask=ask))
    return out


def test_copies_are_byte_for_byte_those_of_the_long_way(
        corpus: list[tuple[str, bytes]], ed_key, zone,  # noqa: ANN001
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(personal, "copy_id", personal.copy_id)  # restored after the test
    now = time.time()
    fast = _copies(corpus, ed_key[0], now)
    with monkeypatch.context() as long_way:
        long_way.setattr(proxy.copy.head, "_fields", lambda block: None)
        long_way.setattr(proxy.finish, "readable",
                         lambda data, head=None: readable(data))
        long_way.setattr(personal.PersonalBody, "_tracked", lambda self, stream: True)
        slow = _copies(corpus, ed_key[0], now)
    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow, strict=True)):
        assert a == b, f"copy {i} differs"
    signed = [c for c in fast if c.startswith(b"DKIM-Signature:")]
    # Ed25519 (RFC 8463): the signature step is the same and costs least here.
    assert signed and all(dkimpy_verify(c, zone) for c in signed[::97])
