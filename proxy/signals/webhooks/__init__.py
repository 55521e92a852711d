"""Sending services' event webhooks, each mapped onto proxy.signals.events.Event.

Each service module has a verifier (the service's own signature scheme, or
its credentials) and a pure ``events(payload, now)`` mapping; proxy/http/webhooks.py
puts them on /webhooks/<service>.
"""

from __future__ import annotations

import json
from typing import Any

from proxy.keys import normalise_address
from proxy.signals.events import Event
from proxy.state import is_address, parse_time


class WebhookError(Exception):
    """A request heed will not act on; ``status`` is the HTTP answer (400, 401)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def when(value: Any, now: float) -> float | None:
    """Epoch seconds or ISO 8601 from a payload; None (= now) when absent or not believable."""
    if isinstance(value, bool) or not isinstance(value, int | float | str) or value == "":
        return None
    try:
        return parse_time(str(value), now)
    except ValueError:
        return None


def obj(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a field of the wrong type)."""
    return value if isinstance(value, dict) else {}


def items(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON array (anything else in it, or no array, is skipped)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def word(value: Any) -> str:
    """A string field, or "" for any other type (a list is no event name)."""
    return value if isinstance(value, str) else ""


def load_json(body: bytes, kind: type, what: str) -> Any:
    """The body as JSON of the expected type, or WebhookError(400)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested past json's depth
        raise WebhookError(400, "not JSON") from None
    if not isinstance(value, kind):
        raise WebhookError(400, f"expected {what}")
    return value


def event(kind: str, address: Any, channel: str, now: float, *, at: Any = None,
          bounce: str | None = None, id: Any = "", detail: str = "") -> Event | None:
    """An Event for a payload's address, or None when the address is not one."""
    if not isinstance(address, str):
        return None
    addr = normalise_address(address)
    if not is_address(addr):
        return None
    return Event(kind=kind, address=addr, channel=channel, at=when(at, now), bounce=bounce,
                 id=str(id or ""), detail=" ".join(detail.split())[:300])
