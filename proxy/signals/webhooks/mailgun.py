"""Mailgun webhooks: HMAC-SHA256 of timestamp + token with the webhook signing key.

The signature sits in the JSON body (``signature: {timestamp, token, signature}``);
a timestamp older than ``webhooks.mailgun_max_age`` or a token seen before is a
replay and refused.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.signals.events import Event
from proxy.signals.webhooks import WebhookError, event, load_json, obj, word

# (token, seconds to remember it) -> True the first time it is seen.
Nonce = Callable[[str, float], Awaitable[bool]]


def parse(body: bytes) -> dict[str, Any]:
    payload = load_json(body, dict, "{signature, event-data}")
    if not isinstance(payload.get("signature"), dict):
        raise WebhookError(400, "expected {signature, event-data}")
    return dict(payload)


async def verify(key: str, payload: dict[str, Any], now: float, max_age: float,
                 first_use: Nonce) -> None:
    """Raises WebhookError(401) unless Mailgun signed it recently and it was not seen before."""
    sig = payload["signature"]
    stamp, token, given = (str(sig.get(k, "")) for k in ("timestamp", "token", "signature"))
    expected = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    # Bytes, not str: compare_digest refuses non-ASCII text (a forged signature's 500).
    if not token or not hmac.compare_digest(expected.encode(), given.lower().encode()):
        raise WebhookError(401, "signature does not verify")
    try:
        age = now - float(stamp)
    except ValueError:
        raise WebhookError(401, "timestamp unreadable") from None
    if not -max_age <= age <= max_age:
        raise WebhookError(401, "timestamp too old: a replay?")
    if not await first_use(token, 2 * max_age):
        raise WebhookError(401, "token seen before: a replay")


KINDS = {"complained": "complaint", "unsubscribed": "unsubscribe", "opened": "open",
         "clicked": "click"}


def events(payload: dict[str, Any], now: float) -> list[Event]:
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise WebhookError(400, "no event-data")
    name = word(data.get("event"))
    common = {"at": data.get("timestamp"), "id": data.get("id", "")}
    found: Event | None = None
    if name == "failed":
        status = obj(data.get("delivery-status"))
        how = "hard" if data.get("severity") == "permanent" else "soft"
        detail = f"{data.get('severity')}; {data.get('reason', '')}; " \
                 f"{status.get('code', '')} {status.get('message', '')}"
        found = event("bounce", data.get("recipient"), "mailgun", now, bounce=how,
                      detail=detail, **common)
    elif name in KINDS:
        found = event(KINDS[name], data.get("recipient"), "mailgun", now, detail=str(name),
                      **common)
    return [found] if found is not None else []
