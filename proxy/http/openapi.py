"""The OpenAPI 3.1 document of the events API and webhooks, served at /api/openapi.json."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from proxy.signals.events import BOUNCES, CHANNELS, ENGAGEMENTS
from proxy.tell.webhook import openapi_webhooks

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_ERRORS = {
    code: {"description": text, "content": {_JSON: {"schema": _ref("Error")}}}
    for code, text in (("401", "no or wrong bearer token"), ("413", "body too large"),
                       ("422", "invalid payload; `fields` names each problem"),
                       ("503", "state store unavailable: nothing recorded, try again"))
}

# The address as heed reads it (proxy.keys.is_address): no spaces, controls or <>.
_ADDRESS = {"type": "string", "pattern": r"^<?[^\s@<>\x00-\x1f\x7f-\x9f]+@[^\s@<>\x00-\x1f"
            r"\x7f-\x9f]+\.[^\s@<>\x00-\x1f\x7f-\x9f]+>?$", "maxLength": 320}
_TEXT = {"type": "string", "maxLength": 1000}
# 255 bytes of UTF-8 at most; 63 characters are within that whatever they are.
_LIST = {"type": "string", "minLength": 1, "maxLength": 63,
         "description": "1 to 255 bytes of UTF-8"}
_IP = {"anyOf": [{"type": "string", "maxLength": 0}, {"type": "string", "format": "ipv4"},
                 {"type": "string", "format": "ipv6"}]}


def _event(kinds: tuple[str, ...], *, required: tuple[str, ...] = (),
           extra: dict[str, Any] | None = None, description: str = "") -> dict[str, Any]:
    """One kind's schema: what parse_event (proxy/signals/events.py) accepts for it."""
    return {
        "type": "object", "additionalProperties": False, "description": description,
        "required": ["kind", "address", *required],
        "properties": {
            "kind": {"type": "string", "enum": list(kinds)},
            "address": _ADDRESS,
            "at": {"$ref": "#/components/schemas/At"},
            "list": _LIST, "id": _TEXT, "detail": _TEXT, **(extra or {}),
        },
    }


def _proof(*, source_required: bool) -> dict[str, Any]:
    source = {"type": "string", "maxLength": 1000, "minLength": 1 if source_required else 0}
    return {"type": "object", "additionalProperties": False,
            "required": ["source"] if source_required else [],
            "properties": {"source": source, "ip": _IP, "text": _TEXT}}


_KINDS = {
    "Engagement": _event(ENGAGEMENTS, description="recorded as engagement of that kind"),
    "Bounce": _event(("bounce",), required=("bounce",),
                     extra={"bounce": {"type": "string", "enum": list(BOUNCES)}},
                     description="hard: a refusal; soft: counted (bounces.* settings)"),
    "Refusal": _event(("complaint", "unsubscribe"),
                      description="complaint: every marketing list; unsubscribe: `list`, or "
                                  "every marketing list without one"),
    "Grant": _event(("grant",), required=("list", "proof"),
                    extra={"proof": _proof(source_required=True)},
                    description="consent for `list`, with proof (`source` required)"),
    "Revoke": _event(("revoke",), required=("list",),
                     extra={"proof": _proof(source_required=False)},
                     description="consent for `list` withdrawn"),
}
_MAPPING = {kind: f"#/components/schemas/{name}" for name, schema in _KINDS.items()
            for kind in schema["properties"]["kind"]["enum"]}

