"""Signed outbound webhooks, the Standard Webhooks way (webhook-id, -timestamp, -signature)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp

from proxy.tell.oneclick import Outcome
from proxy.tell.outbox import Event

PREFIX = "whsec_"


def secret_bytes(secret: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret (Standard Webhooks: the part after the prefix)."""
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secrets: tuple[str, ...], msg_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` per secret, space-separated: a
    receiver accepts any one, so a secret is rotated by adding the new one first."""
    content = f"{msg_id}.{timestamp}.{body}".encode()
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_bytes(s), content, hashlib.sha256).digest())
        .decode() for s in secrets)


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def payload(event: Event) -> str:
    """The JSON body for one event (documented in the OpenAPI document's webhooks)."""
    data: dict[str, Any] = {"event_id": event.id, "at": _iso(event.at)}
    if event.address:
        data["address"] = event.address
    if "suppression_id" in event.data:  # an erased person: only the keyed hash
        data["suppression_id"] = event.data["suppression_id"]
    if event.list:
        data["list"] = None if event.list == "*" else event.list
    if event.kind:
        data["kind"] = event.kind
    if event.channel:
        data["channel"] = event.channel
    for name in ("off", "paused_until", "frequency", "reason", "lifted", "stream", "stage"):
        if name in event.data:
            data[name] = event.data[name]
    return json.dumps({"type": event.type, "timestamp": _iso(event.at), "data": data},
                      ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class WebhookSender:
    """POSTs signed payloads to configured endpoints (trusted: named in heed's config)."""

    def __init__(self, endpoints: tuple[tuple[str, tuple[str, ...]], ...],
                 timeout: float) -> None:
        self.secrets = dict(endpoints)
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def send(self, url: str, msg_id: str, body: str, now: float) -> Outcome:
        secrets = self.secrets.get(url)
        if not secrets:
            return Outcome(False, detail="endpoint no longer configured")
        timestamp = int(now)
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(secrets, msg_id, timestamp, body),
                   "Content-Type": "application/json"}
        if self._session is None:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(url, data=body.encode(), headers=headers,
                                          allow_redirects=False) as response:
                status = response.status  # the body is not read: only the status counts
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(False, retry=True, detail=f"{type(exc).__name__}: {exc}"[:300])
        if 200 <= status < 300:
            return Outcome(True, detail=f"HTTP {status}")
        # At least once: any other answer is tried again, until the dead-letter list.
        return Outcome(False, retry=True, detail=f"HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


_TYPES = {
    "refusal.created": "a person said no: `list` null means every list; kind unsubscribe, "
                       "complaint, bounce or manual; channel where heed heard it",
    "refusal.lifted": "a refusal lifted by hand (`heed suppression lift`), with `reason`",
    "consent.granted": "consent granted for `list` (channel: its source)",
    "consent.revoked": "consent withdrawn for `list`",
    "person.resubscribed": "a newer consent with proof lifted an unsubscribe of `list`",
    "person.erased": "a person erased at their request: only `suppression_id`, the keyed hash",
    "preferences.changed": "preference-centre choices: `off` (streams or lists switched "
                           "off), `paused_until`, `frequency` (only those changed)",
    "lifecycle.changed": "the person turned `inactive` in `stream` (silence thresholds), or "
                         "`active` again; seen by a periodic pass (tell.lifecycle_every)",
}


def openapi_webhooks(json_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the OpenAPI 3.1 ``webhooks`` map, its schemas) for the outbound events."""
    header = [{"name": name, "in": "header", "required": True, "schema": {"type": "string"},
               "description": text} for name, text in (
        ("webhook-id", "the event's stable id (the same on every retry): deduplicate on it"),
        ("webhook-timestamp", "seconds since the epoch when this attempt was signed"),
        ("webhook-signature", "space-separated `v1,<base64 HMAC-SHA256>` of "
                              "`id.timestamp.body`, one per configured secret (rotation)"))]
    schema = {
        "type": "object", "required": ["type", "timestamp", "data"],
        "properties": {
            "type": {"type": "string", "enum": list(_TYPES)},
            "timestamp": {"type": "string", "format": "date-time"},
            "data": {"type": "object", "required": ["event_id", "at"], "properties": {
                "event_id": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
                "address": {"type": "string", "format": "email"},
                "suppression_id": {"type": "string"},
                "list": {"type": ["string", "null"]},
                "kind": {"type": "string"},
                "channel": {"type": "string"},
                "off": {"type": "array", "items": {"type": "string"}},
                "paused_until": {"type": ["string", "null"]},
                "frequency": {"type": ["string", "null"]},
                "reason": {"type": "string"},
                "lifted": {"type": "array", "items": {"type": "string"}},
                "stream": {"type": "string"},
                "stage": {"type": "string", "enum": ["inactive", "active"]},
            }},
        },
    }
    hooks = {name: {"post": {
        "summary": name, "description": text + ". Signed the Standard Webhooks way; "
                   "delivered at least once (retried with backoff, then dead-lettered).",
        "parameters": header,
        "requestBody": {"required": True, "content": {json_type: {"schema": {
            "$ref": "#/components/schemas/OutboundEvent"}}}},
        "responses": {"2XX": {"description": "received; any other answer is retried"}},
    }} for name, text in _TYPES.items()}
    return hooks, {"OutboundEvent": schema}
