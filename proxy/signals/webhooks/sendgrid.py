"""SendGrid's event webhook: ECDSA P-256 signatures over timestamp + body (Signed Event Webhook).

SendGrid signs ``X-Twilio-Email-Event-Webhook-Timestamp`` followed by the raw body
with SHA-256 and sends the DER signature, base64, in
``X-Twilio-Email-Event-Webhook-Signature``; the verification key it shows is
base64 DER (SubjectPublicKeyInfo).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.signals.events import Event
from proxy.signals.webhooks import WebhookError, event, load_json, word

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def load_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER), or PEM."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"webhooks.sendgrid_public_key is not a public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("webhooks.sendgrid_public_key is not an ECDSA key")
    return key


def verify(key: ec.EllipticCurvePublicKey, headers: Any, body: bytes, now: float,
           max_age: float) -> None:
    """Raises WebhookError(401) unless SendGrid signed this body recently."""
    signature, stamp = headers.get(SIGNATURE, ""), headers.get(TIMESTAMP, "")
    try:
        sent = float(stamp)
        raw = base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise WebhookError(401, "signature headers missing or unreadable") from None
    try:
        key.verify(raw, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookError(401, "signature does not verify") from None
    if abs(now - sent) > max_age:
        raise WebhookError(401, "signed timestamp too old: a replay?")


# "bounce" events carry type "bounce" (permanent) or "blocked" (the receiver refused
# for now). "deferred" (SendGrid retries) and "dropped" (SendGrid's own suppression)
# are not the recipient's answer. A group unsubscribe names a SendGrid group, not a
# heed list, so it is taken as a no to all marketing: more than asked, never less.
KINDS = {"spamreport": "complaint", "unsubscribe": "unsubscribe",
         "group_unsubscribe": "unsubscribe", "open": "open", "click": "click"}


def events(body: bytes, now: float) -> list[Event]:
    items = load_json(body, list, "a JSON array of events")
    out: list[Event | None] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        name = word(item.get("event"))
        common = {"at": item.get("timestamp"), "id": item.get("sg_event_id", "")}
        if name == "bounce":
            how = "soft" if item.get("type") == "blocked" else "hard"
            detail = f"{item.get('type', 'bounce')}; {item.get('status', '')} " \
                     f"{item.get('reason', '')}"
            out.append(event("bounce", item.get("email"), "sendgrid", now, bounce=how,
                             detail=detail, **common))
        elif name in KINDS:
            out.append(event(KINDS[name], item.get("email"), "sendgrid", now,
                             detail=str(name), **common))
    return [e for e in out if e is not None]
