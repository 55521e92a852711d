"""Config values parsed and checked (durations, HOST:PORT, secrets); a reader keeping errors."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from proxy.redisconn import parse_redis_url

T = TypeVar("T")
Converters = Mapping[str, Callable[[Any], Any]]


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``:PORT`` -> (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
    else:
        host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return (host or default_host), int(port)


def parse_duration(value: Any) -> float:
    """``30``, ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"1w"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * units[text[-1]]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise ValueError(f"expected a duration like 90s, 15m, 2h, 7d; got {value!r}")


def durations(v: Any) -> tuple[float, ...]:
    """A list of durations (backoff steps)."""
    return tuple(parse_duration(x) for x in v)


def texts(v: Any) -> tuple[str, ...]:
    return tuple(str(t) for t in (v or []))


def lower_texts(v: Any) -> tuple[str, ...]:
    return tuple(str(t).lower() for t in (v or []))


def redis_url(value: Any) -> str | None:
    """A Redis URL in one of proxy/redisconn.py's forms, checked at start rather than first use."""
    if not value:
        return None
    parse_redis_url(str(value))
    return str(value)


def erase_secret(value: Any) -> bytes | None:
    if value is None:
        return None
    if len(str(value).encode()) < 16:
        raise ValueError("must be at least 16 bytes")
    return str(value).encode()


def nameserver(value: str) -> str:
    """``IP`` or ``IP:PORT`` of a resolver."""
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    ipaddress.ip_address(host or value)
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in {value!r}")
    return value


def whsec(secret: str) -> bool:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of at least 16 bytes."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        return False
    return secret.startswith("whsec_") and len(key) >= 16


class Reader:
    """One config tree being read: its sections, paths relative to it, and every error found."""

    def __init__(self, raw: dict[str, Any], where: str, base: Path) -> None:
        self.raw = raw
        self.where = where
        self.base = base
        self.errors: list[str] = []

    def error(self, message: str) -> None:
        self.errors.append(f"{self.where}: {message}")

    def section(self, name: str) -> dict[str, Any]:
        value = self.raw.get(name) or {}
        if not isinstance(value, dict):
            self.error(f"'{name}' must be a mapping")
            return {}
        return value

    def rel(self, p: Any) -> Path:
        """A path from the config, relative to the directory above config/."""
        q = Path(str(p))
        return q if q.is_absolute() else self.base / q

    def take(self, cls: type[T], name: str, conv: Converters) -> T:
        """Section ``name`` as a ``cls``: each key converted by ``conv`` (if named there)."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for key, value in self.section(name).items():
            if key not in known and key not in conv:
                self.error(f"unknown key '{name}.{key}'")
                continue
            try:
                kwargs[key] = conv[key](value) if key in conv else value
            except (ValueError, TypeError) as exc:
                self.error(f"'{name}.{key}': {exc}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            self.error(f"'{name}': {exc}")
            return cls()
