"""Small inline SVG charts for the HTML report: no script, no external assets, each with a
title and a description that screen readers announce (role="img", aria-labelledby)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from html import escape

# Colours with text beside them: a bar's meaning never rests on its colour alone.
PALETTE = ("#1f5fa8", "#d9822b", "#2e8540", "#7b4fa0", "#b0413e", "#5b6770")
WIDTH = 640
_ids = itertools.count(1)


def _frame(title: str, desc: str, height: float, body: str) -> str:
    n = next(_ids)
    return (f'<figure><figcaption>{escape(title)}</figcaption>'
            f'<svg class="chart" role="img" aria-labelledby="t{n} d{n}" viewBox="0 0 {WIDTH} '
            f'{height:.0f}" width="{WIDTH}" height="{height:.0f}" '
            f'xmlns="http://www.w3.org/2000/svg">'
            f'<title id="t{n}">{escape(title)}</title><desc id="d{n}">{escape(desc)}</desc>'
            f'{body}</svg></figure>')


def bars(title: str, items: Sequence[tuple[str, float]], *, fmt: Callable[[float], str] = str,
         lines: Sequence[tuple[float, str]] = (), colours: Sequence[str] = (),
         limit: float | None = None) -> str:
    """Horizontal bars, one per item, with optional vertical reference lines.

    ``limit`` caps the scale (so reference lines near zero stay readable): a longer bar
    runs to the edge and its label still says its true value.
    """
    if not items:
        return _frame(title, f"{title}: nothing to show", 30,
                      '<text x="4" y="20" class="none">nothing in this window</text>')
    label_w, value_w, row = 200, 110, 24
    top = 18 if lines else 4
    scale_max = max([v for _, v in items] + [v for v, _ in lines]) or 1.0
    if limit is not None:
        scale_max = min(scale_max, limit)
    span = WIDTH - label_w - value_w
    body = []
    for i, (label, value) in enumerate(items):
        y = top + i * row
        w = max(1.0, span * min(value, scale_max) / scale_max) if value else 0.0
        colour = colours[i] if i < len(colours) else PALETTE[0]
        body.append(
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{escape(label[:30])}</text>'
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" '
            f'fill="{colour}"><title>{escape(label)}: {escape(fmt(value))}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 16}">{escape(fmt(value))}</text>')
    height = top + len(items) * row + 4
    for value, name in lines:
        x = label_w + span * value / scale_max
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height}" '
                    f'stroke="#b0413e" stroke-dasharray="4 3"/>'
                    f'<text x="{x:.1f}" y="12" text-anchor="middle" class="line">'
                    f'{escape(name)}</text>')
    desc = "; ".join(f"{label}: {fmt(value)}" for label, value in items)
    if lines:
        desc += ". Reference lines: " + ", ".join(name for _, name in lines)
    return _frame(title, desc, height, "".join(body))


def stacked(title: str, rows: Sequence[tuple[str, Sequence[tuple[str, float]]]]) -> str:
    """One horizontal bar per row, split into its parts, with a legend."""
    label_w, row = 140, 28
    names = list(dict.fromkeys(name for _, parts in rows for name, _ in parts))
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    body = []
    for i, name in enumerate(names):  # the legend, in words
        x = label_w + i * 100
        body.append(f'<rect x="{x}" y="4" width="12" height="12" fill="{colour[name]}"/>'
                    f'<text x="{x + 16}" y="15">{escape(name)}</text>')
    span = WIDTH - label_w - 10
    for i, (label, parts) in enumerate(rows):
        y = 24 + i * row
        total = sum(v for _, v in parts) or 1.0
        body.append(f'<text x="{label_w - 6}" y="{y + 18}" text-anchor="end">'
                    f'{escape(label)}</text>')
        at = float(label_w)
        for name, value in parts:
            w = span * value / total
            body.append(f'<rect x="{at:.1f}" y="{y + 4}" width="{w:.1f}" height="{row - 8}" '
                        f'fill="{colour[name]}"><title>{escape(label)}, {escape(name)}: '
                        f'{value:g}</title></rect>')
            at += w
    desc = "; ".join(f"{label}: " + ", ".join(f"{n} {v:g}" for n, v in parts)
                     for label, parts in rows) or "nothing to show"
    return _frame(title, desc, 24 + max(1, len(rows)) * row + 4, "".join(body))


def lines(title: str, days: Sequence[str], series: Sequence[tuple[str, Sequence[float]]]) -> str:
    """Daily values as lines, one per series, with the first and last day labelled."""
    left, right, top, height = 50, 10, 24, 180
    plot_h = height - top - 24
    peak = max([v for _, values in series for v in values] + [1.0])
    step = (WIDTH - left - right) / max(1, len(days) - 1)
    body = [f'<line x1="{left}" y1="{top + plot_h}" x2="{WIDTH - right}" y2="{top + plot_h}" '
            f'stroke="#999"/><text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak:g}'
            f'</text><text x="{left - 4}" y="{top + plot_h}" text-anchor="end">0</text>']
    if days:
        body.append(f'<text x="{left}" y="{height - 4}">{escape(days[0])}</text>'
                    f'<text x="{WIDTH - right}" y="{height - 4}" text-anchor="end">'
                    f'{escape(days[-1])}</text>')
    for i, (name, values) in enumerate(series):
        c = PALETTE[i % len(PALETTE)]
        points = " ".join(f"{left + j * step:.1f},{top + plot_h - plot_h * v / peak:.1f}"
                          for j, v in enumerate(values))
        body.append(f'<polyline points="{points}" fill="none" stroke="{c}" stroke-width="2"/>'
                    f'<rect x="{left + i * 140}" y="4" width="12" height="12" fill="{c}"/>'
                    f'<text x="{left + i * 140 + 16}" y="15">{escape(name)}</text>')
        for j, v in enumerate(values):
            body.append(f'<circle cx="{left + j * step:.1f}" '
                        f'cy="{top + plot_h - plot_h * v / peak:.1f}" r="3" fill="{c}">'
                        f'<title>{escape(days[j])}: {escape(name)} {v:g}</title></circle>')
    desc = "; ".join(f"{name}: " + ", ".join(f"{d} {v:g}" for d, v in zip(days, values,
                                                                           strict=True))
                     for name, values in series) or "nothing to show"
    return _frame(title, desc, height, "".join(body))
