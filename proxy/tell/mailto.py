"""The unsubscribe mail to the tool's own mailto (RFC 2369 §3.2, RFC 6068), sent upstream."""

from __future__ import annotations

import email.utils
from urllib.parse import parse_qs, unquote, urlsplit

from proxy.keys import is_address

DEFAULT_SUBJECT = "unsubscribe"


class BadMailto(ValueError):
    """The tool's mailto cannot be used (permanent: the job is given up)."""


def parse_mailto(uri: str) -> tuple[str, str, str]:
    """(address, subject, body) of a mailto URI; subject/body default to "unsubscribe"."""
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # "mailto://[…": the tool's header is untrusted text
        raise BadMailto(f"not a mailto URI ({exc})") from None
    if parts.scheme.lower() != "mailto":
        raise BadMailto("not a mailto URI")
    to = unquote(parts.path)
    query = {k.lower(): v for k, v in parse_qs(parts.query).items()}
    if not to and "to" in query:
        to = query["to"][0]
    if "," in to or not is_address(to):
        raise BadMailto(f"not one address: {to!r}")
    subject = query.get("subject", [DEFAULT_SUBJECT])[0]
    body = query.get("body", [DEFAULT_SUBJECT])[0]
    # Header injection: the tool's text lands in a header field and in the body.
    if any(c in subject for c in "\r\n") or len(subject) > 200:
        subject = DEFAULT_SUBJECT
    return to, subject, body[:2000]


def unsubscribe_mail(uri: str, sender: str, job_id: str, now: float,
                     hostname: str) -> tuple[str, bytes]:
    """(recipient, message bytes): the mail a mail client sends for a mailto unsubscribe.

    The Message-ID comes from the job's id: a retry after a lost reply is the same mail.
    """
    to, subject, body = parse_mailto(uri)
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(now, usegmt=True)}",
        f"Message-ID: <{job_id}@{hostname}>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "Auto-Submitted: auto-generated",  # RFC 3834 §5: no auto-replies to this
        "",
        *body.replace("\r\n", "\n").split("\n"),
    ]
    return to, ("\r\n".join(lines) + "\r\n").encode("utf-8")
