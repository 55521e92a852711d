"""The preference centre's pages: plain forms that post back, no script, every value escaped."""

from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape

from proxy.http.pages import Day, fill, frame, words
from proxy.http.prefs_i18n import PREFS
from proxy.policy.model import Text

# The focus ring is the shared one (proxy/http/pages.py).
_STYLE = """
h2{font-size:1.2rem;margin:2rem 0 .4rem}
fieldset{border:1px solid #767676;border-radius:.4rem;margin:1rem 0;padding:.5rem 1rem 1rem}
legend{font-weight:600;padding:0 .3rem}
.choice{display:flex;align-items:center;gap:.6rem;margin:.5rem 0}
.choice input{width:1.3rem;height:1.3rem;margin:0;accent-color:#0b5394;flex:none}
.choice small{color:#444}
.choice .desc{display:block;color:#444;font-size:.9em}
button.quiet{background:#fff;color:#0b5394;border:2px solid #0b5394}
button.danger{background:#a61c00}
p[role=status]{border-inline-start:4px solid #0b5394;padding-inline-start:.6rem}
"""
FREQUENCIES = (("", "as_sent"), ("weekly", "weekly"), ("monthly", "monthly"))


@dataclass(frozen=True)
class Row:
    """One marketing stream the person joined, as they see it."""

    name: str  # the stream's name (the form value)
    label: Text  # the policy's label in the page's language (or the English one)
    description: Text
    on: bool
    refused: bool  # the person left this list: shown as such, not switchable here
    list: str = ""  # the consent list (a "subscribe again" names it)
    can_rejoin: bool = False  # left by unsubscribing (not a complaint or a bounce)


@dataclass(frozen=True)
class View:
    """Everything the main page shows; nothing else about the person reaches the HTML."""

    lang: str
    masked: str
    rows: tuple[Row, ...]
    frequency: str  # "", "weekly" or "monthly"
    paused_until: float | None
    left_at: float | None  # when the person left all marketing, if they did
    nonce: str
    status: str = ""  # a PREFS key to announce (after a change), or ""
    can_rejoin: bool = False  # they left everything by unsubscribing: offer the way back


def day(ts: float) -> Day:
    """A date every language reads alike (ISO 8601), in UTC."""
    return Day(time.strftime("%Y-%m-%d", time.gmtime(ts)))


def _form(nonce: str, inner: str, extra: str = "") -> str:
    # No action attribute: it posts back to this very URL, whatever prefix a proxy adds.
    return (f'<form method="post"{extra}><input type="hidden" name="nonce" '
            f'value="{escape(nonce)}">{inner}</form>')


def _button(action: str, label: str, cls: str = "", value: str = "") -> str:
    """A submit button named by its id; it posts ``value`` (the action, if not given)."""
    klass = f' class="{cls}"' if cls else ""
    return (f'<button type="submit" name="action" value="{escape(value or action)}" '
            f'id="{action}"{klass}>{escape(label)}</button>')


def _label(row: Row) -> str:
    desc = words(row.description, "desc") if row.description.text else ""
    return words(row.label) + desc


def _left_row(v: View, i: int, row: Row, buttons: bool) -> str:
    """A list the person left: its state, and (for an unsubscribe) the way back."""
    t = PREFS[v.lang]
    back = (f' <button type="submit" name="action" value="rejoin:{escape(row.list)}" '
            f'id="rejoin-{i}" class="quiet" aria-describedby="r{i}">{escape(t["rejoin"])}'
            "</button>") if buttons and row.can_rejoin else ""
    return (f'<div class="choice"><span id="r{i}">{_label(row)} '
            f'<small>({escape(t["refused"])})</small></span>{back}</div>')


def _streams(v: View) -> str:
    t = PREFS[v.lang]
    rows = []
    for i, row in enumerate(v.rows):
        if row.refused:
            rows.append(_left_row(v, i, row, True))
            continue
        attrs = " checked" if row.on else ""
        rows.append(f'<div class="choice"><input type="checkbox" name="on" id="s{i}" '
                    f'value="{escape(row.name)}"{attrs}><label for="s{i}">'
                    f"{_label(row)}</label></div>")
    lists = f'<fieldset><legend>{escape(t["streams"])}</legend>{"".join(rows)}</fieldset>'
    if all(r.refused for r in v.rows):  # nothing left to switch: no frequency, no Save
        return _form(v.nonce, lists)
    radios = "".join(
        f'<div class="choice"><input type="radio" name="frequency" id="f-{key}" '
        f'value="{value}"{" checked" if v.frequency == value else ""}>'
        f'<label for="f-{key}">{escape(t[key])}</label></div>'
        for value, key in FREQUENCIES)
    return _form(v.nonce, f'{lists}<fieldset><legend>{escape(t["frequency"])}</legend>'
                          f'{radios}</fieldset>{_button("save", t["save"])}')