_SCHEMAS: dict[str, Any] = {
    **_KINDS,
    "Event": {
        "description": "one event; the fields each kind takes are its own schema's",
        "oneOf": [_ref(name) for name in _KINDS],
        "discriminator": {"propertyName": "kind", "mapping": _MAPPING},
    },
    "Result": {
        "type": "object",
        "required": ["line", "ok"],
        "properties": {
            "line": {"type": "integer"},
            "ok": {"type": "boolean"},
            "outcome": {"type": "string", "enum": ["engaged", "granted", "revoked", "refused",
                                                  "repeat", "counted"]},
            "soft_bounces": {"type": "integer"},
            "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            "retry": {"type": "boolean"},
            "error": {"type": "string"},
        },
    },
    "BatchResult": {
        "type": "object",
        "properties": {"accepted": {"type": "integer"}, "failed": {"type": "integer"},
                       "results": {"type": "array", "items": _ref("Result")}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"},
                       "fields": {"type": "object", "additionalProperties": {"type": "string"}}},
    },
    "Person": {
        "type": "object",
        "properties": {
            "address": {"type": "string"},
            "consents": {"type": "array", "items": {"type": "object"}},
            "refusals": {"type": "array", "items": {"type": "object", "properties": {
                "scope": {"type": "string"}, "kind": {"type": "string"},
                "at": {"type": "number"}, "channel": {"type": "string", "enum": [
                    *CHANNELS, "one-click", "mailto", "cli", ""]}}}},
            "preferences": {"type": "object"},
            "engagement": {"type": "object", "description": "last_engaged (any kind), "
                           "sends_since_engagement, first_send, total_sends, by_kind: "
                           "{kind: {at, sends_since}}"},
            "suppressed": {"type": "boolean", "description": "erased at the person's request"},
            "lifecycle": {"type": "object", "description": "stream -> loyal, active, lapsing "
                          "or inactive", "additionalProperties": {"type": "string"}},
            "recent": {"type": "array", "items": {"type": "object"}},
        },
    },
}


