"""signed_one_click reads the bytes that go out: https URI, one-click POST field, DKIM h=;
the builder's own answer (build_copy) is the same."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proxy.finish
from proxy.clock import ManualClock
from proxy.dkim import DkimSigner
from proxy.finish import UnsubscribeAndSign, signed_one_click
from proxy.message import Message, split
from proxy.policy import Stream
from proxy.policy.bulk import BulkRules
from proxy.settings import UnsubscribeKey
from proxy.tokens import TokenSigner

UNSUB = b"List-Unsubscribe: <https://h.test/u/T>, <mailto:u+T@h.test>\r\n"
POST = b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
SIG = (b"DKIM-Signature: v=1; a=rsa-sha256; d=x.test; s=s1;\r\n"
       b"\th=from : list-unsubscribe :\r\n list-unsubscribe-post; bh=x; b=y\r\n")
HEAD = b"From: a@x.test\r\nSubject: hi\r\n"


def message(*fields: bytes) -> bytes:
    return b"".join(fields) + b"\r\nbody\r\n"


def test_a_signed_one_click_is_recognised_from_the_bytes() -> None:
    assert signed_one_click(message(SIG, HEAD, UNSUB, POST))
    assert signed_one_click(message(SIG, HEAD, UNSUB.lower().replace(b"list-", b"LIST-"), POST))


def test_each_missing_part_makes_it_unsigned() -> None:
    assert not signed_one_click(message(HEAD, UNSUB, POST))  # no signature
    assert not signed_one_click(message(SIG, HEAD, POST))  # no List-Unsubscribe
    assert not signed_one_click(message(SIG, HEAD, UNSUB))  # no one-click POST field
    http = UNSUB.replace(b"https://", b"http://")
    assert not signed_one_click(message(SIG, HEAD, http, POST))  # RFC 8058 §3.1: https
    narrow = SIG.replace(b" list-unsubscribe-post", b" subject")
    assert not signed_one_click(message(narrow, HEAD, UNSUB, POST))  # h= misses the POST field
    assert not signed_one_click(message(SIG, HEAD, UNSUB, POST.replace(b"One-Click", b"Yes")))


def reference(data: bytes) -> bool:
    """The check as first written, over every field Message.parse reads."""
    m = Message.parse(split(data)[0])
    if not any("<https://" in v for v in m.get_all("List-Unsubscribe")):
        return False
    if "List-Unsubscribe=One-Click" not in [v.strip() for v in
                                             m.get_all("List-Unsubscribe-Post")]:
        return False
    for signature in m.get_all("DKIM-Signature"):
        tags = dict(t.strip().partition("=")[::2] for t in signature.split(";"))
        signed = {h.strip().lower() for h in "".join(tags.get("h", "").split()).split(":")}
        if {"list-unsubscribe", "list-unsubscribe-post"} <= signed:
            return True
    return False


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([SIG, HEAD, UNSUB, POST, b"List-Unsubscribe :\r\n <https://a>\r\n",
                                 b"broken line\r\n", b"X: \xff\r\n", b"dkim-signature: h=x\r\n",
                                 b" continued\r\n",
                                 # Names that only begin like the three, folds, bare LF:
                                 b"List-Unsubscribe-Postx: List-Unsubscribe=One-Click\r\n",
                                 b"List-Unsubscribe-Post \t:\r\n\tList-Unsubscribe=One-Click\r\n",
                                 b"\tlist-unsubscribe: <https://b>\r\n",
                                 b"X: a\nList-Unsubscribe: <https://c>\r\n",
                                 b"DKIM-Signature: h=List-Unsubscribe:\r\n"
                                 b" list-unsubscribe-post\r\n",
                                 b"list-unsubscribe\r\n"]), max_size=8))
def test_same_answer_as_the_full_parse(fields: list[bytes]) -> None:
    data = message(*fields)
    assert signed_one_click(data) == reference(data)


# The builder says whether a copy's one-click is signed without reading it back
# (UnsubscribeAndSign's build_copy): always what reading the copy's bytes says.
TOOL_UNSUB = b"List-Unsubscribe: <https://tool.test/u/1>\r\n"
TOOL_SIG = SIG.replace(b"d=x.test", b"d=example.com")


@pytest.mark.parametrize("public_url", ["https://heed.test", "http://heed.test"])
@pytest.mark.parametrize("keyed", [True, False])
def test_build_copy_says_what_the_bytes_say(ed_key, public_url: str,  # noqa: ANN001
                                            keyed: bool) -> None:
    clock = ManualClock(1_780_000_000.0)
    tokens = TokenSigner((UnsubscribeKey("k", b"0123456789abcdef0123"),), clock, 86400.0)
    signer = DkimSigner([ed_key[0]], clock) if keyed else None
    owner = UnsubscribeAndSign(tokens, signer, public_url=public_url, mailto_domain="heed.test")
    head = b"From: <news@example.com>\r\nTo: <a@example.org>\r\nSubject: hi\r\n"
    heads = [head, head + TOOL_UNSUB, head + TOOL_UNSUB + POST, TOOL_SIG + head + TOOL_UNSUB + POST,
             TOOL_SIG + head]
    seen = set()
    for fields in heads:
        for unsubscribe in ("replace", "keep", "off"):
            for insert in ("insert", "check"):
                stream = Stream("m", unsubscribe=unsubscribe,
                                bulk=BulkRules(body_unsubscribe=insert))
                prepared = owner.prepare(Message.parse(fields + b"\r\nbody\r\n"))
                copy = prepared.build_copy(stream, "r@example.org")
                assert copy.data == prepared.build(stream, "r@example.org")
                assert copy.signed == signed_one_click(copy.data), (fields, unsubscribe)
                seen.add(copy.signed)
    assert seen == {True, False}


_FIELDS = st.sampled_from([
    b"From: <news@example.com>\r\n", b"Subject: hi\r\n", TOOL_UNSUB, POST,
    b"list-unsubscribe :\r\n <https://t.test/2>\r\n", b"Feedback-ID: 1:2:tool\r\n",
    b"feedback-id: x\r\n\ty\r\n", b" stray continuation\r\n", b"no colon\r\n",
    b"X-Campaign-Id: c7\r\n", TOOL_SIG])


@settings(max_examples=300, deadline=None)
@given(fields=st.lists(_FIELDS, max_size=8), unsubscribe=st.sampled_from(["replace", "keep"]),
       feedback=st.sampled_from(["", "{campaign}:{stream}:heed"]))
def test_copy_headers_are_those_of_the_long_way(fields: list[bytes], unsubscribe: str,
                                                 feedback: str) -> None:
    # The fields every copy keeps are cut once per message; the copy's header block is
    # still exactly add_unsubscribe's, then set_feedback_id's.
    clock = ManualClock(1_780_000_000.0)
    tokens = TokenSigner((UnsubscribeKey("k", b"0123456789abcdef0123"),), clock, 86400.0)
    owner = UnsubscribeAndSign(tokens, None, public_url="https://heed.test",
                               mailto_domain="heed.test")
    stream = Stream("m", unsubscribe=unsubscribe, bulk=BulkRules(feedback_id=feedback))
    data = b"".join(fields) + b"\r\nbody\r\n"
    copies = [owner.prepare(Message.parse(data)).build(stream, f"r{k}@example.org")
              for k in range(2)]
    with pytest.MonkeyPatch.context() as long_way:
        long_way.setattr(proxy.finish, "without", lambda block, names: b"-")
        assert copies == [owner.prepare(Message.parse(data)).build(stream, f"r{k}@example.org")
                          for k in range(2)]


def test_a_body_every_copy_changes_is_not_hashed_as_it_came(
        ed_key, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import proxy.dkim
    hashed: list[bytes] = []
    relaxed_body = proxy.dkim.relaxed_body
    monkeypatch.setattr(proxy.dkim, "relaxed_body", lambda b: hashed.append(b) or relaxed_body(b))
    clock = ManualClock(1_780_000_000.0)
    tokens = TokenSigner((UnsubscribeKey("k", b"0123456789abcdef0123"),), clock, 86400.0)
    owner = UnsubscribeAndSign(tokens, DkimSigner([ed_key[0]], clock),
                               public_url="https://heed.test", mailto_domain="heed.test")
    message = Message.parse(b"From: <news@example.com>\r\nSubject: hi\r\n\r\nno link\r\n")
    prepared = owner.prepare(message)
    footer = Stream("m", bulk=BulkRules(body_unsubscribe="insert"))
    copies = [prepared.build(footer, f"r{k}@example.org") for k in range(3)]
    assert len(hashed) == 3 and message.body not in hashed  # each copy's own body, once
    prepared.build(Stream("m", bulk=BulkRules(body_unsubscribe="check")), "r@example.org")
    assert hashed[3:] == [message.body] and len({c[-60:] for c in copies}) == 3
