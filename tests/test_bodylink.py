"""The body unsubscribe link: found in real newsletter HTML; an inserted footer keeps MIME and DKIM.

Real newsletters: public template repositories (leemunroe's: MIT; Mailchimp's email
blueprints: CC BY-SA 3.0; mjml's templates, after real brands' mail: no licence stated),
so none is shipped here: they are fetched as bare git repositories and read at run time
from HEED_NEWSLETTER_MIRRORS (default /work/.mirror; the tests skip, naming the variable,
when absent). The other inputs are written for these tests.
"""

from __future__ import annotations

import base64
import email
import email.policy
import os
import subprocess
from pathlib import Path

import pytest

from proxy.bulk.bodylink import has_unsubscribe_link
from proxy.bulk.footer import insert_footer, language
from proxy.clock import SystemClock
from proxy.dkim import DkimSigner
from proxy.finish import UnsubscribeAndSign
from proxy.message import Message
from proxy.policy import Stream
from proxy.policy.bulk import BulkRules
from proxy.settings import UnsubscribeKey
from proxy.tokens import TokenSigner
from tests.dkim_keys import Verifier, dkimpy_verify

MIRRORS = Path(os.environ.get("HEED_NEWSLETTER_MIRRORS", "/work/.mirror"))
# (repository, path, whether a person sees a working unsubscribe link): labelled by
# reading each file. `href="#"` and `{unsubscribe_text}` are a template's unfilled
# placeholders: no link a person could follow, so no.
REAL = [
    ("mjmlio+email-templates", "templates/arturia.mjml", True),
    ("mjmlio+email-templates", "templates/austin.mjml", True),
    ("mjmlio+email-templates", "templates/ugg-royale.mjml", True),
    ("mjmlio+email-templates", "templates/card.mjml", False),
    ("mjmlio+email-templates", "templates/tech-geek.mjml", False),
    ("mjmlio+email-templates", "templates/black-friday.mjml", False),
    ("mjmlio+email-templates", "templates/newsletter.mjml", False),
    ("leemunroe+responsive-html-email-template", "email.html", True),
    ("leemunroe+responsive-html-email-template", "email-inlined.html", True),
    ("mailchimp+email-blueprints", "templates/2col-1-2.html", True),
    ("mailchimp+email-blueprints", "templates/3col-basic3column.html", True),
]
# Mailchimp's merge tags, filled in as the tool does before it sends.
MERGE = {"*|UNSUB|*": "https://example.us1.list-manage.com/unsubscribe?u=1&id=2",
         "*|UPDATE_PROFILE|*": "https://example.us1.list-manage.com/profile?u=1",
         "*|ARCHIVE|*": "https://us1.campaign-archive.com/?u=1"}


def real(repo: str, path: str) -> str:
    git_dir = MIRRORS / repo / "repo"
    if not git_dir.is_dir():
        pytest.skip(f"newsletter corpus {git_dir} absent (set HEED_NEWSLETTER_MIRRORS to a "
                    "directory holding owner+name/repo bare git repositories)")
    text = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"HEAD:{path}"],
                          capture_output=True, check=True).stdout.decode("utf-8", "replace")
    for tag, value in MERGE.items():
        text = text.replace(tag, value)
    return text


