"""The re-permission block: "Do you still want them?" with a yes and a no link, per language."""

from __future__ import annotations

import html
from collections.abc import Mapping

from proxy.copy.links import after_body_tag

__all__ = ["LANGUAGES", "TEXTS", "after_body_tag", "insert", "language"]
from proxy.copy.mime import TextPart

# The languages of heed's pages (proxy/http/i18n.py); the message's Content-Language picks one.
LANGUAGES = ("en", "vi", "ar", "th")
RTL = frozenset({"ar"})
TEXTS: dict[str, dict[str, str]] = {
    "en": {"ask": "You have not opened our emails for a while. Do you still want them?",
           "yes": "Yes, keep sending", "no": "No, stop",
           "title": "Keep getting our emails?", "done": "Thank you. We will keep writing to you."},
    "vi": {"ask": "Đã lâu bạn không mở email của chúng tôi. Bạn có còn muốn nhận không?",
           "yes": "Có, tiếp tục gửi", "no": "Không, dừng lại",
           "title": "Tiếp tục nhận email của chúng tôi?",
           "done": "Cảm ơn bạn. Chúng tôi sẽ tiếp tục gửi email cho bạn."},
    "ar": {"ask": "لم تفتح رسائلنا منذ فترة. هل ما زلت تريدها؟",
           "yes": "نعم، واصلوا الإرسال", "no": "لا، توقفوا",
           "title": "هل تريد الاستمرار في تلقي رسائلنا؟", "done": "شكرًا لك. سنواصل مراسلتك."},
    "th": {"ask": "คุณไม่ได้เปิดอีเมลของเรามาระยะหนึ่งแล้ว คุณยังต้องการรับอยู่หรือไม่?",
           "yes": "ใช่ ส่งต่อไป", "no": "ไม่ หยุดส่ง",
           "title": "ต้องการรับอีเมลของเราต่อไปหรือไม่?", "done": "ขอบคุณ เราจะส่งอีเมลถึงคุณต่อไป"},
}


def language(tag: str) -> str:
    return tag if tag in TEXTS else "en"


def _words(lang: str, own: Mapping[str, str]) -> dict[str, str]:
    words = dict(TEXTS[lang])
    if lang in own:
        words["ask"] = own[lang]
    return words


def _html(words: Mapping[str, str], yes: str, no: str, lang: str) -> str:
    e = html.escape
    rtl = ' dir="rtl"' if lang in RTL else ""
    return (f'<div lang="{lang}"{rtl} style="border:1px solid #888;padding:12px;margin:0 0 16px">'
            f'<p style="margin:0 0 8px">{e(words["ask"])}</p>'
            f'<p style="margin:0"><a href="{e(yes)}">{e(words["yes"])}</a>'
            f' &nbsp;|&nbsp; <a href="{e(no)}">{e(words["no"])}</a></p></div>\r\n')


def _text(words: Mapping[str, str], yes: str, no: str) -> str:
    return (f"{words['ask']}\r\n{words['yes']}: {yes}\r\n{words['no']}: {no}\r\n"
            f"{'-' * 40}\r\n\r\n")


def insert(part: TextPart, text: str, yes: str, no: str, own: Mapping[str, str]) -> str:
    """``text`` (the part's content) with the block at its top, in the message's language.

    A language the part's charset cannot carry falls back to HTML character
    references, or (in plain text) to English, so the part keeps its encoding.
    """
    lang = language(part.language)
    words = _words(lang, own)
    if part.subtype == "html":
        block = _html(words, yes, no, lang)
        if not part.encodable(block):
            block = block.encode("ascii", "xmlcharrefreplace").decode("ascii")
        at = after_body_tag(text)
        return text[:at] + block + text[at:]
    block = _text(words, yes, no)
    if not part.encodable(block):
        block = _text(_words("en", own), yes, no)
    return block + text
