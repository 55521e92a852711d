"""DKIM signing checked by independent verifiers: dkimpy with a local DNS function, and OpenDKIM."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import dkim
import pytest
from dkim.util import parse_tag_value
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import dkim as heed_dkim
from proxy.clock import ManualClock
from proxy.dkim import DkimSigner, from_domain, generate_key
from proxy.errors import ConfigError
from proxy.rewrite import add_unsubscribe, split_message
from proxy.settings import DkimKey
from tests.dkim_keys import Verifier, dkimpy_verify

MESSAGE = (
    b"From: News <news@example.com>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: This week's news,\r\n  folded  over two lines\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"List-Id: News <news.example.com>\r\n"
    b"X-Mailer: tool\r\n"
    b"\r\n"
    b"Hello  \r\n\xe2\x82\xac and more\r\n\r\n\r\n"
)


def recipient_copy(signer: DkimSigner, message: bytes, recipient: str) -> bytes:
    head, body = split_message(message)
    head = head.replace(b"alice@example.org", recipient.encode())
    token = recipient.replace("@", "-at-")
    head = add_unsubscribe(head, https_url=f"https://heed.example/u/{token}",
                           mailto=f"unsubscribe+{token}@heed.example").headers
    return signer.prepare("example.com", body).sign(head) + head + b"\r\n" + body


def sig_tags(message: bytes, idx: int = 0) -> dict[bytes, bytes]:
    fields = [v for n, v in dkim.rfc822_parse(message)[0] if n.lower() == b"dkim-signature"]
    return parse_tag_value(fields[idx])


def test_signature_verifies_with_dkimpy(rsa_key: tuple[DkimKey, str], zone: dict) -> None:
    signed = recipient_copy(DkimSigner([rsa_key[0]]), MESSAGE, "alice@example.org")
    assert dkimpy_verify(signed, zone)
    tags = sig_tags(signed)
    assert (tags[b"a"], tags[b"c"], tags[b"d"], tags[b"s"]) == (
        b"rsa-sha256", b"relaxed/relaxed", b"example.com", b"s2048")


def test_h_covers_the_required_fields_and_oversigns(rsa_key: tuple[DkimKey, str]) -> None:
    signed = recipient_copy(DkimSigner([rsa_key[0]]), MESSAGE, "alice@example.org")
    h = [x.strip() for x in sig_tags(signed)[b"h"].replace(b"\r\n", b"").split(b":")]
    for name in (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                 b"content-type", b"content-transfer-encoding", b"list-id"):
        assert name in h
    # RFC 8058 §3.3 both fields signed; RFC 6376 §8.15 one extra time each.
    assert h.count(b"list-unsubscribe") == 2
    assert h.count(b"list-unsubscribe-post") == 2
    assert h.count(b"from") == 2
    assert b"x-mailer" not in h


@pytest.mark.parametrize("added", [
    b"List-Unsubscribe: <https://evil.example/u/x>\r\n",
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
    b"From: someone@evil.example\r\n",
])
def test_a_field_added_after_signing_breaks_verification(
    rsa_key: tuple[DkimKey, str], zone: dict, added: bytes
) -> None:
    signed = recipient_copy(DkimSigner([rsa_key[0]]), MESSAGE, "alice@example.org")
    assert dkimpy_verify(signed, zone)
    head, body = split_message(signed)
    assert not dkimpy_verify(head + added + b"\r\n" + body, zone)


def test_body_hashed_once_for_many_recipients(
    rsa_key: tuple[DkimKey, str], zone: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    relaxed_body = heed_dkim.relaxed_body

    def counting(body: bytes) -> bytes:
        calls.append(len(body))
        return relaxed_body(body)

    monkeypatch.setattr(heed_dkim, "relaxed_body", counting)
    signer = DkimSigner([rsa_key[0]])
    head, body = split_message(MESSAGE)
    prepared = signer.prepare("example.com", body)
    copies = []
    for rcpt in ("a@example.org", "b@example.net", "c@example.com"):
        h = add_unsubscribe(head.replace(b"alice@example.org", rcpt.encode()),
                            https_url=f"https://heed.example/u/{rcpt}",
                            mailto=f"unsubscribe+{rcpt.replace('@', '.')}@heed.example").headers
        copies.append(prepared.sign(h) + h + b"\r\n" + body)
    assert len(calls) == 1
    monkeypatch.undo()
    assert all(dkimpy_verify(c, zone) for c in copies)
    assert len({sig_tags(c)[b"b"] for c in copies}) == 3


def test_ed25519_second_signature(rsa_key: tuple[DkimKey, str], ed_key: tuple[DkimKey, str],
                                  zone: dict) -> None:
    signed = recipient_copy(DkimSigner([ed_key[0], rsa_key[0]]), MESSAGE, "alice@example.org")
    assert sig_tags(signed, 0)[b"a"] == b"rsa-sha256"  # RSA on top whatever the config order
    assert sig_tags(signed, 1)[b"a"] == b"ed25519-sha256"
    assert dkimpy_verify(signed, zone, 0)
    pytest.importorskip("nacl", reason="dkimpy verifies ed25519 with PyNaCl")
    assert dkimpy_verify(signed, zone, 1)
    head, body = split_message(signed)
    assert not dkimpy_verify(head + b"\r\n" + body + b"tampered\r\n", zone, 1)


def test_output_is_what_dkimpy_itself_would_write(rsa_key: tuple[DkimKey, str]) -> None:
    # RSASSA-PKCS1-v1_5 is deterministic: same tags, same time -> same bytes.
    key = rsa_key[0]
    head, body = split_message(MESSAGE)
    theirs = dkim.sign(MESSAGE, b"s2048", b"example.com", key.key_file.read_bytes(),
                       canonicalize=(b"relaxed", b"relaxed"),
                       include_headers=[n for n in heed_include(head)])
    t = int(parse_tag_value(theirs.split(b":", 1)[1])[b"t"])
    ours = DkimSigner([key], ManualClock(t)).prepare("example.com", body).sign(head)
    assert ours == theirs


def heed_include(head: bytes) -> list[bytes]:
    names = [n.lower() for n, _ in dkim.rfc822_parse(head + b"\r\n")[0]]
    return [n for n in names if n in heed_dkim.SIGNED] + list(heed_dkim.OVERSIGNED)


def test_t_and_x_come_from_the_clock(rsa_key: tuple[DkimKey, str]) -> None:
    signer = DkimSigner([rsa_key[0]], ManualClock(1_800_000_000.0), expire_after=7 * 86400)
    tags = sig_tags(signer.sign_message(MESSAGE))
    assert (tags[b"t"], tags[b"x"]) == (b"1800000000", b"1800604800")


def test_domain_without_key_is_left_unsigned(rsa_key: tuple[DkimKey, str]) -> None:
    signer = DkimSigner([rsa_key[0]])
    assert signer.for_domain("EXAMPLE.com")
    assert signer.for_domain("other.example") == []
    # A parent's key signs a subdomain (the same organisational domain: DMARC relaxed).
    assert [k.domain for k in signer.for_domain("sub.example.com")] == ["example.com"]
    assert signer.for_domain("com") == [] and signer.for_domain("notexample.com") == []
    assert signer.prepare("other.example", b"x\r\n").sign(b"From: a@other.example\r\n") == b""


def test_from_domain() -> None:
    assert from_domain(b"To: x@y\r\nFROM: \"A, B\" <a@Mail.Example.COM>\r\n") == "mail.example.com"
    assert from_domain(b"From: a@x.example,\r\n b@y.example\r\n") == "x.example"
    assert from_domain(b"To: x@y\r\n") is None
    assert from_domain(b"From: undisclosed\r\n") is None


def test_bad_keys_are_config_errors(tmp_path: Path, rsa_key: tuple[DkimKey, str],
                                    ed_key: tuple[DkimKey, str]) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError) as info:
        DkimSigner([
            DkimKey("example.com", "a", tmp_path / "missing.pem"),
            DkimKey("example.com", "b", garbage),
            DkimKey("example.com", "c", ed_key[0].key_file),  # ed25519 key, rsa algorithm
            DkimKey("example.com", "d", rsa_key[0].key_file, "rsa-sha1"),
        ])
    assert len(info.value.errors) == 4
    assert info.value.errors[0].startswith(f"{tmp_path / 'missing.pem'}: cannot read")
    assert info.value.errors[1].startswith(f"{garbage}: ")


def test_generate_key_file_and_record(tmp_path: Path) -> None:
    path, record = generate_key("example.net", "sel", tmp_path / "keys")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert record.startswith('sel._domainkey.example.net. IN TXT "v=DKIM1; k=rsa; p=MII')
    strings = record.split(" IN TXT ", 1)[1].split('" "')
    assert len(strings) == 2 and all(len(s.strip('"')) <= 255 for s in strings)
    with pytest.raises(ConfigError):
        generate_key("example.net", "sel", tmp_path / "keys")  # never overwrite
    path, record = generate_key("example.net", "ed", tmp_path / "keys", algorithm="ed25519")
    assert 'k=ed25519; p=' in record and record.count('"') == 2
    assert DkimSigner([DkimKey("example.net", "ed", path, "ed25519-sha256")]).for_domain(
        "example.net")
    with pytest.raises(ConfigError):
        generate_key("example.net", "small", tmp_path, bits=512)


@pytest.mark.parametrize("which", ["rsa", "ed25519"])
def test_signature_verifies_with_opendkim(opendkim: Verifier, rsa_key: tuple[DkimKey, str],
                                          ed_key: tuple[DkimKey, str], which: str) -> None:
    key = rsa_key[0] if which == "rsa" else ed_key[0]
    signed = recipient_copy(DkimSigner([key]), MESSAGE, "alice@example.org")
    assert opendkim(signed) == (0, "")
    head, body = split_message(signed)
    code, output = opendkim(head + b"\r\n" + body.replace(b"Hello", b"Hallo"))
    assert code != 0 and "Bad signature" in output
    code, output = opendkim(head + b"List-Unsubscribe: <https://evil.example/>\r\n\r\n" + body)
    assert code != 0 and "Bad signature" in output


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"b ", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r",
                                 b"\n", b"\xc3\xa9", b"."]), max_size=60).map(b"".join))
def test_relaxed_body_is_dkimpys(body: bytes) -> None:
    """The fast body canonicalization gives dkimpy's bytes for any mix of WSP and line ends."""
    assert heed_dkim.relaxed_body(body) == heed_dkim.CANON.canonicalize_body(body)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"B ", b" ", b"  ", b"\t", b" \t ", b"\r\n ", b"\r",
                                 b"\n", b"\r\n", b"\xc3\xa9", b";", b"\x0b"]),
                max_size=40).map(b"".join))
