"""Replies over real SMTP: matched to the copy they answer; auto-replies (real samples) ignored."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.clock import ManualClock
from proxy.message import Message, normalise
from proxy.signals.replies import auto_reply
from tests.conftest import Upstream
from tests.harness import CONSENT_POLICY, HeedThread, make_settings, policy_dir

pytestmark = pytest.mark.cluster  # each Redis test runs on one server and on a Cluster

ANA = "ana@example.org"
COPY_ID = "<offer-1@news.example.com>"
# The public sisimai/set-of-emails corpus, as a bare git repository (never committed here).
CORPUS = Path(os.environ.get("HEED_SET_OF_EMAILS", "/work/.mirror/sisimai+set-of-emails/repo"))
AUTO = [f"maildir/bsd/rfc3834-0{i}.eml" for i in range(1, 7)] + [
    "maildir/dos/rfc3834-01.eml", "maildir/mac/rfc3834-01.eml"]


@pytest.fixture
def pair(redis_url: str, upstream: Upstream, tmp_path: Path,
         clock: ManualClock) -> Iterator[tuple[HeedThread, HeedThread]]:
    """The tool's heed (loopback may relay) and a second instance on the same Redis that
    loopback may not relay through: replies reach it like any stranger's mail."""
    policies = policy_dir(tmp_path, CONSENT_POLICY)
    replies = {"address": "replies"}
    tool = HeedThread(make_settings(redis_url=redis_url, upstream_port=upstream.port,
                                    policies=policies, replies=replies), clock).start()
    edge = HeedThread(make_settings(redis_url=redis_url, upstream_port=upstream.port,
                                    policies=policies, replies=replies,
                                    smtp={"client_networks": ["192.0.2.0/24"]}), clock).start()
    yield tool, edge
    edge.stop()
    tool.stop()


def send_copy(tool: HeedThread) -> None:
    assert tool.heed is not None
    tool.call(tool.heed.state.grant(ANA, "marketing"))
    with tool.smtp() as c:
        c.sendmail("offers@news.example.com", [ANA],
                   f"From: offers@news.example.com\r\nTo: {ANA}\r\nSubject: Offer\r\n"
                   f"Message-ID: {COPY_ID}\r\n\r\nHello\r\n")
    tool.settle()


def reply(edge: HeedThread, data: bytes, sender: str = ANA) -> int:
    with edge.smtp() as c:
        assert c.mail(sender or "<>")[0] == 250
        assert c.rcpt("replies@heed.test")[0] == 250  # no AUTH, not a relay client
        code, _ = c.data(data)
    edge.settle()
    return code


def kinds(h: HeedThread, address: str = ANA) -> set[str]:
    assert h.heed is not None
    return set(h.call(h.heed.state.snapshot(address)).engagement)


def human(**headers: str) -> bytes:
    fields = {"From": f"Ana <{ANA}>", "To": "offers@news.example.com", "Subject": "Re: Offer",
              "In-Reply-To": COPY_ID, "References": COPY_ID, **headers}
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v)
    return (head + "\r\nYes please, tell me more.\r\n").encode()


def test_a_reply_to_a_copy_counts(pair: tuple[HeedThread, HeedThread],
                                  upstream: Upstream) -> None:
    tool, edge = pair
    send_copy(tool)
    assert reply(edge, human()) == 250
    assert "reply" in kinds(edge)
    assert upstream.recipients() == [ANA]  # the reply went nowhere


def test_relaying_is_still_refused_for_a_stranger(pair: tuple[HeedThread, HeedThread]) -> None:
    _, edge = pair
    with edge.smtp() as c:
        c.mail(ANA)
        assert c.rcpt("bob@example.net")[0] >= 500


@pytest.mark.parametrize("headers", [
    {"In-Reply-To": "<other@news.example.com>", "References": ""},  # not a copy heed sent
    {"From": "Mallory <mallory@example.net>"},  # someone else answering ana's copy
])
def test_unmatched_replies_are_dropped(pair: tuple[HeedThread, HeedThread],
                                       headers: dict[str, str]) -> None:
    tool, edge = pair
    send_copy(tool)
    sender = "mallory@example.net" if "From" in headers else ANA
    assert reply(edge, human(**headers), sender) == 250
    assert "reply" not in kinds(edge) and "reply" not in kinds(edge, "mallory@example.net")


@pytest.mark.parametrize(("header", "why"), [
    ("Auto-Submitted: auto-replied", "Auto-Submitted"), ("X-Autoreply: yes", "X-Autoreply"),
    ("X-Autorespond: yes", "X-Autorespond"), ("Precedence: auto_reply", "Precedence"),
    ("Precedence: bulk", "Precedence"), ("Precedence: junk", "Precedence"),
    ("Subject: Out of Office: Offer", "out-of-office"),
    ("Subject: =?utf-8?q?Abwesenheitsnotiz=3A_Offer?=", "out-of-office")])
def test_auto_reply_signs(header: str, why: str) -> None:
    name, _, value = header.partition(": ")
    message = Message.parse(human(**{name: value}))
    assert why in auto_reply(message, ANA)
    assert auto_reply(Message.parse(human()), ANA) == ""
    assert "null return path" in auto_reply(Message.parse(human()), "")


def corpus_samples(tmp_path: Path) -> list[Path]:
    if not (CORPUS / "HEAD").exists() and not (CORPUS / ".git").exists():
        pytest.skip(f"the sisimai/set-of-emails corpus is not at {CORPUS}: set "
                    "HEED_SET_OF_EMAILS to a clone (bare or not) of "
                    "https://github.com/sisimai/set-of-emails")
    git = shutil.which("git")
    assert git, "git reads the corpus"
    out = []
    for name in AUTO:
        data = subprocess.run([git, f"--git-dir={CORPUS}" if (CORPUS / "HEAD").exists()
                               else f"--git-dir={CORPUS / '.git'}", "show", f"HEAD:{name}"],
                              capture_output=True, check=True).stdout
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(data)
        out.append(path)
    return out


def test_real_auto_replies_do_not_count(pair: tuple[HeedThread, HeedThread],
                                        tmp_path: Path) -> None:
    """RFC 3834 and vacation samples from the corpus, pointed at a copy heed sent to the
    person who 'wrote' them: had they counted, they would have matched."""
    samples = corpus_samples(tmp_path)
    tool, edge = pair
    send_copy(tool)
    for path in samples:
        text = normalise(path.read_bytes())  # bsd, dos and mac (bare CR) line ends
        head, _, body = text.partition(b"\r\n\r\n")
        head = re.sub(rb"(?im)^(From|In-Reply-To|References|Return-path):.*(\r\n[ \t].*)*\r\n",
                      b"", head + b"\r\n")
        sender = b"" if re.search(rb"(?im)^Return-path:\s*<>", text) else ANA.encode()
        data = (head + f"From: {ANA}\r\nIn-Reply-To: {COPY_ID}\r\n".encode() + b"\r\n" + body)
        assert auto_reply(Message.parse(data), sender.decode()), path.name
        assert reply(edge, data, sender.decode()) == 250
    assert "reply" not in kinds(edge)
    # And the person's own answer to that copy still counts.
    assert reply(edge, human()) == 250 and "reply" in kinds(edge)
