"""Feedback-ID (Gmail's feedback loop): one value per stream and campaign, signed by DKIM."""

from __future__ import annotations

import re

from proxy.message import Message
from proxy.policy import Stream
from proxy.rewrite import field_name, header_fields

FEEDBACK_ID = b"Feedback-ID"
# The tool's own campaign id, when it writes one (the shipped policy classifies by it).
CAMPAIGN_HEADERS = ("X-Campaign-Id", "X-Campaign", "X-Mailgun-Campaign-Id")
_SAFE = re.compile(r"[^\x21-\x39\x3b-\x7e]+")  # what may not stand in a field: space, ':', 8-bit


def feedback_value(stream: Stream, message: Message) -> bytes | None:
    """The stream's Feedback-ID for this message, or None when the stream sets none.

    Gmail's format is ``a:b:c:SenderId``: up to three identifiers chosen by the
    sender and a fixed sender id last; the same for every copy of a campaign.
    """
    template = stream.bulk.feedback_id
    if not template:
        return None
    campaign = next((message.get(h) for h in CAMPAIGN_HEADERS if message.get(h)), "") or "none"
    values = {k: _SAFE.sub("-", v)[:64] or "none"
              for k, v in (("campaign", campaign), ("stream", stream.name),
                           ("list", stream.list))}
    return template.format(**values).encode("ascii", "replace")


def set_feedback_id(header_block: bytes, value: bytes) -> bytes:
    """The header block with one Feedback-ID field, ours (a tool's own is replaced)."""
    kept = [f for f in header_fields(header_block) if field_name(f) != b"feedback-id"]
    return b"".join(kept) + feedback_field(value)


def feedback_field(value: bytes) -> bytes:
    return FEEDBACK_ID + b": " + value + b"\r\n"
