"""Small, accessible, script-free HTML pages (every value escaped)."""

from __future__ import annotations

from html import escape

from proxy.http.i18n import RTL, TEXTS
from proxy.policy.model import Text

_STYLE = """
body{font:18px/1.5 system-ui,"Noto Sans","Noto Sans Arabic","Noto Sans Thai",sans-serif;
color:#1a1a1a;background:#fff;margin:0;padding:2rem 1rem}
main{max-width:34rem;margin:0 auto;overflow-wrap:anywhere}
h1{font-size:1.5rem}
button{font:inherit;font-weight:600;color:#fff;background:#0b5394;border:0;border-radius:.4rem;
padding:.7rem 1.4rem;cursor:pointer}
.actions{display:flex;flex-wrap:wrap;gap:.6rem;margin:.6rem 0}
p.note{color:#444}
.date{white-space:nowrap}
a{color:#0b5394}
:focus-visible{outline:3px solid #1a1a1a;outline-offset:3px}
"""
# Focus: one dark ring on every page, drawn outside the control (offset 3px) on the
# white page: #1a1a1a on #fff is 17.4:1, where WCAG 2.2 SC 1.4.11 asks >= 3:1 (the
# yellow ring it replaces was 1.68:1). The browser tests compute the ratio from the
# rendered styles of every focusable element.


class Day(str):
    """A date in a sentence: rendered so that it never wraps mid-date on a phone."""


def fill(template: str, **values: str | Text) -> str:
    """Escape a sentence and its values; each value in <bdi> so an address stays whole in RTL
    (a Text says its language: a label shown in English on a Thai page is marked so)."""
    return escape(template).format(**{k: words(v) for k, v in values.items()})


def words(value: str | Text, css: str = "") -> str:
    """One value, escaped, in its own <bdi> (with its language when it is a Text)."""
    if isinstance(value, Day):
        css = "date"
    attrs = f' class="{css}"' if css else ""
    if isinstance(value, Text):
        return f'<bdi lang="{value.lang}"{attrs}>{escape(value.text)}</bdi>'
    return f"<bdi{attrs}>{escape(value)}</bdi>"


def page(lang: str, title_key: str, body_html: str) -> str:
    """A page titled by one of TEXTS' keys."""
    return frame(lang, TEXTS[lang][title_key], body_html)


def frame(lang: str, title: str, body_html: str, style: str = "") -> str:
    """The frame every page shares: language, direction, inline style, one heading."""
    direction = "rtl" if lang in RTL else "ltr"
    return (
        f'<!doctype html>\n<html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title><style>{_STYLE}{style}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body_html}</main></body></html>\n"
    )


def manage_link(lang: str, prefs_url: str) -> str:
    """The way from the unsubscribe pages to the preference centre (empty when none)."""
    if not prefs_url:
        return ""
    return f'<p class="note"><a id="manage" href="{escape(prefs_url)}">' \
           f'{escape(TEXTS[lang]["manage"])}</a></p>'



def _one_click(button_id: str, label_html: str, scope: str = "") -> str:
    # A plain form posting the RFC 8058 §3.1 body: the button works without JavaScript.
    # No action: it posts back to this very URL, whatever prefix a reverse proxy adds.
    # `via=page` marks the page's own buttons, so `heed report` counts open + press.
    extra = f'<input type="hidden" name="scope" value="{scope}">' if scope else ""
    return ('<form method="post">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            f'<input type="hidden" name="via" value="page">{extra}'
            f'<button type="submit" id="{button_id}" aria-describedby="question">'
            f"{label_html}</button></form>")


def confirm_page(lang: str, label: str | Text, masked: str, prefs_url: str = "") -> str:
    """The GET page: the question and two buttons, this list or all marketing, one POST each."""
    t = TEXTS[lang]
    body = (
        f'<p id="question">{fill(t["confirm"], list=label, address=masked)}</p>'
        '<div class="actions">'
        + _one_click("unsubscribe", fill(t["button"], list=label))
        + _one_click("unsubscribe-all", escape(t["button_all"]), "all")
        + f'</div><p class="note">{escape(t["explain"])} {escape(t["all_explain"])}</p>'
        + manage_link(lang, prefs_url)
    )
    return page(lang, "title", body)


def done_page(lang: str, label: str | Text, masked: str, prefs_url: str = "",
              everything: bool = False) -> str:
    """The answer to a recorded one-click (of the list, or of all marketing)."""
    t = TEXTS[lang]
    said = fill(t["done_all"], address=masked) if everything else \
        fill(t["done"], list=label, address=masked)
    return page(lang, "done_all_title" if everything else "done_title",
                f'<p role="status">{said}</p>' + manage_link(lang, prefs_url))


def message_page(lang: str, key: str) -> str:
    """A page with no personal data: "bad" (any failure) or "later" (not recorded)."""
    return page(lang, f"{key}_title", f"<p>{escape(TEXTS[lang][key])}</p>")