# What each webhook's handler reads (proxy/signals/webhooks/): anything else is 400.
_SNS = {"type": "object", "required": ["Type", "MessageId", "Message", "Timestamp",
                                       "Signature", "SignatureVersion", "SigningCertURL"],
        "properties": {"Type": {"type": "string", "enum": [
            "Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]},
            "MessageId": {"type": "string"}, "TopicArn": {"type": "string"},
            "Subject": {"type": "string"},
            "Message": {"type": "string", "description": "the SES notification, as JSON"},
            "Timestamp": {"type": "string", "format": "date-time"},
            "SignatureVersion": {"type": "string", "enum": ["1", "2"]},
            "Signature": {"type": "string", "contentEncoding": "base64"},
            "SigningCertURL": {"type": "string", "format": "uri"},
            "SubscribeURL": {"type": "string", "format": "uri"}, "Token": {"type": "string"}}}
_MAILGUN = {"type": "object", "required": ["signature", "event-data"],
            "properties": {"signature": {"type": "object",
                                         "required": ["timestamp", "token", "signature"],
                                         "properties": {"timestamp": {"type": "string"},
                                                        "token": {"type": "string"},
                                                        "signature": {"type": "string"}}},
                           "event-data": {"type": "object", "properties": {
                               "event": {"type": "string"}, "recipient": {"type": "string"},
                               "severity": {"type": "string"}, "timestamp": {"type": "number"},
                               "id": {"type": "string"}}}}}
_SENDGRID = {"type": "array", "items": {"type": "object", "properties": {
    "event": {"type": "string"}, "email": {"type": "string"}, "type": {"type": "string"},
    "timestamp": {"type": "integer"}, "sg_event_id": {"type": "string"}}}}
_POSTMARK = {"type": "object", "properties": {
    "RecordType": {"type": "string", "description": "absent in older bounce payloads: a "
                                                    "Type and an Email make it a Bounce"},
    "Type": {"type": "string"}, "Email": {"type": "string"}, "Recipient": {"type": "string"},
    "SuppressSending": {"type": "boolean"}, "SuppressionReason": {"type": "string"}}}


def _webhook(service: str, how: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"post": {
        "summary": f"{service} events (mapped onto the same events)",
        "description": how,
        "security": [],
        "requestBody": {"required": True, "content": {_JSON: {"schema": schema}}},
        "responses": {"200": {"description": "accepted (also for events heed ignores)"},
                      "400": {"description": "unreadable payload"},
                      "401": {"description": "signature or credentials wrong"},
                      "404": {"description": "this webhook is not configured"},
                      "503": {"description": "state store unavailable; the service retries"}},
    }}


def document(now: float) -> dict[str, Any]:
    """The whole document (a fresh dict each call); ``now`` bounds ``at`` (a day ahead)."""
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    # heed takes any ISO 8601 time up to a day ahead; the document promises what is
    # always accepted, whenever it is read: epoch seconds up to a day after it was
    # served, and RFC 3339 times in the years before this one.
    years = "|".join(str(y) for y in range(1971, datetime.fromtimestamp(now, UTC).year))
    at = {"description": "when it happened (default now); epoch seconds or ISO 8601 "
                         "(UTC without a zone); not more than a day ahead",
          "oneOf": [{"type": "number", "minimum": 0, "maximum": int(now) + 86400},
                    {"type": "string", "pattern": f"^({years})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|"
                     r"2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
                     r"(Z|[+-](0[0-9]|1[0-3]):[0-5][0-9])$"}]}
    hooks, hook_schemas = openapi_webhooks(_JSON)
    return {
        "openapi": "3.1.0",
        "info": {"title": "heed events API", "version": "1",
                 "description": "Record engagement, bounces, complaints, unsubscribes and "
                                "consent; look a person up. See docs/events.md."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**_SCHEMAS, "At": at, **hook_schemas},
        },
        # What heed sends to the tool (tell.webhooks; docs/tell.md), OpenAPI 3.1 §4.8.1.
        "webhooks": hooks,
        "security": secured,
        "paths": {
            "/api/events": {"post": {
                "summary": "record one event",
                "requestBody": {"required": True, **_body(_ref("Event"), "one event")},
                "responses": {"200": _body(_ref("Result"), "recorded"), **_ERRORS},
            }},
            "/api/events/batch": {"post": {
                "summary": "record many events; each line succeeds or fails on its own",
                "requestBody": {"required": True, "content": {
                    # Each line is an Event, checked on its own (its Result says why not).
                    _JSON: {"schema": {"type": "array", "items": {
                        "description": "an Event (see Event); checked line by line"}}},
                    "application/x-ndjson": {"schema": {"type": "string", "pattern": r"\S",
                                                        "description": "one Event per line"}},
                }},
                "responses": {"200": _body(_ref("BatchResult"), "a result per line"),
                              "400": _body(_ref("Error"), "an empty body"), **_ERRORS},
            }},
            "/api/people/{address}": {"get": {
                "summary": "what heed holds about a person",
                "parameters": [{"name": "address", "in": "path", "required": True,
                                "schema": {"type": "string", "format": "email"}}],
                "responses": {"200": _body(_ref("Person"), "the person"), **_ERRORS},
            }},
            "/api/openapi.json": {"get": {
                "summary": "this document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1",
                                      "content": {_JSON: {"schema": {"type": "object"}}}}},
            }},
            "/webhooks/ses": _webhook("Amazon SES via SNS",
                                      "SNS signature (SignatureVersion 1 or 2) checked against "
                                      "the certificate at an allowed SigningCertURL host; "
                                      "a Timestamp older than webhooks.ses_max_age is refused.",
                                      _SNS),
            "/webhooks/sendgrid": _webhook("SendGrid event webhook",
                                           "ECDSA P-256 signature in X-Twilio-Email-Event-"
                                           "Webhook-Signature over timestamp + body.", _SENDGRID),
            "/webhooks/mailgun": _webhook("Mailgun", "HMAC-SHA256 of timestamp + token with the "
                                                     "signing key; old timestamps refused.",
                                          _MAILGUN),
            "/webhooks/postmark": _webhook("Postmark", "HTTP basic auth as configured.",
                                           _POSTMARK),
            "/webhooks/postmark/{secret}": {**_webhook("Postmark",
                                                       "the configured secret in the path.",
                                                       _POSTMARK),
                                            "parameters": [{"name": "secret", "in": "path",
                                                            "required": True,
                                                            "schema": {"type": "string"}}]},
        },
    }
