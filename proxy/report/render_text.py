"""The report as plain figures: a dict (for --format json) and text for a terminal."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from proxy.report.bulk import BLIND
from proxy.report.compute import LINES, Report


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))


def coverage_note(r: Report) -> str:
    """One sentence when the window starts before the oldest audit entry kept, else ""."""
    if not r.uncovered:
        return ""
    if r.oldest_kept is None:
        return "The audit trail is empty: nothing in this window is recorded."
    return (f"The audit trail's oldest entry kept is from {iso(r.oldest_kept)}: this window "
            "starts earlier, so its figures cover only the time since then (entries "
            "trimmed by audit.max_entries / audit.max_age, or never written).")


def sample_note(r: Report) -> str:
    """How the lifecycle and re-permission counts were made, when not from everyone."""
    p = r.people
    if p.exact:
        return ""
    return (f"estimated from a uniform sample of {p.read:,} of {p.total:,} people: each "
            f"count within ±{p.margin:,} at 95 %; heed report --exact reads everyone")


def duration(seconds: float) -> str:
    """A duration in the largest unit that keeps it readable."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def percent(share: float | None) -> str:
    if share is None:
        return "n/a"
    return "no mail delivered" if math.isinf(share) else f"{share * 100:.2f} %"


def domain_status(r: Report, domain: str) -> str:
    """A domain's complaint status; a provider with no per-message feedback is never "good"."""
    if domain in r.blind:
        return f"{BLIND} ({r.blind[domain]})"
    return rate_status(r.rate(domain))


def domain_rate(r: Report, domain: str) -> str:
    return "n/a" if domain in r.blind else percent(r.rate(domain))


def rate_status(rate: float | None) -> str:
    """Where a complaint rate stands against the 0.1 % and 0.3 % lines."""
    if rate is None:
        return "no mail, no complaints"
    if rate >= LINES[1]:
        return "above 0.3 %"
    if rate >= LINES[0]:
        return "above 0.1 %"
    return "below 0.1 %"


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) else round(x, 6)


def as_dict(r: Report) -> dict[str, Any]:
    """Every figure, machine-readable (``heed report --format json``)."""
    return {
        "window": {"since": iso(r.since), "until": iso(r.now), "policy": r.policy_version,
                   "audit_entries_read": r.entries,
                   "oldest_audit_entry_kept": iso(r.oldest_kept) if r.oldest_kept else None,
                   "covered_whole": not r.uncovered},
        "refusals": {
            "received": dict(r.refusals), "tracked": r.tracked, "honoured": r.honoured,
            "by_channel": dict(r.channels), "later_mail_stopped": r.stopped,
            "time_to_effect_seconds": {"max": r.effect_max, "p99": r.effect_p99},
            "tool_told": {"refusals": len(r.told), "share": _finite(r.told_share),
                          "seconds": {"p50": r.told_seconds(0.5), "p99": r.told_seconds(0.99)}},
            "not_honoured": [{"address": v.address, "scope": v.scope,
                              "refused_at": iso(v.refused_at),
                              "delivered_at": iso(v.delivered_at), "stream": v.stream,
                              "shadow": v.shadow} for v in r.violations],
        },
        "clicks_to_leave": {str(k): n for k, n in sorted(r.clicks.items())},
        "one_click": {"delivered_marketing": r.delivered_total, "signed": r.signed,
                      "share": _finite(r.signed_share)},
        "body_link": {"delivered_marketing": r.delivered_total, **dict(r.body_links),
                      "share": _finite(r.body_link_share)},
        "complaints": {
            "total": r.complaint_total, "rate": _finite(r.rate()),
            "status": rate_status(r.rate()), "lines": list(LINES),
            "by_domain": [{"domain": d, "complaints": r.complaints[d],
                           "delivered": r.by_domain[d],
                           "rate": None if d in r.blind else _finite(r.rate(d)),
                           "status": domain_status(r, d),
                           "per_message_feedback": d not in r.blind} for d in r.domains()],
        },
        "lifecycle": {s: dict(c) for s, c in r.lifecycle.items()},
        "people": {"total": r.people.total, "read": r.people.read, "exact": r.people.exact,
                   "margin_95": r.people.margin},
        "engagement_by_source": dict(r.heard),
        "repermission": {s: dict(c) for s, c in r.asked.items()},
        "drops": {s: dict(c) for s, c in r.drops.items()},
        "delays": {s: dict(c) for s, c in r.delays.items()},
        "shadow": {s: {"delivered": r.shadow_delivered[s], "would": dict(c)}
                   for s, c in r.shadow.items()},
        "domain_guard": {d: {**dict(r.guarded.get(d, {})),
                             "complaints_on_record": r.guard_now.get(d, 0)}
                         for d in sorted(set(r.guarded) | set(r.guard_now))},
        "provider_guard": [{"provider": p.provider, "from": iso(p.start), "until": iso(p.until),
                            "cause": p.cause} for p in r.pauses],
        "daily": {d: dict(c) for d, c in sorted(r.daily.items())},
    }


