"""Small, accessible, script-free HTML pages (every value escaped)."""

from __future__ import annotations

from html import escape

from proxy.http.i18n import RTL, TEXTS

_STYLE = """
body{font:18px/1.5 system-ui,"Noto Sans","Noto Sans Arabic","Noto Sans Thai",sans-serif;
color:#1a1a1a;background:#fff;margin:0;padding:2rem 1rem}
main{max-width:34rem;margin:0 auto}
h1{font-size:1.5rem}
button{font:inherit;font-weight:600;color:#fff;background:#0b5394;border:0;border-radius:.4rem;
padding:.7rem 1.4rem;cursor:pointer}
button:focus-visible{outline:3px solid #f1c232;outline-offset:3px}
p.note{color:#444}
a{color:#0b5394}
a:focus-visible{outline:3px solid #f1c232;outline-offset:2px}
"""


def fill(template: str, **values: str) -> str:
    """Escape a sentence and its values; each value in <bdi> so an address stays whole in RTL."""
    return escape(template).format(**{k: f"<bdi>{escape(v)}</bdi>" for k, v in values.items()})


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



def confirm_page(lang: str, list_name: str, masked: str, prefs_url: str = "") -> str:
    """The GET page: the question and one button that POSTs the one-click body."""
    t = TEXTS[lang]
    # A plain form posting the RFC 8058 §3.1 body: the button works without JavaScript.
    # No action: it posts back to this very URL, whatever prefix a reverse proxy adds.
    form = (
        f'<p id="question">{fill(t["confirm"], list=list_name, address=masked)}</p>'
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        # Marks the page's own button, so `heed report` counts it as two clicks, not one.
        '<input type="hidden" name="via" value="page">'
        '<button type="submit" id="unsubscribe" aria-describedby="question">'
        f'{escape(t["button"])}</button></form>'
        f'<p class="note">{escape(t["explain"])}</p>'
        + manage_link(lang, prefs_url)
    )
    return page(lang, "title", form)


def done_page(lang: str, list_name: str, masked: str, prefs_url: str = "") -> str:
    """The answer to a recorded one-click."""
    t = TEXTS[lang]
    return page(lang, "done_title",
                f'<p role="status">{fill(t["done"], list=list_name, address=masked)}</p>'
                + manage_link(lang, prefs_url))


def message_page(lang: str, key: str) -> str:
    """A page with no personal data: "bad" (any failure) or "later" (not recorded)."""
    return page(lang, f"{key}_title", f"<p>{escape(TEXTS[lang][key])}</p>")
