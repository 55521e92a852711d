"""The OpenAPI 3.1 document of the events API and webhooks, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from proxy.events import BOUNCES, CHANNELS, KINDS
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

_SCHEMAS: dict[str, Any] = {
    "Event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "address"],
        "properties": {
            "kind": {"type": "string", "enum": list(KINDS)},
            "address": {"type": "string", "format": "email"},
            "at": {"description": "when it happened (default now); not more than a day ahead",
                   "oneOf": [{"type": "number", "minimum": 0},
                             {"type": "string", "format": "date-time"}]},
            "list": {"type": "string", "maxLength": 255,
                     "description": "unsubscribe: that list (absent: all marketing); "
                                    "grant/revoke: required"},
            "bounce": {"type": "string", "enum": list(BOUNCES),
                       "description": "required for kind bounce"},
            "proof": {"type": "object", "additionalProperties": False,
                      "description": "grant/revoke: proof of consent (source required for grant)",
                      "properties": {"source": {"type": "string"}, "ip": {"type": "string"},
                                     "text": {"type": "string"}}},
            "id": {"type": "string", "description": "your event id; a repeated soft bounce "
                                                    "with the same id counts once"},
            "detail": {"type": "string", "maxLength": 1000},
        },
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


def _webhook(service: str, how: str) -> dict[str, Any]:
    return {"post": {
        "summary": f"{service} events (mapped onto the same events)",
        "description": how,
        "security": [],
        "requestBody": {"required": True, "content": {_JSON: {"schema": {"type": ["object",
                                                                                  "array"]}}}},
        "responses": {"200": {"description": "accepted (also for events heed ignores)"},
                      "400": {"description": "unreadable payload"},
                      "401": {"description": "signature or credentials wrong"},
                      "404": {"description": "this webhook is not configured"},
                      "503": {"description": "state store unavailable; the service retries"}},
    }}


def document() -> dict[str, Any]:
    """The whole document (a fresh dict each call)."""
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    hooks, hook_schemas = openapi_webhooks(_JSON)
    return {
        "openapi": "3.1.0",
        "info": {"title": "heed events API", "version": "1",
                 "description": "Record engagement, bounces, complaints, unsubscribes and "
                                "consent; look a person up. See docs/events.md."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {**_SCHEMAS, **hook_schemas},
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
                    _JSON: {"schema": {"type": "array", "items": _ref("Event")}},
                    "application/x-ndjson": {"schema": {"type": "string",
                                                        "description": "one Event per line"}},
                }},
                "responses": {"200": _body(_ref("BatchResult"), "a result per line"),
                              **_ERRORS},
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
                                      "the certificate at an allowed SigningCertURL host."),
            "/webhooks/sendgrid": _webhook("SendGrid event webhook",
                                           "ECDSA P-256 signature in X-Twilio-Email-Event-"
                                           "Webhook-Signature over timestamp + body."),
            "/webhooks/mailgun": _webhook("Mailgun", "HMAC-SHA256 of timestamp + token with the "
                                                     "signing key; old timestamps refused."),
            "/webhooks/postmark": _webhook("Postmark", "HTTP basic auth as configured."),
            "/webhooks/postmark/{secret}": {**_webhook("Postmark",
                                                       "the configured secret in the path."),
                                            "parameters": [{"name": "secret", "in": "path",
                                                            "required": True,
                                                            "schema": {"type": "string"}}]},
        },
    }
