"""Who may relay through heed: client networks, or AUTH after STARTTLS. Never an open relay."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
from collections.abc import Mapping, Sequence

# scrypt parameters for stored client passwords (RFC 7914 §2: N=2^14, r=8 is
# the interactive-login recommendation).
_N, _R, _P = 2**14, 8, 1
# Client addresses whose network check is remembered (then the memory starts over).
_REMEMBERED = 4096


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A storable "scrypt$N$r$p$salt$hash" string (what `heed passwd` prints)."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    enc = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${enc(salt).decode()}${enc(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt64, hash64 = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt64), base64.b64decode(hash64)
        digest = hashlib.scrypt(
            password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


class Access:
    """Decides whether a session may relay: by client network or by authenticated user."""

    def __init__(
        self,
        networks: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
        users: Mapping[str, str],
    ) -> None:
        self.networks = tuple(networks)
        self.users = dict(users)
        # scrypt is deliberately slow (~50 ms); a tool that authenticates on
        # every connection would pay it each time. Remember good logins under
        # a per-process key so the cache itself reveals nothing.
        self._cache_key = os.urandom(32)
        self._good: set[bytes] = set()
        self._allowed: dict[str, bool] = {}

    def network_allowed(self, ip: str) -> bool:
        """Whether ``ip`` is in a client network (remembered: asked at every RCPT)."""
        allowed = self._allowed.get(ip)
        if allowed is None:
            if len(self._allowed) >= _REMEMBERED:
                self._allowed.clear()  # a flood of new addresses must not grow memory
            allowed = self._allowed[ip] = self._in_networks(ip)
        return allowed

    def _in_networks(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip.split("%")[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)

    def login(self, username: str, password: str) -> bool:
        stored = self.users.get(username)
        if stored is None:
            return False
        marker = hmac.new(self._cache_key, f"{username}\0{password}".encode(), "sha256").digest()
        if marker in self._good:
            return True
        if verify_password(password, stored):
            self._good.add(marker)
            return True
        return False
