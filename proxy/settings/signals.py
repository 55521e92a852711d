"""The ``api``, ``bounces``, ``webhooks``, ``clicks`` and ``replies`` sections: what heed hears."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from proxy.settings.values import Reader, parse_duration, texts


@dataclass(frozen=True)
class ApiSettings:
    """The events API (docs/events.md): bearer tokens; none configured -> every call is 401."""

    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class BounceSettings:
    """Bounces and complaints: heed's own addresses, VERP, and what a bounce means."""

    # bounce+TOKEN@domain and the addresses below. None: no VERP (the tool's MAIL FROM
    # is kept, so bounces go to the tool); bounce@ and fbl@ at unsubscribe.mailto_domain.
    domain: str | None = None
    verp: bool = True  # with a domain: marketing copies get MAIL FROM bounce+TOKEN@domain
    # RFC 5321 §4.5.3.1.1: a local part is at most 64 octets; a longer VERP address
    # is not used (the tool's sender is kept). Raise it only if every receiver copes.
    verp_max_local: int = 64
    # How long bounce+TOKEN@ still names its recipient: DSNs of delayed mail come days
    # later (RFC 5321 §4.5.4.1: retries for 4-5 days); after it, the DSN's own fields.
    verp_ttl: float = 30 * 86400.0
    address: str = "bounce"  # DSNs (RFC 3464) to bounce@domain (and bounce+TOKEN@domain)
    complaints: str = "fbl"  # ARF reports (RFC 5965) to fbl@domain
    # Act on reports that name the person only in their own fields (no heed token):
    # anyone can write those, so a forged one could refuse someone's mail.
    trust_unsigned: bool = True
    # Pass a report that came to a VERP address on to the copy's original envelope
    # sender, unchanged and with MAIL FROM:<>, so the tool's bounce handling still works.
    forward: bool = True
    hard_bounce: str = "all"  # a hard bounce refuses "all" marketing, or only the "list"
    soft_bounce_limit: int = 0  # this many soft bounces within the window refuse; 0: count only
    soft_bounce_window: float = 30 * 86400.0


def verp_domain(bounces: BounceSettings) -> str | None:
    """The domain of VERP return paths, or None: the tool's own MAIL FROM is kept."""
    return bounces.domain if bounces.verp and bounces.domain else None


@dataclass(frozen=True)
class WebhookSettings:
    """Sending services' event webhooks (/webhooks/<service>); unset -> that path is 404."""

    ses_topics: tuple[str, ...] = ()  # TopicArns accepted; empty -> any (signature still checked)
    ses_cert_hosts: tuple[str, ...] = ("sns.*.amazonaws.com",)  # SigningCertURL host globs
    ses_enabled: bool = False
    ses_max_age: float = 3600.0  # older (signed) SNS Timestamps are refused as replays
    sendgrid_public_key: str = ""  # base64 DER (as SendGrid shows it) or PEM
    sendgrid_max_age: float = 600.0
    mailgun_signing_key: str = ""
    mailgun_max_age: float = 300.0  # older timestamps are refused as replays
    postmark_username: str = ""  # basic auth...
    postmark_password: str = ""
    postmark_path_secret: str = ""  # ...or /webhooks/postmark/SECRET


@dataclass(frozen=True)
class ClickSettings:
    """Tracked links (policy ``track_clicks``): what marks a request as a link scanner's."""

    machine_after_delivery: float = 10.0  # requests this soon after the copy was made
    burst_window: float = 1.0  # another link of the same copy this soon after the last
    sticky_window: float = 30.0  # a copy a machine just requested stays machine this long
    scanner_networks: tuple[str, ...] = ()  # CIDRs of security gateways' fetchers
    scanner_user_agents: tuple[str, ...] = ()  # substrings of their User-Agent headers


@dataclass(frozen=True)
class ReplySettings:
    """Replies copied to heed (replies@mailto_domain), matched to the copy they answer."""

    address: str = ""  # the local part (config/heed.yaml ships "replies"); "": off
    match_ttl: float = 30 * 86400.0  # how long a sent copy can still be matched


def api(r: Reader) -> ApiSettings:
    out = r.take(ApiSettings, "api", {"tokens": texts})
    for token in out.tokens:
        if len(token) < 16:
            r.error("'api.tokens': each token must be at least 16 characters")
    return out


def bounces(r: Reader) -> BounceSettings:
    out = r.take(BounceSettings, "bounces", {
        "domain": lambda v: str(v).lower() if v else None,
        "verp_max_local": int,
        "verp_ttl": parse_duration,
        "soft_bounce_limit": int,
        "soft_bounce_window": parse_duration,
    })
    if out.hard_bounce not in ("all", "list"):
        r.error("'bounces.hard_bounce' must be 'all' or 'list'")
    return out


def webhooks(r: Reader) -> WebhookSettings:
    return r.take(WebhookSettings, "webhooks", {
        "ses_topics": texts,
        "ses_cert_hosts": texts,
        "ses_max_age": parse_duration,
        "sendgrid_max_age": parse_duration,
        "mailgun_max_age": parse_duration,
    })


def clicks(r: Reader) -> ClickSettings:
    return r.take(ClickSettings, "clicks", {
        "machine_after_delivery": parse_duration, "burst_window": parse_duration,
        "sticky_window": parse_duration, "scanner_user_agents": texts,
        "scanner_networks": lambda v: tuple(str(ipaddress.ip_network(str(n), strict=False))
                                            for n in (v or [])),
    })


def replies(r: Reader) -> ReplySettings:
    return r.take(ReplySettings, "replies", {
        "address": lambda v: str(v or "").strip().lower(), "match_ttl": parse_duration})