def render_json(r: Report) -> str:
    return json.dumps(as_dict(r), indent=2, ensure_ascii=False) + "\n"


def _counts(title: str, table: dict[str, Any], out: list[str]) -> None:
    out.append(title)
    if not any(table.values()):
        out.append("  none")
    for stream, counts in sorted(table.items()):
        for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            out.append(f"  {stream:<16} {reason:<28} {n:>8}")


def render_text(r: Report) -> str:
    """The report for a terminal: the headline figures first, then the breakdowns."""
    out = [f"heed compliance report, {iso(r.since)} to {iso(r.now)} (policy {r.policy_version})",
           ""]
    if note := coverage_note(r):
        out += [f"Note: {note}", ""]
    received = ", ".join(f"{k} {n}" for k, n in sorted(r.refusals.items())) or "none"
    out += [f"Refusals received:            {sum(r.refusals.values())} ({received})",
            f"Refusals honoured:            {r.honoured} of {r.tracked}",
            f"Time from refusal to effect:  max {duration(r.effect_max)}, "
            f"p99 {duration(r.effect_p99)}",
            f"Refusals the tool was told of: {len(r.told)} of {r.tracked} "
            f"({percent(r.told_share)}), in p50 {duration(r.told_seconds(0.5))}, "
            f"p99 {duration(r.told_seconds(0.99))}",
            f"Later marketing mail stopped by a refusal: {r.stopped}"]
    for v in r.violations:
        out.append(f"  NOT honoured: {v.address} ({v.scope}) refused {iso(v.refused_at)}, "
                   f"mail delivered {iso(v.delivered_at)}{' in shadow mode' if v.shadow else ''}")
    clicks = ", ".join(f"{n} took {k} click{'s' if k > 1 else ''}"
                       for k, n in sorted(r.clicks.items())) or "no unsubscribes by click"
    out += [f"Clicks to leave:              {clicks}",
            f"Signed one-click on delivered marketing: {r.signed} of {r.delivered_total} "
            f"({percent(r.signed_share)})",
            f"Body unsubscribe link on delivered marketing: {_links(r)}",
            f"Complaint rate:               {percent(r.rate())} ({r.complaint_total} "
            f"complaints / {r.delivered_total} delivered), {rate_status(r.rate())}"]
    blind = sum(r.by_domain[d] for d in r.blind)
    if blind:
        out.append(f"  of which {blind} went to domains whose provider reports no complaint "
                   "per message (Gmail, Google Workspace, iCloud): their complaints are not "
                   "counted here; see Google Postmaster Tools (by Feedback-ID)")
    out += ["", "Complaints by receiving domain (lines: 0.1 % and 0.3 %)"]
    for d in r.domains()[:20]:
        out.append(f"  {d:<32} {r.complaints[d]:>6} / {r.by_domain[d]:>8}  "
                   f"{domain_rate(r, d):>18}  {domain_status(r, d)}")
    out += ["", "Lifecycle (people who may get each stream)"]
    if note := sample_note(r):
        out.append(f"  ({note})")
    for stream, stages in r.lifecycle.items():
        parts = ", ".join(f"{k} {n}" for k, n in stages.items()) or "nobody"
        out.append(f"  {stream:<16} {parts}")
    out += ["", "Engagement heard, by source (machine clicks are filtered: they do not count)"]
    out.append("  " + (", ".join(f"{k} {n}" for k, n in sorted(r.heard.items()))
                       or "nothing heard in this window"))
    out += ["", "Re-permission (people asked whether they still want mail, all time)"]
    if note := sample_note(r):
        out.append(f"  ({note})")
    for stream, answers in r.asked.items():
        out.append(f"  {stream:<16} " + ", ".join(f"{k} {n}" for k, n in answers.items()))
    if not r.asked:
        out.append("  no stream asks")
    out.append("")
    _counts("Drops by reason", r.drops, out)
    _counts("Delays by reason", r.delays, out)
    out += ["", "Shadow mode: what enforcement would have changed (the mail was delivered)"]
    if not r.shadow:
        out.append("  no stream in shadow mode in this window")
    for stream, counts in sorted(r.shadow.items()):
        for what, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            out.append(f"  {stream:<16} {what:<36} {n:>8}")
    out += ["", "Provider guard (marketing paused after a provider's throttling codes)"]
    if not r.pauses:
        out.append("  no provider paused in this window")
    for p in r.pauses:
        out.append(f"  {p.provider} paused {iso(p.start)} until {iso(p.until)}: {p.cause}")
    out += ["", "Domain guard"]
    if not r.guarded:
        out.append("  no domain paused in this window")
    for d, counts in sorted(r.guarded.items()):
        what = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
        out.append(f"  {d} paused: {what} (complaints on record: {r.guard_now.get(d, 0)})")
    return "\n".join(out) + "\n"


def _links(r: Report) -> str:
    n = r.body_links["yes"] + r.body_links["inserted"]
    parts = ", ".join(f"{k} {v}" for k, v in sorted(r.body_links.items()))
    return f"{n} of {r.delivered_total} ({percent(r.body_link_share)}; {parts or 'none'})"
