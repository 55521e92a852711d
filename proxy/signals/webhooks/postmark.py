"""Postmark webhooks: no signature; basic auth or a secret path, as configured.

One JSON object per request, told apart by ``RecordType``.
"""

from __future__ import annotations

import logging
from typing import Any

from proxy.signals.events import Event
from proxy.signals.webhooks import event, load_json, word

log = logging.getLogger("heed.webhooks.postmark")

# Bounce "Type" values (Postmark's bounce types) that say the address is gone, and those
# that are temporary; the rest (auto-responders, challenge mails…) are no answer at all.
HARD = frozenset(("HardBounce", "BadEmailAddress"))
SOFT = frozenset(("SoftBounce", "Transient", "DnsError", "Blocked", "MailboxFull"))
SUPPRESSION = {"HardBounce": ("bounce", "hard"), "SpamComplaint": ("complaint", None),
               "ManualSuppression": ("unsubscribe", None)}


def events(body: bytes, now: float) -> list[Event]:
    item = load_json(body, dict, "a JSON object")
    # Postmark's bounce webhook sent no RecordType before it had other record types
    # (and some accounts' payloads still lack it): a Type and an Email make it a bounce.
    record = word(item.get("RecordType")) or ("Bounce" if "Type" in item and "Email" in item
                                              else None)
    found: Event | None = None
    common: dict[str, Any] = {"id": item.get("ID") or item.get("MessageID") or ""}
    if record == "Bounce":
        kind = word(item.get("Type"))
        detail = f"{kind}; {item.get('Details', '')}"
        if kind in HARD or kind in SOFT:
            found = event("bounce", item.get("Email"), "postmark", now, at=item.get("BouncedAt"),
                          bounce="hard" if kind in HARD else "soft", detail=detail, **common)
        elif kind in ("SpamComplaint", "Unsubscribe"):
            found = event("complaint" if kind == "SpamComplaint" else "unsubscribe",
                          item.get("Email"), "postmark", now, at=item.get("BouncedAt"),
                          detail=detail, **common)
    elif record == "SpamComplaint":
        found = event("complaint", item.get("Email"), "postmark", now, at=item.get("BouncedAt"),
                      detail="spam complaint", **common)
    elif record in ("Open", "Click"):
        found = event(record.lower(), item.get("Recipient"), "postmark", now,
                      at=item.get("ReceivedAt"), **common)
    elif record == "SubscriptionChange":
        reason = word(item.get("SuppressionReason"))
        if item.get("SuppressSending") is True and reason in SUPPRESSION:
            kind, how = SUPPRESSION[reason]
            found = event(kind, item.get("Recipient"), "postmark", now,
                          at=item.get("ChangedAt"), bounce=how, detail=f"suppressed: {reason}",
                          **common)
        elif item.get("SuppressSending") is False:
            # Reactivated at Postmark: a "no" recorded in heed stays (lift it with heed).
            log.info("postmark reactivation ignored: heed keeps its refusals")
    return [found] if found is not None else []
