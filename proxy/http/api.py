"""The events API: record events (one or a batch) and look a person up. Bearer tokens, JSON."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from proxy.clock import Clock
from proxy.errors import StateUnavailable
from proxy.http.openapi import document
from proxy.policy import lifecycle_stage
from proxy.policy_store import PolicyStore
from proxy.signals.events import Event, EventRules, apply, parse_event
from proxy.state import State, is_address

log = logging.getLogger("heed.api")

MAX_EVENT = 64 * 1024
MAX_BATCH_BYTES = 8 * 1024 * 1024
MAX_BATCH = 10_000  # lines per batch: larger imports are split by the caller
RECENT = 20
UNAVAILABLE = {"error": "state store unavailable; nothing was recorded, try again"}


def answer(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data, ensure_ascii=False), status=status,
                        content_type="application/json")


def problem(status: int, message: str, **extra: Any) -> web.Response:
    return answer({"error": message, **extra}, status)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The body up to ``limit`` bytes, or None when larger (the app's own limit is for forms)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):  # read(n) gives what has arrived
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class TokenCheck:
    """Bearer tokens (RFC 6750) compared in constant time against every configured one."""

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens = [t.encode() for t in tokens]

    def allows(self, request: web.Request) -> bool:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return False
        offered = given.strip().encode()
        ok = False
        for token in self.tokens:  # no early exit: timing says nothing about which token
            ok |= hmac.compare_digest(offered, token)
        return ok


def unauthorized() -> web.Response:
    response = problem(401, "a valid bearer token is required")
    response.headers["WWW-Authenticate"] = 'Bearer realm="heed"'
    return response


class Api:
    """Handlers for /api/…; every one but the OpenAPI document needs a token."""

    def __init__(self, state: State, policies: PolicyStore, clock: Clock, tokens: Sequence[str],
                 rules: EventRules, metrics: Any = None) -> None:
        self.metrics = metrics
        self.state = state
        self.policies = policies
        self.clock = clock
        self.check = TokenCheck(tokens)
        self.rules = rules

    async def event(self, request: web.Request) -> web.Response:
        if not self.check.allows(request):
            return unauthorized()
        body = await read_body(request, MAX_EVENT)
        if body is None:
            return problem(413, f"an event is at most {MAX_EVENT} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested past json's depth
            return problem(422, "invalid JSON", fields={"": "the body is not JSON"})
        parsed = parse_event(data, "api", self.clock.now())
        if not isinstance(parsed, Event):
            return problem(422, "invalid event", fields=parsed)
        try:
            applied = await apply(self.state, parsed, self.rules, self.metrics)
        except StateUnavailable:
            return answer(UNAVAILABLE, 503)
        return answer(_result(1, applied.outcome, applied.count))

    async def batch(self, request: web.Request) -> web.Response:
        """A JSON array or NDJSON; each line succeeds or fails on its own (207-style list)."""
        if not self.check.allows(request):
            return unauthorized()
        body = await read_body(request, MAX_BATCH_BYTES)
        if body is None:
            return problem(413, f"a batch is at most {MAX_BATCH_BYTES} bytes; split it")
        if not body.strip():
            return problem(400, "an empty body: send a JSON array or NDJSON, one event a line")
        if request.content_type == "application/json" and not body.lstrip(
                b"\xef\xbb\xbf \t\r\n").startswith(b"["):
            # Declared JSON: it must be the array; NDJSON comes as application/x-ndjson.
            return problem(422, "expected a JSON array of events",
                           fields={"": "a JSON array (NDJSON as application/x-ndjson)"})
        lines = _lines(body)
        if isinstance(lines, str):
            return problem(422, lines, fields={"": lines})
        if len(lines) > MAX_BATCH:
            return problem(413, f"a batch is at most {MAX_BATCH} events; split it")
        results = []
        now = self.clock.now()
        for number, item in lines:
            if isinstance(item, str):
                results.append({"line": number, "ok": False, "fields": {"": item}})
                continue
            parsed = parse_event(item, "api", now)
            if not isinstance(parsed, Event):
                results.append({"line": number, "ok": False, "fields": parsed})
                continue
            try:
                applied = await apply(self.state, parsed, self.rules, self.metrics)
            except StateUnavailable:
                results.append({"line": number, "ok": False, "retry": True,
                                "error": UNAVAILABLE["error"]})
                continue
            results.append(_result(number, applied.outcome, applied.count))
        failed = sum(1 for r in results if not r["ok"])
        return answer({"accepted": len(results) - failed, "failed": failed, "results": results})

    async def person(self, request: web.Request) -> web.Response:
        if not self.check.allows(request):
            return unauthorized()
        address = request.match_info["address"].strip()
        if not is_address(address.strip("<>")):
            return problem(422, "invalid address", fields={"address": "an email address"})
        try:
            snap = await self.state.snapshot(address)
            recent = await self.state.audit.recent(address, RECENT)
        except StateUnavailable:
            return answer(UNAVAILABLE, 503)
        now = self.clock.now()
        policy = self.policies.current
        return answer({
            "address": snap.address,
            "consents": [{"list": c.list, "granted_at": c.granted_at, "source": c.source,
                          "ip": c.ip, "text": c.text} for c in snap.consents.values()],
            "refusals": [{"scope": r.scope, "kind": r.kind, "at": r.at, "channel": r.channel}
                         for r in snap.refusals.values()],
            "preferences": {"paused_until": snap.prefs.paused_until,
                            "timezone": snap.prefs.timezone, "off": sorted(snap.prefs.off),
                            "frequency": snap.prefs.frequency},
            "engagement": {"last_engaged": snap.last_engaged,
                           "sends_since_engagement": snap.sends_since_engagement,
                           "first_send": snap.first_send, "total_sends": snap.total_sends,
                           "by_kind": {k: {"at": e.at, "sends_since": e.sends_since}
                                       for k, e in snap.engagement.items()}},
            "suppressed": snap.suppressed,
            "lifecycle": {name: lifecycle_stage(stream, snap, now)
                          for name, stream in policy.streams.items()},
            "recent": [{"at": e.at, "kind": e.kind, "outcome": e.outcome, "stream": e.stream,
                        "reasons": list(e.reasons), "detail": e.detail} for e in recent],
        })

    async def openapi(self, request: web.Request) -> web.Response:
        return answer(document(self.clock.now()))


def _result(line: int, outcome: str, count: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"line": line, "ok": True, "outcome": outcome}
    if count is not None:
        out["soft_bounces"] = count
    return out


def _lines(body: bytes) -> list[tuple[int, Any]] | str:
    """(line number, parsed JSON or the reason it is not) per event, or why none can be read."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"invalid JSON array ({exc.msg} at line {exc.lineno})"
        except RecursionError:
            return "invalid JSON array (nested too deep)"
        return list(enumerate(items, 1))
    out: list[tuple[int, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue  # blank lines are not events
        try:
            out.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            out.append((number, f"invalid JSON ({exc.msg})"))
        except RecursionError:
            out.append((number, "invalid JSON (nested too deep)"))
    return out


def add_api(app: web.Application, *, state: State, policies: PolicyStore, clock: Clock,
            tokens: Sequence[str], rules: EventRules, metrics: Any = None) -> None:
    """Mount /api/… on ``app``."""
    api = Api(state, policies, clock, tokens, rules, metrics)
    app.router.add_post("/api/events", api.event)
    app.router.add_post("/api/events/batch", api.batch)
    app.router.add_get("/api/people/{address}", api.person)
    app.router.add_get("/api/openapi.json", api.openapi)
