"""Feedback-ID per stream: Gmail's format, one value for all copies, signed (dkimpy, opendkim)."""

from __future__ import annotations

import pytest

from proxy.bulk.feedback import feedback_value
from proxy.clock import SystemClock
from proxy.dkim import DkimSigner
from proxy.errors import PolicyError
from proxy.finish import UnsubscribeAndSign
from proxy.message import Message
from proxy.policy import Stream, load_policies
from proxy.policy.bulk import BulkRules
from proxy.settings import DkimKey, UnsubscribeKey
from proxy.tokens import TokenSigner
from tests.dkim_keys import Verifier, dkimpy_verify
from tests.harness import policy_dir

# OpenDKIM refuses a message without Date (RFC 5322 §3.6: From and Date are required).
MESSAGE = (b"From: News <news@example.com>\r\nTo: alice@example.org\r\nSubject: Sale\r\n"
           b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
           b"X-Campaign-Id: autumn 2026\r\nFeedback-ID: tool:own:value\r\n"
           b"Message-ID: <1@example.com>\r\n\r\nHello. Unsubscribe: https://x.example/u\r\n")
STREAM = Stream("marketing", bulk=BulkRules(feedback_id="{campaign}:{stream}:heed:acme42"))


def finisher(key: DkimKey) -> UnsubscribeAndSign:
    clock = SystemClock()  # verifiers refuse a t= in the future
    tokens = TokenSigner((UnsubscribeKey("k", b"0123456789abcdef0123"),), clock, 90 * 86400.0)
    return UnsubscribeAndSign(tokens, DkimSigner([key], clock), public_url="https://heed.test",
                              mailto_domain="heed.test")


def field(data: bytes, name: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")
    return [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
            if line.lower().startswith(name.lower() + b":")]


def test_value_is_per_campaign_and_stream_never_per_recipient() -> None:
    value = feedback_value(STREAM, Message.parse(MESSAGE))
    # The campaign id's space cannot stand in a field; it becomes '-'.
    assert value == b"autumn-2026:marketing:heed:acme42"


@pytest.mark.parametrize("template, problem", [
    ("acme42", "2 to 4 fields"),
    ("a:b:c:d:e", "2 to 4 fields"),
    ("{recipient}:heed:acme", "unknown field {recipient}"),
    ("{campaign}:{stream}", "fixed sender id"),
    ("a b:acme", "printable text without spaces"),
])
def test_bad_templates_are_policy_errors(tmp_path, template: str, problem: str) -> None:  # noqa: ANN001
    text = ("default_stream: m\nstreams:\n  m:\n    kind: marketing\n"
            f"    feedback_id: \"{template}\"\n")
    with pytest.raises(PolicyError) as err:
        load_policies(policy_dir(tmp_path, text))
    assert problem in str(err.value.errors) and "policy.yaml:5" in str(err.value.errors)


def test_every_copy_carries_one_signed_feedback_id(rsa_key, zone) -> None:  # noqa: ANN001, F811
    prepared = finisher(rsa_key[0]).prepare(Message.parse(MESSAGE))
    copies = [prepared.build(STREAM, r) for r in ("alice@example.org", "bob@gmail.com")]
    for copy in copies:
        assert field(copy, b"Feedback-ID") == [b"autumn-2026:marketing:heed:acme42"]
        signature = field(copy, b"DKIM-Signature")[0].replace(b" ", b"")
        assert b"feedback-id" in signature.split(b"h=")[1].split(b";")[0]
        assert dkimpy_verify(copy, zone)
        # Changing the signed Feedback-ID breaks the signature.
        assert not dkimpy_verify(copy.replace(b"acme42", b"acme43"), zone)


def test_feedback_id_verifies_with_opendkim(opendkim: Verifier, rsa_key) -> None:  # noqa: ANN001, F811
    prepared = finisher(rsa_key[0]).prepare(Message.parse(MESSAGE))
    copy = prepared.build(STREAM, "bob@gmail.com")
    assert opendkim(copy) == (0, "")
    code, output = opendkim(copy.replace(b"acme42", b"acme43"))
    assert code != 0 and "Bad signature" in output
