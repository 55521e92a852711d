"""The ``unsubscribe`` and ``dkim`` sections: the keys heed seals tokens and signs copies with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.settings.values import Reader, erase_secret, parse_duration


@dataclass(frozen=True)
class UnsubscribeKey:
    id: str
    secret: bytes
    retired: bool = False


@dataclass(frozen=True)
class UnsubscribeSettings:
    mailto_domain: str = "heed.localdomain"
    keys: tuple[UnsubscribeKey, ...] = ()
    token_lifetime: float = 90 * 86400.0  # CASL asks 60 days, CAN-SPAM 30
    # Keys the hashed suppression entries of erased addresses; never rotate it (the
    # entries would stop matching). None: a random one beside the embedded Redis data.
    erase_secret: bytes | None = None


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    key_file: Path
    algorithm: str = "rsa-sha256"  # or "ed25519-sha256" (RFC 8463)


def _keys(v: Any) -> tuple[UnsubscribeKey, ...]:
    out = []
    for k in v or []:
        secret = str(k["secret"]).encode()
        if len(secret) < 16:
            raise ValueError(f"key {k.get('id')!r}: secret must be at least 16 bytes")
        out.append(UnsubscribeKey(str(k["id"]), secret, bool(k.get("retired", False))))
    return tuple(out)


def unsubscribe(r: Reader) -> UnsubscribeSettings:
    out = r.take(UnsubscribeSettings, "unsubscribe", {
        "keys": _keys, "token_lifetime": parse_duration, "erase_secret": erase_secret})
    if out.token_lifetime < 60 * 86400:
        r.error("'unsubscribe.token_lifetime' must be at least 60d (CASL)")
    return out


def dkim(r: Reader) -> tuple[DkimKey, ...]:
    out: list[DkimKey] = []
    for i, entry in enumerate(r.raw.get("dkim") or []):
        try:
            out.append(DkimKey(
                domain=str(entry["domain"]).lower(),
                selector=str(entry["selector"]),
                key_file=r.rel(entry["key_file"]),
                algorithm=str(entry.get("algorithm", "rsa-sha256")),
            ))
        except (KeyError, TypeError) as exc:
            r.error(f"'dkim[{i}]' needs domain, selector and key_file ({exc})")
    return tuple(out)