def html_message(html: str, cte: str = "base64", extra: str = "") -> bytes:
    raw = html.encode("utf-8")
    body = (base64.encodebytes(raw).replace(b"\n", b"\r\n") if cte == "base64"
            else raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    return (b"From: News <news@example.com>\r\nTo: alice@example.org\r\nSubject: News\r\n"
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            + extra.encode() + b"Content-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body)


@pytest.mark.parametrize("repo, path, expected", REAL, ids=[p for _, p, _ in REAL])
def test_real_newsletters(repo: str, path: str, expected: bool) -> None:
    message = html_message(real(repo, path))
    assert has_unsubscribe_link(message) is expected
    if not expected:
        # heed's own footer then gives it one, in a MIME part that still parses.
        added = insert_footer(message, "https://heed.test/u/TOKEN", "en")
        assert has_unsubscribe_link(added)
        part = email.message_from_bytes(added, policy=email.policy.default)
        assert "https://heed.test/u/TOKEN" in part.get_content() and not part.defects


MULTIPART = (
    b"From: Shop <offers@news.example.com>\r\nTo: alice@example.org\r\nSubject: Sale\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Language: th\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
    b"--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n"
    b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nSale =E2=80=94 30% off\r\n"
    b"--alt\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b"<html><body><p>Sale \xe2\x80\x94 30% off</p>"
    b"<div style=\"display: none\"><a href=\"https://x.example/unsubscribe\">Unsubscribe</a>"
    b"</div></body></html>\r\n"
    b"--alt--\r\n"
    b"--outer\r\nContent-Type: text/plain; name=\"terms.txt\"\r\n"
    b"Content-Disposition: attachment; filename=\"terms.txt\"\r\n\r\n"
    b"To unsubscribe visit https://x.example/unsubscribe\r\n"
    b"--outer--\r\n"
)


def test_hidden_links_and_attachments_do_not_count() -> None:
    assert not has_unsubscribe_link(MULTIPART)


@pytest.mark.parametrize("text, known, expected", [
    ("To stop these mails:\r\nhttps://x.example/leave?id=1\r\n", (), False),
    ("To stop these mails:\r\nhttps://x.example/leave?id=1\r\n", ("https://x.example/leave",),
     True),  # the tool's own List-Unsubscribe URL counts
    ("Unsubscribe here: https://x.example/l?id=1\r\n", (), True),
    ("Hủy đăng ký:\r\nhttps://x.example/l?id=1\r\n", (), True),
    ("Just text, no link. Unsubscribe by replying.\r\n", (), False),
])
def test_text_parts(text: str, known: tuple[str, ...], expected: bool) -> None:
    message = (b"From: a@news.example.com\r\nContent-Type: text/plain; charset=utf-8\r\n"
               b"Content-Transfer-Encoding: 8bit\r\n\r\n" + text.encode())
    assert has_unsubscribe_link(message, known) is expected


def finisher(key) -> UnsubscribeAndSign:  # noqa: ANN001
    clock = SystemClock()
    tokens = TokenSigner((UnsubscribeKey("k", b"0123456789abcdef0123"),), clock, 90 * 86400.0)
    return UnsubscribeAndSign(tokens, DkimSigner([key], clock), public_url="https://heed.test",
                              mailto_domain="heed.test")


def test_inserted_footer_keeps_mime_and_dkim(rsa_key, zone) -> None:  # noqa: ANN001, F811
    stream = Stream("marketing", bulk=BulkRules(body_unsubscribe="insert"))
    owner = finisher(rsa_key[0])
    prepared = owner.prepare(Message.parse(MULTIPART))
    assert prepared.facts(stream).body_link == "inserted"
    copies = {r: prepared.build(stream, r) for r in ("alice@example.org", "bob@example.org")}
    for r, copy in copies.items():
        assert dkimpy_verify(copy, zone)
        parsed = email.message_from_bytes(copy, policy=email.policy.default)
        assert all(not p.defects for p in parsed.walk())
        texts = {p.get_content_type(): p.get_content() for p in parsed.walk()
                 if not p.is_multipart() and p.get_content_disposition() != "attachment"}
        # Thai (Content-Language), with this person's own /u/ link, in both parts.
        token = copy.split(b"/u/")[1].split(b">")[0].decode()  # its List-Unsubscribe token
        assert owner.tokens.verify(token).address == r
        assert f"https://heed.test/u/{token}" in texts["text/plain"]
        assert f'href="https://heed.test/u/{token}"' in texts["text/html"]
        assert "ยกเลิกการรับอีเมล" in texts["text/plain"]
        assert texts["text/html"].index("ยกเลิก") < texts["text/html"].index("</body>")
        assert has_unsubscribe_link(copy)
        # The attachment is byte for byte what the tool sent.
        assert b'filename="terms.txt"\r\n\r\nTo unsubscribe visit' in copy
    assert language(MULTIPART) == "th"


def test_check_mode_changes_nothing(rsa_key) -> None:  # noqa: ANN001, F811
    stream = Stream("marketing", bulk=BulkRules(body_unsubscribe="check"))
    prepared = finisher(rsa_key[0]).prepare(Message.parse(MULTIPART))
    assert prepared.facts(stream).body_link == "no"
    assert prepared.build(stream, "alice@example.org").endswith(MULTIPART.split(b"\r\n\r\n", 1)[1])


def test_inserted_footer_verifies_with_opendkim(opendkim: Verifier, rsa_key) -> None:  # noqa: ANN001, F811
    stream = Stream("marketing", bulk=BulkRules(body_unsubscribe="insert"))
    copy = finisher(rsa_key[0]).prepare(Message.parse(MULTIPART)).build(stream, "a@example.org")
    assert b"/u/" in copy.split(b"\r\n\r\n", 1)[1]  # the footer is in the body
    assert opendkim(copy) == (0, "")
