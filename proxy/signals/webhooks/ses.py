"""Amazon SES bounce and complaint notifications delivered by Amazon SNS over HTTPS.

The SNS envelope is signed (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) with
the key of an X.509 certificate published at SigningCertURL; heed fetches that
certificate only from an allow-listed host over https, and checks the signature
over the fields SNS names, in its order, before reading the SES notification.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from proxy.signals.events import Event
from proxy.signals.webhooks import WebhookError, event, items, load_json, obj
from proxy.state import parse_time

log = logging.getLogger("heed.webhooks.ses")

CertFetcher = Callable[[str], Awaitable[bytes]]
# The fields each message type signs, in this order (SNS "Verifying the signatures").
SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                 "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                                "TopicArn", "Type"),
}
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERT = 64 * 1024


def string_to_sign(message: dict[str, Any]) -> bytes:
    """``name\\nvalue\\n`` for each signed field present (Subject only when present)."""
    fields = SIGNED.get(str(message.get("Type")))
    if fields is None:
        raise WebhookError(400, "unknown SNS message type")
    out = []
    for name in fields:
        if name in message and message[name] is not None:
            out.append(f"{name}\n{message[name]}\n")
        elif name != "Subject":
            raise WebhookError(400, f"SNS message lacks {name}")
    return "".join(out).encode("utf-8")


def cert_url_allowed(url: str, hosts: Sequence[str]) -> bool:
    """https, an allow-listed host, a .pem path: never a certificate from anywhere else."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for one out of range
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    return (parts.scheme == "https" and port in (None, 443) and not parts.username
            and parts.path.endswith(".pem") and any(_host_matches(host, p) for p in hosts))


def _host_matches(host: str, pattern: str) -> bool:
    """A glob per DNS label: ``*`` is one label, never several. fnmatch alone let
    "sns.*.amazonaws.com" take "sns.evil.s3.amazonaws.com", a host others can serve from."""
    labels, wanted = host.split("."), pattern.lower().split(".")
    return len(labels) == len(wanted) and all(
        fnmatch.fnmatchcase(label, glob) for label, glob in zip(labels, wanted, strict=True))


async def fetch_cert(url: str) -> bytes:
    """GET the signing certificate (production); tests inject their own fetcher."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
            url, allow_redirects=False) as response:
        if response.status != 200:
            raise WebhookError(401, "signing certificate unavailable")
        data = b""
        async for chunk in response.content.iter_chunked(8192):
            data += chunk
            if len(data) > MAX_CERT:
                raise WebhookError(401, "signing certificate too large")
        return data


class SnsVerifier:
    """Checks an SNS message's signature; certificates are cached by URL."""

    def __init__(self, hosts: Sequence[str], fetch: CertFetcher = fetch_cert,
                 topics: Sequence[str] = ()) -> None:
        self.hosts = tuple(hosts)
        self.fetch = fetch
        self.topics = frozenset(topics)
        self._certs: dict[str, rsa.RSAPublicKey] = {}

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._certs.get(url)
        if key is None:
            try:
                cert = x509.load_pem_x509_certificate(await self.fetch(url))
            except ValueError:
                raise WebhookError(401, "signing certificate unreadable") from None
            now = datetime.now(UTC)
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise WebhookError(401, "signing certificate expired or not yet valid")
            public = cert.public_key()
            if not isinstance(public, rsa.RSAPublicKey):
                raise WebhookError(401, "signing certificate is not RSA")
            key = self._certs[url] = public
        return key

    async def verify(self, message: dict[str, Any]) -> None:
        """Raises WebhookError(401) unless SNS signed this message (and its topic is allowed)."""
        algorithm = HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise WebhookError(401, "unknown SNS signature version")
        url = str(message.get("SigningCertURL") or message.get("SigningCertUrl") or "")
        if not cert_url_allowed(url, self.hosts):
            raise WebhookError(401, "signing certificate URL not allowed")
        if self.topics and message.get("TopicArn") not in self.topics:
            raise WebhookError(401, "topic not allowed")
        try:
            signature = base64.b64decode(str(message.get("Signature", "")), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookError(401, "signature unreadable") from None
        data = string_to_sign(message)
        key = await self._key(url)
        try:
            key.verify(signature, data, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise WebhookError(401, "signature does not verify") from None


def check_age(message: dict[str, Any], now: float, max_age: float) -> None:
    """WebhookError(401) for a notification older than ``max_age`` (or as far ahead): a replay.

    SNS signs its Timestamp, so a captured notification cannot be made young again.
    """
    try:
        at = parse_time(str(message.get("Timestamp") or ""), float("nan"))
    except ValueError:
        raise WebhookError(401, "SNS Timestamp unreadable") from None
    if not abs(now - at) <= max_age:  # NaN (no Timestamp) fails too
        raise WebhookError(401, "SNS notification too old (or ahead): a replay")


def ses_events(notification: dict[str, Any], message_id: str, now: float) -> list[Event]:
    """Events of one SES notification (or event-publishing record)."""
    kind = notification.get("notificationType") or notification.get("eventType")
    mail = obj(notification.get("mail"))
    out: list[Event | None] = []
    if kind == "Bounce":
        bounce = obj(notification.get("bounce"))
        how = "hard" if bounce.get("bounceType") == "Permanent" else "soft"
        for r in items(bounce.get("bouncedRecipients")):
            detail = (f"{bounce.get('bounceType')}/{bounce.get('bounceSubType')}; "
                      f"{r.get('status', '')} {r.get('diagnosticCode', '')}")
            out.append(event("bounce", r.get("emailAddress"), "ses", now, bounce=how,
                             at=bounce.get("timestamp"), id=f"{message_id}|{r.get('emailAddress')}",
                             detail=detail))
    elif kind == "Complaint":
        complaint = obj(notification.get("complaint"))
        feedback = complaint.get("complaintFeedbackType") or "abuse"
        if feedback != "not-spam":
            out.extend(event("complaint", r.get("emailAddress"), "ses", now,
                             at=complaint.get("timestamp"), id=message_id,
                             detail=f"feedback {feedback}")
                       for r in items(complaint.get("complainedRecipients")))
    elif kind in ("Open", "Click"):
        record = obj(notification.get(kind.lower()))
        destination = mail.get("destination")
        out.extend(event(kind.lower(), r, "ses", now, at=record.get("timestamp"), id=message_id)
                   for r in (destination if isinstance(destination, list) else []))
    return [e for e in out if e is not None]


def parse_sns(body: bytes) -> dict[str, Any]:
    return dict(load_json(body, dict, "an SNS message"))


def notification_of(message: dict[str, Any]) -> dict[str, Any]:
    """The SES notification inside a verified SNS Notification's Message."""
    return dict(load_json(str(message.get("Message", "")).encode(), dict,
                          "an SES notification in the SNS Message"))