def test_relaxed_header_is_dkimpys(value: bytes) -> None:
    """One field's fast canonicalization gives dkimpy's bytes for any WSP and line ends."""
    for name in (b"Subject", b"LIST-Unsubscribe"):
        assert heed_dkim.relaxed_header(name, value) == \
            heed_dkim.CANON.canonicalize_headers([(name, value)])[0]


def dkimpy_parse(header_block: bytes) -> list[tuple[bytes, bytes]]:
    """What heed's _parse gave before: dkimpy's parser over the well-formed fields."""
    clean = b"".join(f for f in heed_dkim.header_fields(header_block)
                     if heed_dkim._NAME.match(f))
    return [(bytes(n), bytes(v)) for n, v in dkim.rfc822_parse(clean + b"\r\n")[0]]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([b"Subject:", b"From: a", b"X-A:b", b"To :", b"broken",
                                 b" ", b"\t", b"x", b"\r\n", b"\r\n ", b"\r", b"\n",
                                 b"\n ", b":"]), max_size=30).map(b"".join))
def test_field_parse_is_dkimpys(header_block: bytes) -> None:
    """The field split gives what dkimpy's rfc822_parse gave (or fails where it failed)."""
    try:
        expected = dkimpy_parse(header_block)
    except dkim.MessageFormatError:
        with pytest.raises(dkim.MessageFormatError):
            heed_dkim._parse(header_block)
        return
    assert heed_dkim._parse(header_block) == expected


