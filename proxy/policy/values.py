"""The checks a policy key's value passes: each returns the value or raises ValueError."""

from __future__ import annotations

from typing import Any

from proxy.settings import parse_duration
from proxy.types import ENGAGEMENT_KINDS


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def count(value: Any, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"expected a whole number of at least {least}, got {value!r}")
    return value


def days(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"expected a number of days, got {value!r}")
    return float(value)


def kinds(value: Any) -> frozenset[str]:
    items = value if isinstance(value, list) else [value]
    bad = [v for v in items if v not in ENGAGEMENT_KINDS]
    if bad:
        raise ValueError(f"unknown engagement kind {', '.join(map(repr, bad))}; "
                         f"expected {', '.join(ENGAGEMENT_KINDS)}")
    if not items:
        raise ValueError("name at least one kind (nothing would ever break the silence)")
    return frozenset(items)


def globs(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v for v in items):
        raise ValueError("expected a list of URL patterns (globs such as "
                         "'https://example.com/account/*')")
    return tuple(items)


def asks(value: Any) -> tuple[tuple[str, str], ...]:
    from proxy.copy.ask import LANGUAGES  # the languages heed's pages speak

    if not isinstance(value, dict) or not value:
        raise ValueError(f"expected a mapping of language ({', '.join(LANGUAGES)}) to text")
    bad = [k for k in value if k not in LANGUAGES]
    if bad or not all(isinstance(v, str) and v.strip() for v in value.values()):
        raise ValueError(f"languages must be {', '.join(LANGUAGES)} and each text non-empty")
    return tuple(sorted(value.items()))


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"expected a duration longer than zero, got {value!r}")
    return seconds
