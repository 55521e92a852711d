"""The person's data as a page ("what we hold about you"), from the export the file holds."""

from __future__ import annotations

from html import escape
from typing import Any

from proxy.http.data_i18n import DATA
from proxy.http.pages import Day, fill, frame
from proxy.http.prefs_i18n import PREFS
from proxy.policy.model import Text

_STYLE = """
h2{font-size:1.2rem;margin:2rem 0 .4rem}
dl{margin:.4rem 0}
dt{font-weight:600;margin-top:.8rem}
dd{margin:.2rem 0;margin-inline-start:1rem;overflow-wrap:anywhere}
ol{padding-inline-start:1.2rem}
li{overflow-wrap:anywhere}
"""
SHOWN_DECISIONS = 50  # the page shows the latest; the file has all of them


def _day(iso: str | None) -> Day:
    return Day((iso or "")[:10])


def _code(value: str) -> Text:
    """A code heed records (a channel, an outcome), shown as written: it is English."""
    return Text(value or "-", "en")


def _kind(t: dict[str, str], kind: str) -> str | Text:
    return t.get(kind, "") or _code(kind)


def _lists(t: dict[str, str], data: dict[str, Any]) -> str:
    items = []
    for entry in data["lists"]:
        lines = []
        consent, refusal = entry["consent"], entry["refusal"]
        if consent is not None:
            lines.append(fill(t["joined"], date=_day(consent["granted_at"])))
            lines.append(fill(t["proof"], source=consent["source"] or "-",
                              ip=consent["ip"] or "-", text=consent["text"] or "-"))
            if consent["revoked_at"]:
                lines.append(fill(t["revoked"], date=_day(consent["revoked_at"])))
        if refusal is not None:
            lines.append(fill(t["left"], date=_day(refusal["at"]),
                              kind=_kind(t, refusal["kind"]), channel=_code(refusal["channel"])))
        items.append(f"<dt>{escape(entry['label'])}</dt>"
                     + "".join(f"<dd>{line}</dd>" for line in lines))
    if not items:
        return f"<p>{escape(t['no_lists'])}</p>"
    return f'<dl id="lists">{"".join(items)}</dl>'


def _choices(t: dict[str, str], p: dict[str, str], data: dict[str, Any]) -> str:
    prefs = data["preferences"]
    freq = {"weekly": p["weekly"], "monthly": p["monthly"]}.get(prefs["frequency"] or "",
                                                               p["as_sent"])
    out = [fill(t["frequency"], value=freq),
           fill(t["off"], value=", ".join(prefs["off"]) or t["none"])]
    if prefs["paused_until"]:
        out.append(fill(t["paused"], date=_day(prefs["paused_until"])))
    return "<ul>" + "".join(f"<li>{line}</li>" for line in out) + "</ul>"


def _activity(t: dict[str, str], data: dict[str, Any]) -> str:
    eng = data["engagement"]["by_kind"]
    out = [fill(t["engaged"], kind=_code(e["kind"]), date=_day(e["at"])) for e in eng] or \
        [escape(t["no_activity"])]
    out.append(fill(t["sent"], days=f"{data['sends']['kept_days']:g}",
                    count=str(len(data["sends"]["recent"]))))
    return "<ul>" + "".join(f"<li>{line}</li>" for line in out) + "</ul>"


def _decisions(t: dict[str, str], data: dict[str, Any]) -> str:
    rows = ["<li>" + fill("{d} · {o} · {s}", d=_day(e["at"]), o=_code(e["outcome"]),
                          s=_code(e["stream"] or e["kind"])) + "</li>"
            for e in data["recent_decisions"][:SHOWN_DECISIONS]]
    return f"<ol>{''.join(rows)}</ol>" if rows else f"<p>{escape(t['no_decisions'])}</p>"


def data_page(lang: str, data: dict[str, Any]) -> str:
    """Every section of the export, in the person's language; a link back to the centre."""
    t, p = DATA[lang], PREFS[lang]
    left = data["all_marketing"]["refusal"]
    everything = fill(t["all_left"], date=_day(left["at"]), kind=_kind(t, left["kind"]),
                      channel=_code(left["channel"])) if left else escape(t["all_on"])
    intro = fill(t["intro"], address=data["address"], date=_day(data["exported_at"]))
    body = (
        f'<p id="intro">{intro}</p>'
        f'<h2>{escape(t["lists"])}</h2>{_lists(t, data)}'
        f'<h2>{escape(t["all"])}</h2><p id="all">{everything}</p>'
        f'<h2>{escape(t["choices"])}</h2>{_choices(t, p, data)}'
        f'<h2>{escape(t["activity"])}</h2>{_activity(t, data)}'
        f'<h2>{escape(t["decisions"])}</h2>{_decisions(t, data)}'
        f'<p><a href="" id="back">{escape(t["back"])}</a></p>'
    )
    return frame(lang, t["title"], body, _STYLE)
