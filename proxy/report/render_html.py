"""The report as one self-contained HTML page with charts (inline SVG, no script)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape

from proxy.policy.model import STAGES
from proxy.report import svg
from proxy.report.bulk import BLIND
from proxy.report.compute import LINES, Report
from proxy.report.heard import ANSWERS
from proxy.report.render_text import (
    coverage_note,
    domain_rate,
    domain_status,
    duration,
    iso,
    percent,
    rate_status,
    sample_note,
)

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;
color:#1b1b1b}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #ccc}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(13rem,1fr));gap:.8rem}
.tile{border:1px solid #ccc;border-radius:6px;padding:.6rem .8rem}
.tile b{display:block;font-size:1.4rem}.bad{color:#b0413e}.ok{color:#2e8540}
figure{margin:1rem 0}figcaption{font-weight:600}
svg.chart{max-width:100%;height:auto;font-size:12px}svg .none{fill:#5b6770}
svg .line{fill:#b0413e}table{border-collapse:collapse}td,th{padding:.15rem .6rem;
text-align:left;border-bottom:1px solid #eee}details{margin:.4rem 0 1rem}
"""
_STATUS_COLOUR = {"above 0.3 %": "#b0413e", "above 0.1 %": "#d9822b"}


def _tile(label: str, value: str, note: str = "", good: bool | None = None) -> str:
    cls = "" if good is None else (' class="ok"' if good else ' class="bad"')
    return (f'<div class="tile">{escape(label)}<b{cls}>{escape(value)}</b>'
            f'{escape(note)}</div>')


def _table(head: tuple[str, ...], rows: list[tuple[object, ...]]) -> str:
    """The chart's figures as a table, folded away (the chart is the reading)."""
    if not rows:
        return ""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<details><summary>Figures</summary><table><tr>{th}</tr>{body}</table></details>"


def _by_reason(title: str, table: Mapping[str, Mapping[str, int]]) -> str:
    items = sorted(((f"{s}: {k}", float(n)) for s, c in table.items() for k, n in c.items()),
                   key=lambda kv: -kv[1])
    return (svg.bars(title, items, fmt=lambda v: f"{v:g}")
            + _table(("stream: reason", "recipients"), [(k, f"{v:g}") for k, v in items]))