def _pause(v: View, now: float) -> str:
    t = PREFS[v.lang]
    if v.paused_until is not None and v.paused_until > now:
        inner = (f'<p id="paused">{fill(t["paused"], date=day(v.paused_until))}</p>'
                 f'<div class="actions">{_button("resume", t["resume"])}</div>')
    else:
        inner = (f'<div class="actions">{_button("pause30", t["pause30"], "quiet")}'
                 f'{_button("pause90", t["pause90"], "quiet")}</div>')
    return _form(v.nonce, f'<fieldset><legend>{escape(t["pause"])}</legend>{inner}</fieldset>')


def _left_everything(v: View, left_at: float) -> str:
    """After "leave everything": the state, the lists it covers, and how to come back."""
    t = PREFS[v.lang]
    rows = "".join(_left_row(v, i, r, False) for i, r in enumerate(v.rows))
    out = f'<p id="left">{fill(t["left"], date=day(left_at))}</p>' + rows
    if v.can_rejoin:
        out += (f'<p class="note" id="rejoin-explain">{escape(t["rejoin_explain"])}</p>'
                + _form(v.nonce, _button("rejoin", t["rejoin"], value="rejoin:*")))
    return out


def centre_page(v: View, now: float) -> str:
    """The preference centre: only the lists the person joined, and only live controls."""
    t = PREFS[v.lang]
    status = f'<p role="status">{escape(t[v.status])}</p>' if v.status else ""
    if v.left_at is not None:
        choices = f'<h2>{escape(t["leave_heading"])}</h2>' + _left_everything(v, v.left_at)
    elif not v.rows:
        choices = f'<p id="none">{fill(t["none"], address=v.masked)}</p>'
    else:
        live = any(not r.refused for r in v.rows)
        choices = (f'<p>{fill(t["intro"], address=v.masked)}</p>' + _streams(v)
                   + (_pause(v, now) if live else "")
                   + f'<h2>{escape(t["leave_heading"])}</h2>'
                   + f'<p class="note">{escape(t["leave_explain"])}</p>'
                   + _form(v.nonce, _button("leave", t["leave"])))
    body = (
        status + choices
        + f'<h2>{escape(t["data"])}</h2><p class="note">{escape(t["download_explain"])}</p>'
        + _form(v.nonce, '<div class="actions">' + _button("view", t["view"], "quiet")
                + _button("download", t["download"], "quiet") + "</div>")
        + f'<p class="note">{escape(t["erase_explain"])}</p>'
        + _form(v.nonce, _button("erase", t["erase"], "danger"))
    )
    return frame(v.lang, t["title"], body, _STYLE)


def erase_confirm_page(lang: str, masked: str, nonce: str) -> str:
    """The second step of erasure: say what goes, then one more POST."""
    t = PREFS[lang]
    yes = _button("erase-confirm", t["erase_yes"], "danger")
    body = (f'<p id="question">{fill(t["erase_confirm"], address=masked)}</p>'
            + _form(nonce, f'<div class="actions">{yes}'
                           f'<a href="" id="cancel">{escape(t["cancel"])}</a></div>'))
    return frame(lang, t["erase_title"], body, _STYLE)


def erased_page(lang: str) -> str:
    """After erasure: what was deleted, and what was kept and why."""
    t = PREFS[lang]
    body = f'<p role="status">{escape(t["erased"])}</p><p id="kept">{escape(t["kept"])}</p>'
    return frame(lang, t["erased_title"], body, _STYLE)


def gone_page(lang: str) -> str:
    """The centre of an erased address: nothing is left to show or change."""
    t = PREFS[lang]
    return frame(lang, t["title"], f'<p id="gone">{escape(t["gone"])}</p>', _STYLE)


def form_error_page(lang: str) -> str:
    """A form that failed the nonce or Origin check: nothing changed, a way back."""
    t = PREFS[lang]
    body = f'<p>{escape(t["form"])}</p><p><a href="" id="back">{escape(t["back"])}</a></p>'
    return frame(lang, t["form_title"], body, _STYLE)
