"""Per-copy body changes: tracked links, the trap, the ask block; MIME stays faithful."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.clock import ManualClock
from proxy.copy import ask
from proxy.copy.links import Rules, html_template, links, text_template
from proxy.copy.mime import MAX_LINE, parse_body
from proxy.copy.personal import TRAP, ClickTarget, PersonalBody
from proxy.message import Message, normalise
from proxy.policy import Stream
from proxy.settings import UnsubscribeKey
from proxy.tokens import CLICK, REPERMISSION, TokenSigner

PUBLIC = "https://heed.example"
TRACKED = re.compile(r"https://heed\.example/c/[A-Za-z0-9_-]+")
STREAM = Stream("marketing", track_clicks=True,
                track_clicks_exclude=("https://shop.example/account/*",))
HTML = """<html><head><style>a{background:url(https://cdn.example/bg.png)}</style></head>
<body><p>Hello <a href="https://shop.example/sale?a=1&amp;b=2">the sale</a>,
<a href='http://tool.example/track/abc'>tracked by the tool</a>,
<a href=https://unquoted.example/x>unquoted</a>,
<a href="mailto:shop@shop.example">mail</a> <a href="tel:+4930123">call</a>
<a href="#top">top</a> <a href="https://shop.example/account/me">account</a>
<a href="https://heed.example/p/OURS">preferences</a>
<!-- <a href="https://commented.example/">old</a> -->
<img src="https://cdn.example/logo.png"></p></body></html>
"""
TEXT = ("Sale: https://shop.example/sale?a=1&b=2.\nTool: (http://tool.example/track/abc)\n"
        "Account: https://shop.example/account/me\nmailto:shop@shop.example\n")


def signer() -> TokenSigner:
    return TokenSigner([UnsubscribeKey("k1", b"a-test-secret-0123456789")], ManualClock(),
                       90 * 86400)


def tracked_in(text: str) -> list[str]:
    return TRACKED.findall(text)


def test_html_links_found_and_kept() -> None:
    t = html_template(HTML, Rules(PUBLIC, STREAM.track_clicks_exclude))
    assert links(t) == ["https://shop.example/sale?a=1&b=2", "http://tool.example/track/abc",
                        "https://unquoted.example/x"]


def test_links_that_cannot_be_a_location_header_are_left_alone() -> None:
    html = ('<a href="https://a.example/x&#13;&#10;Set-Cookie: x=1">a</a>'
            '<a href="https://b.example/caf\u00e9">b</a><a href="https://c.example/ok">c</a>')
    assert links(html_template(html, Rules(PUBLIC))) == ["https://c.example/ok"]


def test_text_links_trailing_punctuation() -> None:
    t = text_template(TEXT, Rules(PUBLIC, STREAM.track_clicks_exclude))
    assert links(t) == ["https://shop.example/sale?a=1&b=2", "http://tool.example/track/abc"]


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("hHtTpPsS:/ .x\n)"), max_size=40))
def test_text_without_a_scheme_separator_has_no_link(text: str) -> None:
    # The "://" shortcut cuts as the pattern does, with or without one.
    found = [m.group() for m in re.finditer(r"https?://[^\s<>\"']+", text, re.I)]
    t = text_template(text, Rules(PUBLIC))
    assert "".join(p if isinstance(p, str) else p.url for p in t) == text
    if not found:
        assert t == [text]


def corpus() -> dict[str, bytes]:
    """Messages the way tools write them: QP HTML, base64 text, nesting, 8-bit charsets."""
    out = {}
    alt = MIMEMultipart("alternative")
    alt.attach(MIMEText(TEXT, "plain", "utf-8"))  # base64 (utf-8 default in MIMEText)
    alt.attach(MIMEText(HTML.replace("Hello", "Grüße"), "html", "utf-8"))
    out["alternative-base64"] = alt.as_bytes()

    m = EmailMessage()
    m["Subject"] = "qp"
    m.set_content(TEXT + "é" * 80, cte="quoted-printable")
    m.add_alternative(HTML.replace("Hello", "Hélène " * 30), subtype="html",
                      cte="quoted-printable")
    out["alternative-qp"] = m.as_bytes()

    related = MIMEMultipart("related")
    related.attach(MIMEText(HTML.replace("Hello", "Grüße"), "html", "iso-8859-1"))
    img = MIMEBase("image", "png")
    img.set_payload(b"\x89PNG https://not-a-link.example/".hex())
    related.attach(img)
    outer = MIMEMultipart("mixed")
    inner = MIMEMultipart("alternative")
    inner.attach(MIMEText(TEXT.replace("Sale", "Распродажа"), "plain", "koi8-r"))
    inner.attach(related)
    outer.attach(inner)
    att = MIMEText("https://attachment.example/ not tracked", "plain")
    att.add_header("Content-Disposition", "attachment", filename="a.txt")
    outer.attach(att)
    out["mixed-alternative-related-8bit-charsets"] = outer.as_bytes()

    w = EmailMessage()
    w.set_content(TEXT.replace("Sale", "Prix €"), charset="windows-1252", cte="8bit")
    out["single-8bit-windows-1252"] = w.as_bytes()
    return {k: normalise(v) for k, v in out.items()}


def decoded_texts(data: bytes) -> list[tuple[str, str]]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    out = []
    for part in msg.walk():
        if part.get_content_maintype() == "multipart":
            continue
        out.append((part.get_content_type(), str(part.get_content())
                    if part.get_content_maintype() == "text" else part.get_payload()))
    return out


@pytest.mark.parametrize("name", list(corpus()))
def test_round_trip_only_links_change(name: str) -> None:
    data = corpus()[name]
    message = Message.parse(data)
    body = PersonalBody(message, signer(), PUBLIC)
    assert body.unparsed == 0
    out = body.render(STREAM, "ana@example.org")
    copy = message.header_block + b"\r\n" + out
    assert all(len(line) <= MAX_LINE for line in copy.split(b"\r\n"))
    before, after = decoded_texts(data), decoded_texts(copy)
    assert [t for t, _ in before] == [t for t, _ in after]  # structure kept
    tokens = signer()
    for (ctype, old), (_, new) in zip(before, after, strict=True):
        if ctype in ("text/plain", "text/html") and "attachment.example" not in old:
            assert "https://shop.example/sale" not in new or "account" in new
            # Undo the change: each tracked URL names (by its signed id) a destination.
            new = re.sub(r'<a href="https://heed\.example/c/[^"]+" aria-hidden[^>]*></a>', "",
                         new)
            for url in set(tracked_in(new)):
                claims = tokens.verify(url.rsplit("/", 1)[1], CLICK)
                target = ClickTarget.decode(claims.list)
                assert target is not None and claims.address == "ana@example.org"
                assert target.stream == "marketing" and target.link != TRAP
                original = body.destinations(STREAM)[target.link]
                new = new.replace(url, original.replace("&", "&amp;")
                                  if ctype == "text/html" and "&" in original else original)
            assert new.replace("'", '"').replace("=https://unquoted.example/x",
                                                 '="https://unquoted.example/x"') \
                == old.replace("'", '"').replace("=https://unquoted.example/x",
                                                 '="https://unquoted.example/x"')
        else:
            assert old == new
    # Nothing else changed: the header blocks of every part are the same bytes.
    assert re.findall(rb"Content-[A-Za-z-]+:[^\r]*", copy) == \
        re.findall(rb"Content-[A-Za-z-]+:[^\r]*", data)


def test_trap_hidden_from_people_screen_readers_and_keyboard() -> None:
    data = corpus()["alternative-base64"]
    out = PersonalBody(Message.parse(data), signer(), PUBLIC).render(STREAM, "ana@example.org")
    html = [t for c, t in decoded_texts(Message.parse(data).header_block + b"\r\n" + out)
            if c == "text/html"][0]
    trap = re.search(r'<a href="(https://heed\.example/c/[^"]+)"([^>]*)></a>', html)
    assert trap and 'aria-hidden="true"' in trap.group(2) and 'tabindex="-1"' in trap.group(2)
    assert "display:none" in trap.group(2)
    claims = signer().verify(trap.group(1).rsplit("/", 1)[1], CLICK)
    assert ClickTarget.decode(claims.list).link == TRAP  # type: ignore[union-attr]
    # The trap comes first: a scanner walking links in order meets it before any other.
    assert html.index(trap.group(1)) < html.index("the sale")


def test_not_rewritten() -> None:
    message = Message.parse(corpus()["alternative-base64"])
    out = PersonalBody(message, signer(), PUBLIC).render(STREAM, "ana@example.org")
    html = [t for c, t in decoded_texts(message.header_block + b"\r\n" + out)
            if c == "text/html"][0]
    for kept in ("mailto:shop@shop.example", "tel:+4930123", 'href="#top"',
                 "https://shop.example/account/me", "https://heed.example/p/OURS",
                 '<a href="https://commented.example/">', "url(https://cdn.example/bg.png)",
                 '<img src="https://cdn.example/logo.png">'):
        assert kept in html


def test_a_part_heed_cannot_read_passes_untouched_and_is_counted() -> None:
    data = normalise(
        b"Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"!!!not base64 https://x.example/!!!\r\n--b\r\n"
        b"Content-Type: text/html; charset=x-unknown-charset\r\n\r\n"
        b"<a href=\"https://y.example/\">y</a>\r\n--b\r\n"
        b"Content-Type: text/plain\r\n\r\nhttps://z.example/\r\n--b--\r\n")
    message = Message.parse(data)
    body = PersonalBody(message, signer(), PUBLIC)
    assert body.unparsed == 2
    out = body.render(STREAM, "ana@example.org")
    assert b"!!!not base64 https://x.example/!!!" in out and b'"https://y.example/"' in out
    assert b"https://z.example/" not in out and len(tracked_in(out.decode())) == 1
    # A multipart without its closing delimiter is left whole.
    broken = Message.parse(normalise(b"Content-Type: multipart/mixed; boundary=q\r\n\r\n"
                                     b"--q\r\n\r\nhttps://a.example/\r\n"))
    body = PersonalBody(broken, signer(), PUBLIC)
    assert body.unparsed == 1 and body.render(STREAM, "a@b.example") == broken.body


def test_long_lines_stay_within_998() -> None:
    line = " ".join(f"https://shop.example/{i}" for i in range(12))
    data = normalise(f"Content-Type: text/plain\r\n\r\n{line}\r\n".encode())
    out = PersonalBody(Message.parse(data), signer(), PUBLIC).render(STREAM, "ana@example.org")
    assert len(tracked_in(out.decode())) == 12
    assert all(len(x) <= MAX_LINE for x in out.split(b"\r\n"))


@pytest.mark.parametrize(("lang", "words"), [("en", "Do you still want them?"),
                                             ("vi", "Bạn có còn muốn nhận không?"),
                                             ("ar", "هل ما زلت تريدها؟"),
                                             ("th", "คุณยังต้องการรับอยู่หรือไม่?")])
def test_ask_block_in_the_message_language(lang: str, words: str) -> None:
    data = corpus()["alternative-base64"].replace(
        b"MIME-Version", f"Content-Language: {lang}\r\nMIME-Version".encode(), 1)
    message = Message.parse(data)
    out = PersonalBody(message, signer(), PUBLIC).render(STREAM, "ana@example.org",
                                                         ask_block=True)
    texts = dict(decoded_texts(message.header_block + b"\r\n" + out))
    for ctype in ("text/plain", "text/html"):
        assert words in texts[ctype]
        yes = re.search(r"https://heed\.example/r/([A-Za-z0-9_-]+)", texts[ctype])
        no = re.search(r"https://heed\.example/u/([A-Za-z0-9_-]+)", texts[ctype])
        assert yes and no
        assert signer().verify(yes.group(1), REPERMISSION).list == "marketing"
        assert signer().verify(no.group(1)).address == "ana@example.org"
    assert texts["text/plain"].startswith(ask.TEXTS[lang]["ask"])


def test_ask_in_a_charset_that_cannot_carry_the_language() -> None:
    m = EmailMessage()
    m.set_content(TEXT, charset="iso-8859-1", cte="quoted-printable")
    m.add_alternative(HTML, subtype="html", charset="iso-8859-1", cte="quoted-printable")
    m["Content-Language"] = "th"  # on the whole message: every part is in Thai
    data = normalise(m.as_bytes())
    message = Message.parse(data)
    out = PersonalBody(message, signer(), PUBLIC).render(STREAM, "a@b.example", ask_block=True)
    texts = dict(decoded_texts(message.header_block + b"\r\n" + out))
    assert "Do you still want them?" in texts["text/plain"]  # English: Thai cannot be latin-1
    assert "&#" in texts["text/html"]  # character references carry the Thai in HTML


def test_parse_body_of_a_single_part() -> None:
    body = parse_body(b"Content-Type: text/html\r\n", b"<a href='https://a.example/'>a</a>\r\n")
    assert [p.subtype for p in body.parts] == ["html"] and body.unparsed == 0


_TEXTS = [b"word ", b"caf\xc3\xa9 ", b"\xff\xfe", b"<p>", b"=", b"=3D", b"<!-- ", b" -->",
          b"\r\n", b"--b", b"mailto:a@b.example ", b"https://x.example/p?q=1 ",
          b'<a href="https://y.example/">y</a>', b"<body>", b"aGVsbG8=", b" " * 90]
_PART_HEADS = [b"Content-Type: text/plain\r\n", b"Content-Type: text/html; charset=utf-8\r\n",
               b"Content-Type: text/plain; charset=iso-8859-1\r\n", b"",
               b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n",
               b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n",
               b"Content-Type: image/png\r\n", b"Content-Type: text/html\r\n"
               b"Content-Disposition: attachment\r\n", b"Garbage without colon\r\n"]
_part = st.tuples(st.sampled_from(_PART_HEADS), st.lists(st.sampled_from(_TEXTS), max_size=12))


@settings(max_examples=400, deadline=None)
@given(st.lists(_part, min_size=1, max_size=4), st.booleans(), st.booleans())
def test_any_body_is_read_without_error_and_left_alone_when_it_has_no_link(
        parts: list[tuple[bytes, list[bytes]]], closed: bool, b64: bool) -> None:
    """Whatever the structure, heed never raises; a body without a tracked link comes back
    byte for byte; with links, it re-reads as the same parts."""
    chunks = []
    for head, texts in parts:
        content = b"".join(texts)
        if b"base64" in head and b64:
            content = base64.encodebytes(content).replace(b"\n", b"\r\n")
        chunks.append(b"--b\r\n" + head + b"\r\n" + content + b"\r\n")
    body = normalise(b"preamble\r\n" + b"".join(chunks) + (b"--b--\r\n" if closed else b""))
    message = Message.parse(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body)
    personal = PersonalBody(message, signer(), PUBLIC)
    out = personal.render(STREAM, "ana@example.org")
    if not any(links(t) for t in personal.templates(STREAM)):
        assert out == message.body
    again = parse_body(message.header_block, out)
    assert [p.subtype for p in again.parts] == [p.subtype for p in personal.body.parts]
    assert again.unparsed == personal.unparsed
    assert all(len(line) <= MAX_LINE for line in out.split(b"\r\n"))
