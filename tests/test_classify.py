"""Classification: envelope and header rules, first match wins, None at RCPT when headers matter."""

from __future__ import annotations

import textwrap
from pathlib import Path

from proxy.classify import classify
from proxy.message import Message
from proxy.policy import Policy, load_policies

ROOT = Path(__file__).resolve().parent.parent

STREAMS = """\
default_stream: promo
streams:
  promo: {}
  news: {list: digest}
  receipts: {kind: transactional}
"""

def policy(tmp_path: Path, rules: str) -> Policy:
    text = STREAMS + "classify:\n" + textwrap.indent(textwrap.dedent(rules), "  ")
    (tmp_path / "p.yaml").write_text(text, encoding="utf-8")
    return load_policies(tmp_path)

def msg(*fields: str) -> Message:
    head = "".join(f"{f}\r\n" for f in ("From: a@example.com", "To: b@example.org", *fields))
    return Message.parse((head + "\r\nhello\r\n").encode())

def test_envelope_rules_decide_at_rcpt(tmp_path: Path) -> None:
    p = policy(tmp_path, """\
        - {sender: "*@Shop.Example.com", stream: receipts}
        - {recipient_domain: ["*.internal", "example.net"], stream: news}
        - {sender: "boss@*", recipient_domain: example.org, stream: receipts}
        """)
    assert classify(p, "Orders@shop.example.COM", "x@y.org", None) == "receipts"
    assert classify(p, "a@b.com", "x@mail.internal", None) == "news"
    assert classify(p, "a@b.com", "x@EXAMPLE.net", None) == "news"
    assert classify(p, "boss@corp.com", "x@example.org", None) == "receipts"
    assert classify(p, "boss@corp.com", "x@example.com", None) == "promo"  # both keys must match
    assert classify(p, "a@b.com", "x@example.org", msg()) == "promo"  # the default

def test_header_rules(tmp_path: Path) -> None:
    p = policy(tmp_path, """\
        - {headers: {List-Id: "*<digest.example.com>"}, stream: news}
        - {headers: {X-Campaign-Id: "*"}, stream: promo}
        - {headers: {Precedence: Bulk, X-Kind: receipt}, stream: receipts}
        - {headers: {X-Kind: receipt}, stream: receipts}
        """)
    news = msg("List-ID: The digest <digest.example.com>")
    assert classify(p, "a@b.com", "x@y.org", news) == "news"
    assert classify(p, "a@b.com", "x@y.org", msg("X-Campaign-Id: ")) == "promo"  # presence
    assert classify(p, "a@b.com", "x@y.org", msg("X-Kind: Receipt")) == "receipts"
    assert classify(p, "a@b.com", "x@y.org", msg("X-Kind: invoice")) == "promo"
    # Any of several fields of the same name may match.
    assert classify(p, "a@b.com", "x@y.org", msg("X-Kind: a", "X-Kind: receipt")) == "receipts"

def test_stream_named_by_a_header(tmp_path: Path) -> None:
    p = policy(tmp_path, """\
        - {stream_from_header: X-Heed-Stream}
        - {headers: {X-Kind: receipt}, stream: receipts}
        """)
    assert classify(p, "a@b.com", "x@y.org", msg("X-Heed-Stream: News ")) == "news"
    # Not a stream: the next rules decide.
    fallthrough = msg("X-Heed-Stream: nonsense", "X-Kind: receipt")
    assert classify(p, "a@b.com", "x@y.org", fallthrough) == "receipts"
    assert classify(p, "a@b.com", "x@y.org", msg("X-Heed-Stream: nonsense")) == "promo"

def test_rcpt_time_is_none_when_a_header_rule_comes_first(tmp_path: Path) -> None:
    p = policy(tmp_path, """\
        - {sender: "*@shop.example.com", stream: receipts}
        - {headers: {X-Kind: receipt}, stream: receipts}
        - {sender: "*@news.example.com", stream: news}
        """)
    # The envelope rule before any header rule answers at RCPT.
    assert classify(p, "o@shop.example.com", "x@y.org", None) == "receipts"
    # Later envelope rules, and the default, wait for the headers.
    assert classify(p, "n@news.example.com", "x@y.org", None) is None
    assert classify(p, "a@b.com", "x@y.org", None) is None
    assert classify(p, "n@news.example.com", "x@y.org", msg()) == "news"
    assert classify(p, "n@news.example.com", "x@y.org", msg("X-Kind: receipt")) == "receipts"

def test_header_rule_whose_envelope_part_fails_is_skipped_at_rcpt(tmp_path: Path) -> None:
    p = policy(tmp_path, """\
        - {sender: "*@tool.example.com", headers: {X-Kind: receipt}, stream: receipts}
        - {sender: "*@news.example.com", stream: news}
        """)
    # This header rule can never match mail from another sender: no need to wait.
    assert classify(p, "n@news.example.com", "x@y.org", None) == "news"
    assert classify(p, "t@tool.example.com", "x@y.org", None) is None
    assert classify(p, "a@b.com", "x@y.org", None) == "promo"

def test_null_sender(tmp_path: Path) -> None:
    p = policy(tmp_path, '- {sender: "", stream: receipts}\n')
    assert classify(p, "", "x@y.org", None) == "receipts"
    assert classify(p, "a@b.com", "x@y.org", None) == "promo"

def test_shipped_classification() -> None:
    p = load_policies(ROOT / "policies")
    plain = msg("Subject: hello")
    assert classify(p, "news@example.com", "ana@example.org", plain) == "marketing"
    assert classify(p, "news@example.com", "ana@example.org", None) is None  # header rule first
    assert classify(p, "offers@news.example.com", "ana@example.org", None) == "marketing"
    named = msg("X-Heed-Stream: transactional")
    assert classify(p, "news@example.com", "ana@example.org", named) == "transactional"
    digest = msg("List-Id: Weekly <weekly.example.com>")
    assert classify(p, "news@example.com", "ana@example.org", digest) == "newsletter"
    assert classify(p, "x@news.example.com", "ana@example.org", plain) == "marketing"
    assert classify(p, "me@accounts.example.com", "ana@example.org", plain) == "transactional"
    bulk = msg("Precedence: bulk")
    assert classify(p, "me@accounts.example.com", "ana@example.org", bulk) == "marketing"
    assert classify(p, "", "ana@example.org", plain) == "transactional"
