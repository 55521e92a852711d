"""The ``smtp``, ``upstream`` and ``http`` sections: where heed listens and whom it relays to."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from proxy.settings.values import Reader, parse_duration, parse_hostport


@dataclass(frozen=True)
class SmtpSettings:
    listen: tuple[str, int] = ("127.0.0.1", 2525)
    hostname: str = "heed.localdomain"
    # Clients allowed to relay without AUTH (never 0.0.0.0/0: no open relay).
    client_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    # username -> "scrypt$..." hash (make one with `heed passwd`)
    users: Mapping[str, str] = field(default_factory=dict)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_message_size: int = 25 * 1024 * 1024  # RFC 1870 SIZE
    max_recipients: int = 1000  # RFC 5321 §4.5.3.1.8 asks servers to take at least 100
    max_sessions: int = 1000
    # One client may not take every session: the rest of the network keeps being served.
    max_sessions_per_client: int = 100
    # Where mail to postmaster@ heed's own domains goes (RFC 5321 §4.5.1: it must be
    # accepted); None: accepted and logged only.
    postmaster: str | None = None
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2.7: 5 minutes
    data_timeout: float = 600.0  # RFC 5321 §4.5.3.2.6: 10 minutes for the whole DATA


@dataclass(frozen=True)
class UpstreamSettings:
    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    tls_verify: bool = True
    username: str | None = None
    password: str | None = None
    # Connecting, the greeting, EHLO, MAIL, RCPT, DATA and RSET: each reply within this.
    timeout: float = 60.0
    # The reply to the final "." (RFC 5321 §4.5.3.2.6: at least 10 minutes). The upstream
    # may have taken the copy however long it waits: giving up earlier risks a duplicate.
    data_timeout: float = 600.0
    pool_size: int = 16
    # What a temporary upstream failure means to the client: "tempfail" (451,
    # the client retries) or "queue" (250, heed holds and retries the mail).
    on_failure: str = "tempfail"


@dataclass(frozen=True)
class HttpSettings:
    listen: tuple[str, int] | None = ("127.0.0.1", 8025)
    public_url: str = "http://127.0.0.1:8025"


def smtp(r: Reader) -> SmtpSettings:
    out = r.take(SmtpSettings, "smtp", {
        "listen": parse_hostport,
        "client_networks": lambda v: tuple(ipaddress.ip_network(str(n)) for n in (v or [])),
        "users": lambda v: dict(v or {}),
        "tls_cert": lambda v: r.rel(v) if v else None,
        "tls_key": lambda v: r.rel(v) if v else None,
        "max_message_size": int,
        "max_recipients": int,
        "max_sessions": int,
        "max_sessions_per_client": int,
        "postmaster": lambda v: str(v).strip() if v else None,
        "command_timeout": parse_duration,
        "data_timeout": parse_duration,
    })
    for net in out.client_networks:
        if net.prefixlen == 0:
            r.error(f"'smtp.client_networks': {net} would make heed an open relay")
    if out.max_recipients < 100:
        r.error("'smtp.max_recipients' must be at least 100 (RFC 5321 §4.5.3.1.8)")
    return out


def upstream(r: Reader) -> UpstreamSettings:
    out = r.take(UpstreamSettings, "upstream", {
        "port": int, "timeout": parse_duration, "data_timeout": parse_duration,
        "pool_size": int,
    })
    if out.timeout <= 0 or out.data_timeout <= 0:
        r.error("'upstream.timeout' and 'upstream.data_timeout' must be > 0")
    if out.on_failure not in ("tempfail", "queue"):
        r.error("'upstream.on_failure' must be 'tempfail' or 'queue'")
    return out


def http(r: Reader) -> HttpSettings:
    return r.take(HttpSettings, "http", {
        "listen": lambda v: parse_hostport(v) if v else None,
        "public_url": lambda v: str(v).rstrip("/"),
    })