def render_html(r: Report) -> str:
    honoured_ok = r.honoured == r.tracked
    rate = r.rate()
    parts = [f"<h1>heed compliance report</h1><p>{escape(iso(r.since))} to "
             f"{escape(iso(r.now))} · policy {escape(r.policy_version)} · "
             f"{r.entries} audit entries read</p>",
             f'<p class="note">{escape(note)}</p>' if (note := coverage_note(r)) else "",
             '<div class="tiles">',
             _tile("Refusals honoured", f"{r.honoured} of {r.tracked}",
                   "no marketing mail after the no", honoured_ok),
             _tile("Time from refusal to effect", f"max {duration(r.effect_max)}",
                   f"p99 {duration(r.effect_p99)}", r.effect_max == 0),
             _tile("Refusals the tool was told of", percent(r.told_share),
                   f"{len(r.told)} of {r.tracked}, in p50 {duration(r.told_seconds(0.5))}, "
                   f"p99 {duration(r.told_seconds(0.99))}",
                   None if r.told_share is None else r.told_share >= 1.0),
             _tile("Signed one-click on delivered marketing", percent(r.signed_share),
                   f"{r.signed} of {r.delivered_total} copies",
                   None if r.signed_share is None else r.signed_share >= 1.0),
             _tile("Body unsubscribe link on delivered marketing", percent(r.body_link_share),
                   f"{r.body_links['yes'] + r.body_links['inserted']} of {r.delivered_total} "
                   "copies", None if r.body_link_share is None else r.body_link_share >= 1.0),
             _tile("Complaint rate", percent(rate), rate_status(rate),
                   None if rate is None else rate < LINES[0]),
             "</div>"]

    parts.append("<h2>Refusals</h2><p>A refusal is honoured when no marketing mail for its "
                 "list went to the person after it was recorded. Time to effect is how long "
                 "mail still went out after the no (0 when none did). "
                 f"Later marketing mail stopped by a refusal: {r.stopped}.</p>")
    parts.append(svg.bars("Refusals received by kind",
                          [(k, float(n)) for k, n in sorted(r.refusals.items())],
                          fmt=lambda v: f"{v:g}"))
    parts.append(svg.bars("Refusals honoured and not honoured",
                          [("honoured", float(r.honoured)),
                           ("not honoured", float(r.tracked - r.honoured))],
                          fmt=lambda v: f"{v:g}", colours=(svg.PALETTE[2], svg.PALETTE[4])))
    parts.append(_table(("address", "list", "refused", "mail delivered", "shadow"),
                        [(v.address, v.scope, iso(v.refused_at), iso(v.delivered_at),
                          "yes" if v.shadow else "no") for v in r.violations]))
    parts.append("<h2>Clicks to leave</h2><p>One-click (the mail client's button) and mailto "
                 "take 1; the link's page takes 2 (open, press), for its list or for all "
                 "marketing; the preference centre's \"leave everything\" takes 3 (open the "
                 "link, \"choose what you receive\", press).</p>")
    parts.append(svg.bars("Unsubscribes by the number of clicks they took",
                          [(f"{k} click{'s' if k > 1 else ''}", float(n))
                           for k, n in sorted(r.clicks.items())], fmt=lambda v: f"{v:g}"))

    parts.append("<h2>Complaints by receiving domain</h2><p>Complaints per delivered "
                 "marketing copy; the dashed lines are 0.1 % (keep below) and 0.3 % "
                 "(never reach).</p>")
    if r.blind:
        parts.append("<p>Complaints from " + escape(", ".join(sorted(r.blind))) + " are "
                     f"<strong>{BLIND}</strong>: their providers (Gmail, Google Workspace, "
                     "iCloud) send none, so no rate is shown for them; Google's figures are in "
                     "Postmaster Tools, grouped by Feedback-ID.</p>")
    domains = [d for d in r.domains() if r.complaints[d] and d not in r.blind][:15]
    shown = [(d, (r.rate(d) or 0.0) * 100) for d in domains]
    parts.append(svg.bars(
        "Complaint rate per receiving domain, percent", shown,
        fmt=lambda v: "complaints, no mail delivered" if math.isinf(v) else f"{v:.2f} %",
        lines=((LINES[0] * 100, "0.1 %"), (LINES[1] * 100, "0.3 %")), limit=1.0,
        colours=[_STATUS_COLOUR.get(rate_status(r.rate(d)), svg.PALETTE[0]) for d in domains]))
    parts.append(_table(("domain", "complaints", "delivered", "rate", "status"),
                        [(d, r.complaints[d], r.by_domain[d], domain_rate(r, d),
                          domain_status(r, d)) for d in r.domains()]))
    # Every day of the window, quiet ones too, so the lines show the gaps.
    first = int(r.since // 86400)
    days = [iso(d * 86400.0)[:10] for d in range(first, int(r.now // 86400) + 1)][-366:]
    parts.append(svg.lines("Delivered marketing, refusals and complaints per day", days,
                           [(name, [float(r.daily[d][name] if d in r.daily else 0) for d in days])
                            for name in ("delivered", "refusals", "complaints")]))

    parts.append("<h2>Lifecycle</h2><p>People who may get each marketing stream, by stage "
                 "(refused: said no to it).</p>")
    if note := sample_note(r):
        parts.append(f'<p class="note">{escape(note[0].upper() + note[1:])}.</p>')
    order = (*STAGES, "refused")
    parts.append(svg.stacked("Lifecycle stages per stream", [
        (s, [(k, float(c[k])) for k in order if c[k]]) for s, c in r.lifecycle.items()]))
    parts.append(_table(("stream", *order), [(s, *(c[k] for k in order))
                                             for s, c in r.lifecycle.items()]))

    parts.append("<h2>What heed hears</h2><p>Engagement by source in this window; machine "
                 "clicks (link scanners) are filtered and never count as an answer.</p>")
    parts.append(_table(("source", "engagements"), sorted(r.heard.items())))
    parts.append("<p>Re-permission: people asked whether they still want a stream's mail "
                 "(all time), and their answers.</p>")
    parts.append(_table(("stream", *ANSWERS), [(s, *(c[k] for k in ANSWERS))
                                               for s, c in r.asked.items()]))

    parts.append("<h2>Drops and delays by reason</h2>")
    parts.append(_by_reason("Recipients dropped, by stream and reason", r.drops))
    parts.append(_by_reason("Recipients delayed, by stream and reason", r.delays))

    parts.append("<h2>Shadow mode: what enforcement would have changed</h2><p>Streams in "
                 "shadow mode decide and record, but deliver: these copies went out.</p>")
    parts.append(_by_reason("Shadow decisions, by stream and what would have happened",
                            r.shadow))

    parts.append("<h2>Provider guard</h2>")
    if r.pauses:
        parts.append(_table(("provider", "paused from", "until", "cause"),
                            [(p.provider, iso(p.start), iso(p.until), p.cause)
                             for p in r.pauses]).replace("<details>", "<details open>"))
    else:
        parts.append("<p>No mailbox provider was paused in this window.</p>")
    parts.append("<h2>Domain guard</h2>")
    if r.guarded:
        parts.append("<p>Marketing to these domains was paused after complaints from "
                     "their users.</p>")
        parts.append(_by_reason("Recipients paused by the domain guard, by domain",
                                {d: dict(c) for d, c in r.guarded.items()}))
    else:
        parts.append("<p>No domain was paused in this window.</p>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>heed compliance report {escape(iso(r.now))}</title><style>{_CSS}</style>"
            f"</head><body><main>{''.join(parts)}</main></body></html>\n")
