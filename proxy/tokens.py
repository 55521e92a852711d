"""Sealed, stateless tokens for one-click unsubscribe, the preference centre and VERP bounces."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from proxy.clock import Clock
from proxy.errors import ConfigError, TokenError
from proxy.settings import UnsubscribeKey

# What a token may be used for; the purpose is inside the MAC, so an unsubscribe
# token cannot open the preference centre or pass for a bounce address.
UNSUBSCRIBE = "u"
PREFERENCES = "p"
BOUNCE = "b"
CLICK = "c"  # a tracked link (proxy/signals/clicks.py)
OPEN = "o"  # the open-tracking image
REPERMISSION = "r"  # "Yes, keep sending" in the re-permission message
PURPOSES = frozenset((UNSUBSCRIBE, PREFERENCES, BOUNCE, CLICK, OPEN, REPERMISSION))

# Two formats. v2 (made now) is sealed with AES-SIV (RFC 5297): the address, list,
# purpose and time are encrypted, so a token that sits in a proxy or access log
# decodes to nothing. SIV needs no nonce (the synthetic IV is the 128-bit tag), so
# it costs 16 octets, the same as v1's MAC. v1 (purpose, key id, time, list and
# address in clear, HMAC-SHA256 truncated to 128 bits, RFC 2104 §5) is still
# verified, so links already sent in mail work until they expire.
TAG_BYTES = 16
# v2 begins with this octet; a v1 token begins with its purpose, an ASCII letter.
V2 = 2
# Domain separation: the v1 MAC, the VERP MAC and the v2 key never share an input.
_CONTEXT = b"heed-token-v1\x00"
_V2_KEY = b"heed-token-v2 aes-siv-256\x00"
# Tokens issued a little in the future still verify: instances' clocks differ.
CLOCK_SKEW = 300.0
# An address is at most 254 octets (RFC 5321 §4.5.3.1.3 path limit less the
# brackets); with a list name and key id a valid token stays well under this.
MAX_TOKEN_CHARS = 1024
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")
_ERROR = "invalid or expired link"  # one message for every failure: no hint either way


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says: who, which list, when issued, by which key, for what."""

    address: str
    list: str
    issued_at: float
    key_id: str
    purpose: str


# VERP tokens (bounce+TOKEN@) are compact and carry no address, so that the local
# part stays within the 64 octets RFC 5321 §4.5.3.1.1 asks every server to accept:
# 4 characters naming the key, then 16 of HMAC-SHA256 (80 bits), base32 lowercase
# without padding (RFC 4648 §6; local parts are matched case-blind in practice).
# heed stores token -> address and list in Redis (Keys.verp) when the copy is sent.
VERP_KID_CHARS = 4
VERP_MAC_CHARS = 16
VERP_CHARS = VERP_KID_CHARS + VERP_MAC_CHARS
_VERP = re.compile(rf"[a-z2-7]{{{VERP_CHARS}}}")