_NAMES = st.sampled_from([b"from", b"to", b"subject", b"list-unsubscribe", b"x"])


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.sampled_from([b" a\r\n", b" b\r\n", b" c\r\n"])),
                max_size=8),
       st.lists(_NAMES, max_size=10))
def test_field_selection_is_dkimpys(headers: list[tuple[bytes, bytes]],
                                    include: list[bytes]) -> None:
    # Each h= name takes the last instance not yet taken, bottom up (RFC 6376 §5.4.2).
    assert heed_dkim._select(headers, tuple(include)) == dkim.select_headers(headers, include)


_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(names=st.lists(st.sampled_from(heed_dkim.SIGNED + (b"x-mailer", b"received")),
                     max_size=20),
       labels=st.lists(_LABEL, min_size=1, max_size=4), selector=_LABEL,
       expire=st.sampled_from([0, 86400]), ed=st.booleans())
def test_signature_folds_as_dkimpy_would(rsa_key: tuple[DkimKey, str],
                                         ed_key: tuple[DkimKey, str], names: list[bytes],
                                         labels: list[str], selector: str, expire: int,
                                         ed: bool) -> None:
    # The signature's own lines: cut around b= without folding twice, or dkimpy's way
    # (fold, RE_BTAG, fold again), for any h= and d= length: the same bytes.
    domain = ".".join(labels) + ".example"
    key = dataclasses.replace((ed_key if ed else rsa_key)[0], domain=domain, selector=selector)
    head = b"".join(n + b": v\r\n" for n in names) + b"From: a@" + domain.encode() + b"\r\n"
    signer = DkimSigner([key], ManualClock(1_800_000_000.0), expire_after=expire or None)
    ours = signer.sign_message(head + b"\r\nbody\r\n")
    with pytest.MonkeyPatch.context() as long_way:
        long_way.setattr(heed_dkim, "_B_LINE", b"\0")  # never found: dkimpy's way
        theirs = signer.sign_message(head + b"\r\nbody\r\n")
    assert ours == theirs
