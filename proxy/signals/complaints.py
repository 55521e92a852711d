"""Complaints: ARF reports (RFC 5965) of every feedback type, and forwarded abuse mail.

A person's "this is spam" reaches heed as an ARF report (Feedback-Type with the
complained-about message attached: Yahoo CFL, AOL, Microsoft JMRP, most ESP
loops), or as the message itself forwarded as message/rfc822 with no report part
(some providers and people do that). Either way the person is named by heed's
own token in the quoted headers (VERP return path, List-Unsubscribe) or, less
trusted, by what the report says: Original-Rcpt-To, X-HmXmrOriginalRecipient,
the quoted To.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from proxy.signals.bounce_read import Reading, address_of

# RFC 5965 §7.3 and RFC 6650: a person's no refuses; a virus or authentication report
# (RFC 6591) is about the message or the domain, so it is only recorded.
REFUSING = frozenset(("abuse", "fraud", "opt-out", "optout", "other"))
RECORDED = frozenset(("virus", "auth-failure", "dmarc"))
NOT_A_COMPLAINT = frozenset(("not-spam",))
_QUOTED = re.compile(r"^(X-HmXmrOriginalRecipient|Original-Rcpt-To|X-Original-To|To)"
                     r"\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Feedback:
    """One complaint: its feedback type, whether it refuses, and who it names (untrusted)."""

    kind: str
    refuses: bool
    address: str | None
    detail: str


def feedback(reading: Reading, *, to_complaints: bool) -> list[Feedback]:
    """The complaints a report carries; ``to_complaints``: it came to heed's fbl@ address."""
    quoted = _quoted(reading.original)
    if reading.kind == "arf" and reading.feedback:
        report = reading.feedback[0]
        kind = str(report.get("Feedback-Type", "") or "abuse").strip().lower()
        if kind in NOT_A_COMPLAINT:
            return []
        agent = str(report.get("User-Agent", "") or "-").strip()
        detail = f"feedback {kind}; {agent}"
        named = [address_of(v) for v in report.get_all("Original-Rcpt-To") or []]
        addresses: list[str | None] = [a for a in named if a] or [quoted]
        refuses = kind not in RECORDED
        return [Feedback(kind, refuses, a, detail) for a in addresses]
    if to_complaints and not reading.kind and reading.attached and not _bounce_like(reading):
        # Forwarded as message/rfc822 without a feedback-report part: still "abuse".
        return [Feedback("abuse", True, quoted, "feedback abuse; forwarded message")]
    return []


_BOUNCE_FROM = re.compile(r"mailer-daemon|postmaster|mail delivery", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(r"undeliver|delivery (status|failure|notification)|returned mail|"
                             r"failure notice|could not be delivered", re.IGNORECASE)


def _bounce_like(reading: Reading) -> bool:
    """A bounce sent to the complaints address is not somebody's complaint."""
    headers = reading.headers
    if headers is None:
        return False
    return bool(_BOUNCE_FROM.search(str(headers.get("From", "") or ""))
                or _BOUNCE_SUBJECT.search(str(headers.get("Subject", "") or "")))


def _quoted(original: str) -> str | None:
    """The recipient the complained-about copy names in its own headers, if any."""
    found: dict[str, str] = {}
    for name, value in _QUOTED.findall(original[:20000]):
        addr = address_of(value)
        if addr and name.lower() not in found:
            found[name.lower()] = addr
    for name in ("x-hmxmroriginalrecipient", "original-rcpt-to", "x-original-to", "to"):
        if name in found:
            return found[name]
    return None