def _b32(raw: bytes, chars: int) -> str:
    # Only the whole 5-byte groups that make the first ``chars`` characters are
    # encoded (base32 maps each group to 8 characters on its own, RFC 4648 §6).
    groups = -(-chars // 8)
    return base64.b32encode(raw[: groups * 5]).decode("ascii").lower()[:chars]


class TokenSigner:
    """Makes and verifies tokens with rotating HMAC keys; verification needs no database."""

    def __init__(self, keys: Sequence[UnsubscribeKey], clock: Clock, lifetime: float) -> None:
        """``keys`` in config order: the last key that is not retired signs new tokens;
        every key that is not retired verifies; ``lifetime`` is in seconds."""
        errors = []
        self._keys: dict[bytes, bytes] = {}
        seen: set[str] = set()
        for key in keys:
            kid = key.id.encode("utf-8")
            if key.id in seen or not 0 < len(kid) < 256:
                errors.append(f"unsubscribe.keys: key id {key.id!r} is duplicated or too long")
            seen.add(key.id)
            if not key.retired:
                self._keys[kid] = key.secret
        active = [k for k in keys if not k.retired]
        if not active:
            errors.append("unsubscribe.keys: at least one key that is not retired is needed")
        if errors:
            raise ConfigError(errors)
        self._current = active[-1]
        # The AES-SIV key of each verifying key (the signing one last): 512 bits from
        # HMAC-SHA512, as AES-SIV-256 takes them (RFC 5297 §2.2).
        self._sealers = [(k.id, AESSIV(hmac.new(k.secret, _V2_KEY, hashlib.sha512).digest()))
                         for k in active]
        # VERP key names: derived from the secret, so a key id of any spelling fits.
        self._verp_kids = {_verp_kid(k.secret): k.secret for k in active}
        self._kid_of = {secret: kid for kid, secret in self._verp_kids.items()}
        # Each key's HMAC with the context already fed: a copy of it per token costs less
        # than keying HMAC anew (RFC 2104 §4: the keyed inner and outer states can be kept).
        self._verp_macs = {k.secret: hmac.new(k.secret, _CONTEXT + b"verp|", hashlib.sha256)
                           for k in active}
        self._clock = clock
        self._lifetime = lifetime

    def make(self, address: str, list_name: str, purpose: str = UNSUBSCRIBE) -> str:
        """A token for ``address`` on ``list_name``, usable in a URL path and a local part."""
        if purpose not in PURPOSES or len(purpose.encode("ascii", "replace")) != 1:
            raise ValueError(f"unknown token purpose {purpose!r}")
        addr = address.strip().lower().encode("utf-8")
        lst = list_name.encode("utf-8")
        if len(lst) > 255:
            raise ValueError("list name longer than 255 bytes")
        issued = int(self._clock.now())
        # Sealed: purpose | issued (uint32, good until 2106) | len(list) list | address.
        # The key is not named: verify tries the few keys that are not retired.
        plain = (purpose.encode("ascii") + struct.pack(">I", issued)
                 + bytes((len(lst),)) + lst + addr)
        header = bytes((V2,))
        return _encode(header + self._sealers[-1][1].encrypt(plain, [header]))

    def verp(self, address: str, list_name: str) -> str:
        """The compact, deterministic VERP token of ``address`` on ``list_name`` (current key)."""
        return self._verp_with(self._current.secret, address, list_name)

    def verp_all(self, address: str, list_name: str) -> list[str]:
        """The token under every key that verifies (erasure deletes each mapping)."""
        return [self._verp_with(s, address, list_name) for s in self._verp_kids.values()]

    def verp_plausible(self, token: str) -> bool:
        """Right shape and a known key: worth one lookup. Anything else is not ours."""
        token = token.lower()
        return bool(_VERP.fullmatch(token)) and token[:VERP_KID_CHARS] in self._verp_kids

    def verp_matches(self, token: str, address: str, list_name: str) -> bool:
        """Whether ``token`` is the MAC of this address and list (checks the stored mapping)."""
        token = token.lower()
        secret = self._verp_kids.get(token[:VERP_KID_CHARS])
        return secret is not None and hmac.compare_digest(
            self._verp_with(secret, address, list_name), token)

    def _verp_with(self, secret: bytes, address: str, list_name: str) -> str:
        kid = self._kid_of.get(secret) or _verp_kid(secret)
        # HMAC(secret, _CONTEXT + "verp|address|list"), the key's state copied.
        mac = self._verp_macs[secret].copy()
        mac.update(f"{address.strip().lower()}|{list_name}".encode())
        return kid + _b32(mac.digest(), VERP_MAC_CHARS)

    def verify(self, token: str, purpose: str = UNSUBSCRIBE) -> TokenClaims:
        """The claims of a valid token, or TokenError for anything else (same message always)."""
        raw = _decode(token)
        try:
            claims = self._open(raw) if raw[:1] == bytes((V2,)) else self._check_v1(raw)
        except (ValueError, IndexError, struct.error, UnicodeDecodeError):
            raise TokenError(_ERROR) from None
        now = self._clock.now()
        if claims.purpose != purpose or not (
            claims.issued_at - CLOCK_SKEW <= now <= claims.issued_at + self._lifetime
        ):
            raise TokenError(_ERROR)
        return claims

    def _open(self, raw: bytes) -> TokenClaims:
        header, sealed = raw[:1], raw[1:]
        if len(sealed) < TAG_BYTES + 1 + 4 + 1 + 1:
            raise ValueError("short token")
        for kid, sealer in reversed(self._sealers):  # the signing key first
            try:
                plain = sealer.decrypt(sealed, [header])
            except InvalidTag:
                continue
            return _claims(plain[:1], kid, plain[1:5], plain[5:])
        raise ValueError("no key opens it")  # unknown, retired, forged or changed

    def _check_v1(self, raw: bytes) -> TokenClaims:
        if len(raw) < 1 + 1 + 4 + 1 + TAG_BYTES:
            raise ValueError("short token")
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        klen = payload[1]
        kid = payload[2 : 2 + klen]
        secret = self._keys.get(kid)
        # Constant-time compare: the tag must not leak through timing.
        if secret is None or not hmac.compare_digest(_tag(secret, payload), tag):
            raise ValueError("unknown key or bad tag")
        at = 2 + klen
        return _claims(payload[:1], kid.decode("utf-8"), payload[at : at + 4], payload[at + 4 :])


def _verp_kid(secret: bytes) -> str:
    return _b32(hmac.new(secret, b"heed-verp-kid", hashlib.sha256).digest(), VERP_KID_CHARS)


def mask_address(address: str) -> str:
    """``alice@example.com`` -> ``a•••@example.com``: enough to recognise, not to harvest."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "•••"
    return f"{local[:1]}•••@{domain}"


def _tag(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + payload, hashlib.sha256).digest()[:TAG_BYTES]


def _encode(raw: bytes) -> str:
    # base64url without padding (RFC 4648 §5): only A-Z a-z 0-9 - _, which are
    # unreserved in a URL path (RFC 3986 §2.3) and atext in a local part
    # (RFC 5322 §3.2.3), so unsubscribe+TOKEN@domain is a plain dot-atom.
    # The sealed token carries the address, so it is longer than the 64 octets
    # RFC 5321 §4.5.3.1.1 asks every server to accept in a local part: measured,
    # ana@example.org on weekly-digest is 68 characters (v1: 71), so the local
    # part unsubscribe+TOKEN is 80; only list + address <= 16 octets fit in 64.
    # We keep it stateless rather than shorten it with a lookup: the same section
    # says to impose no limit where possible, the mailto address is only parsed by
    # the sender's outbound MTA and heed itself, and VERP addresses this long are
    # common in practice. RFC 8058 one-click uses the https URI anyway.
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(token: str) -> bytes:
    if (
        not isinstance(token, str)
        or len(token) > MAX_TOKEN_CHARS
        or not _ALPHABET.fullmatch(token)
        or len(token) % 4 == 1
    ):
        raise TokenError(_ERROR)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(_ERROR) from None
    # Only the canonical spelling verifies: the unused low bits of the last
    # character must be zero, so a changed character never maps to the same bytes.
    if _encode(raw) != token:
        raise TokenError(_ERROR)
    return raw


def _claims(purpose: bytes, kid: str, issued: bytes, rest: bytes) -> TokenClaims:
    """Claims from a purpose, a key id, a uint32 time and ``len(list) list address``."""
    (at,) = struct.unpack(">I", issued)
    llen = rest[0]
    lst, address = rest[1 : 1 + llen], rest[1 + llen :]
    if len(lst) != llen or not address:
        raise ValueError("truncated payload")
    return TokenClaims(address=address.decode("utf-8"), list=lst.decode("utf-8"),
                       issued_at=float(at), key_id=kid, purpose=purpose.decode("ascii"))
