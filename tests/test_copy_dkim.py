"""A copy with tracked links and the ask block is signed after the change: dkimpy and OpenDKIM
verify it, and the body hash is the copy's own."""

from __future__ import annotations

import pytest

from proxy.dkim import DkimSigner
from proxy.finish import UnsubscribeAndSign
from proxy.message import Message
from proxy.rewrite import split_message
from proxy.settings import DkimKey
from tests.dkim_keys import Verifier, dkimpy_verify
from tests.test_copy import STREAM, corpus, signer, tracked_in


def copies(key: DkimKey, name: str) -> list[bytes]:
    # opendkim-testmsg wants a Date (RFC 5322 §3.6: required) or reports a syntax error.
    data = corpus()[name].replace(b"\r\n\r\n", b"\r\nFrom: Shop <offers@example.com>\r\n"
                                  b"To: ana@example.org\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                                  b"Message-ID: <1@example.com>\r\n\r\n", 1)
    finisher = UnsubscribeAndSign(signer(), DkimSigner([key]), public_url="https://heed.example",
                                  mailto_domain="heed.example")
    prepared = finisher.prepare(Message.parse(data))
    return [prepared.build(STREAM, "ana@example.org"),
            prepared.build(STREAM, "ana@example.org", ask=True)]


@pytest.mark.parametrize("name", list(corpus()))
def test_rewritten_copies_verify_with_dkimpy(rsa_key: tuple[DkimKey, str],  # noqa: F811
                                             zone: dict[str, str], name: str) -> None:  # noqa: F811
    for copy in copies(rsa_key[0], name):
        assert tracked_in(copy.decode("utf-8", "replace")) or b"base64" in copy
        assert dkimpy_verify(copy, zone)
        head, body = split_message(copy)
        changed = body[:-2] + b"x\r\n"
        assert not dkimpy_verify(head + b"\r\n" + changed, zone)


def test_rewritten_copies_verify_with_opendkim(opendkim: Verifier,  # noqa: F811
                                               rsa_key: tuple[DkimKey, str]) -> None:  # noqa: F811
    for name in ("alternative-qp", "mixed-alternative-related-8bit-charsets"):
        for copy in copies(rsa_key[0], name):
            code, output = opendkim(copy)
            assert (code, output) == (0, ""), f"{name}: {output}"
