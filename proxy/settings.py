"""Typed settings, built once at start-up from config/heed.yaml, environment and flags.

Environment variables override config keys: ``HEED_<SECTION>__<KEY>`` (double
underscore between levels), e.g. ``HEED_UPSTREAM__HOST=mta.internal``,
``HEED_REDIS__URL=redis://redis:6379/0``. Values are parsed as YAML scalars.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from proxy.errors import ConfigError
from proxy.redisconn import parse_redis_url

DEFAULT_CONFIG = Path("config/heed.yaml")
# HEED_* variables that are not settings: heed's own (the config file, the redis-server
# binary) and the test suite's (corpora, browser tools). Any other HEED_* must be a key.
NOT_CONFIG = ("HEED_CONFIG", "HEED_REDIS_SERVER", "HEED_REAL_REDIS_SERVER", "HEED_SET_OF_EMAILS",
              "HEED_NEWSLETTER_MIRRORS", "HEED_AXE", "HEED_SKIP_BROWSER", "HEED_SCREENSHOTS")


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


def _redis_url(value: Any) -> str | None:
    """A Redis URL in one of proxy/redisconn.py's forms, checked at start rather than first use."""
    if not value:
        return None
    parse_redis_url(str(value))
    return str(value)


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
class RedisSettings:
    url: str | None = None  # None -> embedded private redis-server
    data_dir: Path = Path("var/redis")
    prefix: str = "heed"
    # Seconds a delivery's record (sends, audit, VERP mapping) may wait to share a
    # round trip after the reply; 0: written before the reply (proxy/batch.py).
    write_behind: float = 0.05
    # What must be durable (delay queue, consent, refusals) on a Redis of its own with
    # appendfsync always, the rest on one with everysec (proxy/durable/). The embedded
    # default starts both (split); with redis.url, durable_url names the second.
    durable_url: str | None = None
    split: bool = True


@dataclass(frozen=True)
class QueueSettings:
    poll_interval: float = 1.0
    batch: int = 50
    lease: float = 300.0  # a claim older than this is recovered (its worker died)
    max_hold: float = 7 * 86400.0
    backoff: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)


@dataclass(frozen=True)
class AuditSettings:
    # The global audit trail keeps about this many entries (Redis trims whole nodes,
    # so a few more), and none older than max_age when set (0: no age limit).
    max_entries: int = 1_000_000
    max_age: float = 0.0


@dataclass(frozen=True)
class UnsubscribeKey:
    id: str
    secret: bytes
    retired: bool = False


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    key_file: Path
    algorithm: str = "rsa-sha256"  # or "ed25519-sha256" (RFC 8463)


@dataclass(frozen=True)
class HttpSettings:
    listen: tuple[str, int] | None = ("127.0.0.1", 8025)
    public_url: str = "http://127.0.0.1:8025"


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


@dataclass(frozen=True)
class TellSettings:
    """Telling the tool each "no" heed hears (docs/tell.md): sync-back and webhooks out."""

    # mailto sync-back: the From of the unsubscribe mail; "" -> unsubscribe@mailto_domain.
    sender: str = ""
    # Hosts, IPs or networks a request may go to although they are loopback or private.
    allow: tuple[str, ...] = ()
    timeout: float = 10.0  # one request, connection included
    backoff: tuple[float, ...] = (30.0, 120.0, 600.0, 3600.0, 6 * 3600.0)
    max_attempts: int = 8  # then the job goes to the dead-letter list
    lease: float = 60.0  # a claimed job (or outbox entry) older than this is taken over
    poll_interval: float = 1.0
    offer_ttl: float = 90 * 86400.0  # how long the tool's own links are kept after a copy
    lifecycle_every: float = 3600.0  # how often one worker looks for people turned inactive
    # Signed outbound webhooks: [{url: https://…, secrets: [whsec_…]}] (Standard Webhooks).
    webhooks: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class UnsubscribeSettings:
    mailto_domain: str = "heed.localdomain"
    keys: tuple[UnsubscribeKey, ...] = ()
    token_lifetime: float = 90 * 86400.0  # CASL asks 60 days, CAN-SPAM 30
    # Keys the hashed suppression entries of erased addresses; never rotate it (the
    # entries would stop matching). None: a random one beside the embedded Redis data.
    erase_secret: bytes | None = None


@dataclass(frozen=True)
class DnsSettings:
    """The resolver heed asks (MX of receiving domains, `heed doctor`)."""

    nameservers: tuple[str, ...] = ()  # "IP" or "IP:PORT"; empty: /etc/resolv.conf
    timeout: float = 3.0
    mx_cache: float = 3600.0  # how long a domain's mailbox provider (from its MX) is kept


@dataclass(frozen=True)
class DoctorSettings:
    """What `heed doctor` checks the DNS against (docs/bulk-senders.md)."""

    egress: tuple[str, ...] = ()  # the upstream's outbound IPs or host names (SPF, PTR)
    domains: tuple[str, ...] = ()  # sending domains beyond the policy's
    reply_to: tuple[str, ...] = ()  # Reply-To domains: replies must reach a mailbox (MX)


@dataclass(frozen=True)
class ProviderSettings:
    """A mailbox provider beyond the built-in ones (proxy/providers/catalog.py)."""

    name: str
    label: str = ""
    domains: tuple[str, ...] = ()
    mx: tuple[str, ...] = ()  # MX host suffixes
    per_message_feedback: bool = True
    signals: tuple[str, ...] = ()  # regular expressions of its "slow down" replies


@dataclass(frozen=True)
class Settings:
    smtp: SmtpSettings = SmtpSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    redis: RedisSettings = RedisSettings()
    queue: QueueSettings = QueueSettings()
    audit: AuditSettings = AuditSettings()
    http: HttpSettings = HttpSettings()
    unsubscribe: UnsubscribeSettings = UnsubscribeSettings()
    api: ApiSettings = ApiSettings()
    bounces: BounceSettings = BounceSettings()
    webhooks: WebhookSettings = WebhookSettings()
    clicks: ClickSettings = ClickSettings()
    replies: ReplySettings = ReplySettings()
    tell: TellSettings = TellSettings()
    dkim: tuple[DkimKey, ...] = ()
    dns: DnsSettings = DnsSettings()
    doctor: DoctorSettings = DoctorSettings()
    providers: tuple[ProviderSettings, ...] = ()
    policies: Path = Path("policies")
    log_level: str = "INFO"
    log_format: str = "json"  # or "text"
    # How addresses appear in log lines: full, hash (keyed with the erase secret) or domain.
    log_addresses: str = "full"
    source: Path | None = None  # the config file these came from


def _erase_secret(value: Any) -> bytes | None:
    if value is None:
        return None
    if len(str(value).encode()) < 16:
        raise ValueError("must be at least 16 bytes")
    return str(value).encode()


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith("HEED_") or name in NOT_CONFIG:
            continue
        path = [p.lower() for p in name[5:].split("__") if p]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = yaml.safe_load(raw) if raw else None
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the config file (if any), apply HEED_* environment and flag overrides, validate."""
    raw: dict[str, Any] = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            problem = getattr(exc, "problem", exc)
            raise ConfigError([f"{path}{line}: invalid YAML: {problem}"]) from None
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}:1: expected a mapping at the top level"])
        raw = loaded
    raw = _merge(raw, _env_overrides(os.environ if env is None else env))
    if overrides:
        raw = _merge(raw, overrides)
    base = path.parent.parent if path is not None and path.parent.name == "config" else Path(".")
    return _build(raw, where, base, path)


def _build(raw: dict[str, Any], where: str, base: Path, source: Path | None) -> Settings:
    errors: list[str] = []

    def section(name: str) -> dict[str, Any]:
        value = raw.get(name) or {}
        if not isinstance(value, dict):
            errors.append(f"{where}: '{name}' must be a mapping")
            return {}
        return value

    def rel(p: Any) -> Path:
        q = Path(str(p))
        return q if q.is_absolute() else base / q

    def take(cls: type, data: dict[str, Any], name: str, conv: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known and key not in conv:
                errors.append(f"{where}: unknown key '{name}.{key}'")
                continue
            try:
                kwargs[key] = conv[key](value) if key in conv else value
            except (ValueError, TypeError) as exc:
                errors.append(f"{where}: '{name}.{key}': {exc}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            errors.append(f"{where}: '{name}': {exc}")
            return cls()

    smtp_raw = section("smtp")
    smtp = take(
        SmtpSettings,
        smtp_raw,
        "smtp",
        {
            "listen": parse_hostport,
            "client_networks": lambda v: tuple(ipaddress.ip_network(str(n)) for n in (v or [])),
            "users": lambda v: dict(v or {}),
            "tls_cert": lambda v: rel(v) if v else None,
            "tls_key": lambda v: rel(v) if v else None,
            "max_message_size": int,
            "max_recipients": int,
            "max_sessions": int,
            "max_sessions_per_client": int,
            "postmaster": lambda v: str(v).strip() if v else None,
            "command_timeout": parse_duration,
            "data_timeout": parse_duration,
        },
    )
    for net in smtp.client_networks:
        if net.prefixlen == 0:
            errors.append(f"{where}: 'smtp.client_networks': {net} would make heed an open relay")
    if smtp.max_recipients < 100:
        errors.append(f"{where}: 'smtp.max_recipients' must be at least 100 (RFC 5321 §4.5.3.1.8)")

    upstream = take(
        UpstreamSettings,
        section("upstream"),
        "upstream",
        {"port": int, "timeout": parse_duration, "data_timeout": parse_duration,
         "pool_size": int},
    )
    if upstream.timeout <= 0 or upstream.data_timeout <= 0:
        errors.append(f"{where}: 'upstream.timeout' and 'upstream.data_timeout' must be > 0")
    if upstream.on_failure not in ("tempfail", "queue"):
        errors.append(f"{where}: 'upstream.on_failure' must be 'tempfail' or 'queue'")

    redis = take(
        RedisSettings,
        section("redis"),
        "redis",
        {"data_dir": rel, "url": _redis_url, "write_behind": parse_duration,
         "durable_url": _redis_url},
    )
    if not 0 <= redis.write_behind <= 1:
        # Longer would widen what a killed process loses without saving a round trip.
        errors.append(f"{where}: 'redis.write_behind' must be between 0s and 1s")
    queue = take(
        QueueSettings,
        section("queue"),
        "queue",
        {
            "poll_interval": parse_duration,
            "lease": parse_duration,
            "max_hold": parse_duration,
            "batch": int,
            "backoff": lambda v: tuple(parse_duration(x) for x in v),
        },
    )
    audit = take(AuditSettings, section("audit"), "audit",
                 {"max_entries": int, "max_age": parse_duration})
    if audit.max_entries < 1000 or audit.max_age < 0:
        errors.append(f"{where}: 'audit.max_entries' must be at least 1000 and "
                      "'audit.max_age' a duration (0: no age limit)")
    http = take(
        HttpSettings,
        section("http"),
        "http",
        {
            "listen": lambda v: parse_hostport(v) if v else None,
            "public_url": lambda v: str(v).rstrip("/"),
        },
    )
    api, bounces, webhooks = _signals(take, section, where, errors)
    clicks = take(ClickSettings, section("clicks"), "clicks", {
        "machine_after_delivery": parse_duration, "burst_window": parse_duration,
        "sticky_window": parse_duration, "scanner_user_agents": _texts,
        "scanner_networks": lambda v: tuple(str(ipaddress.ip_network(str(n), strict=False))
                                            for n in (v or [])),
    })
    replies = take(ReplySettings, section("replies"), "replies", {
        "address": lambda v: str(v or "").strip().lower(), "match_ttl": parse_duration})
    tell = _tell(take, section, where, errors)

    def keys(v: Any) -> tuple[UnsubscribeKey, ...]:
        out = []
        for k in v or []:
            secret = str(k["secret"]).encode()
            if len(secret) < 16:
                raise ValueError(f"key {k.get('id')!r}: secret must be at least 16 bytes")
            out.append(UnsubscribeKey(str(k["id"]), secret, bool(k.get("retired", False))))
        return tuple(out)

    unsub = take(
        UnsubscribeSettings,
        section("unsubscribe"),
        "unsubscribe",
        {"keys": keys, "token_lifetime": parse_duration, "erase_secret": _erase_secret},
    )
    if unsub.token_lifetime < 60 * 86400:
        errors.append(f"{where}: 'unsubscribe.token_lifetime' must be at least 60d (CASL)")

    dkim: list[DkimKey] = []
    for i, entry in enumerate(raw.get("dkim") or []):
        try:
            dkim.append(
                DkimKey(
                    domain=str(entry["domain"]).lower(),
                    selector=str(entry["selector"]),
                    key_file=rel(entry["key_file"]),
                    algorithm=str(entry.get("algorithm", "rsa-sha256")),
                )
            )
        except (KeyError, TypeError) as exc:
            errors.append(f"{where}: 'dkim[{i}]' needs domain, selector and key_file ({exc})")

    dns, doctor, providers = _bulk(take, section, raw, where, errors)

    known = {"smtp", "upstream", "redis", "queue", "audit", "http", "unsubscribe", "dkim",
             "policies", "log_level", "log_format", "log_addresses", "api", "bounces",
             "webhooks", "clicks", "replies", "dns", "doctor", "providers", "tell"}
    for key in raw:
        if key not in known:
            errors.append(f"{where}: unknown top-level key '{key}'")
    log_addresses = str(raw.get("log_addresses", "full"))
    if log_addresses not in ("full", "hash", "domain"):
        errors.append(f"{where}: 'log_addresses' must be full, hash or domain")
    if errors:
        raise ConfigError(errors)
    return Settings(
        smtp=smtp,
        upstream=upstream,
        redis=redis,
        queue=queue,
        audit=audit,
        http=http,
        unsubscribe=unsub,
        api=api,
        bounces=bounces,
        webhooks=webhooks,
        clicks=clicks,
        replies=replies,
        tell=tell,
        dkim=tuple(dkim),
        dns=dns,
        doctor=doctor,
        providers=providers,
        policies=rel(raw.get("policies", "policies")),
        log_level=str(raw.get("log_level", "INFO")).upper(),
        log_format=str(raw.get("log_format", "json")),
        log_addresses=log_addresses,
        source=source,
    )


def _texts(v: Any) -> tuple[str, ...]:
    return tuple(str(t) for t in (v or []))


def _signals(take: Any, section: Any, where: str,
             errors: list[str]) -> tuple[ApiSettings, BounceSettings, WebhookSettings]:
    """The ``api``, ``bounces`` and ``webhooks`` sections (events in: docs/events.md)."""
    api = take(ApiSettings, section("api"), "api", {"tokens": _texts})
    for token in api.tokens:
        if len(token) < 16:
            errors.append(f"{where}: 'api.tokens': each token must be at least 16 characters")
    bounces = take(BounceSettings, section("bounces"), "bounces", {
        "domain": lambda v: str(v).lower() if v else None,
        "verp_max_local": int,
        "verp_ttl": parse_duration,
        "soft_bounce_limit": int,
        "soft_bounce_window": parse_duration,
    })
    if bounces.hard_bounce not in ("all", "list"):
        errors.append(f"{where}: 'bounces.hard_bounce' must be 'all' or 'list'")
    hooks = take(WebhookSettings, section("webhooks"), "webhooks", {
        "ses_topics": _texts,
        "ses_cert_hosts": _texts,
        "ses_max_age": parse_duration,
        "sendgrid_max_age": parse_duration,
        "mailgun_max_age": parse_duration,
    })
    return api, bounces, hooks


def _whsec(secret: str) -> bool:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of at least 16 bytes."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        return False
    return secret.startswith("whsec_") and len(key) >= 16


def _endpoints(v: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for i, hook in enumerate(v or []):
        if not isinstance(hook, Mapping) or not str(hook.get("url", "")).startswith(
                ("https://", "http://")):
            raise ValueError(f"entry {i}: needs url: https://…")
        secrets = _texts(hook.get("secrets"))
        if not secrets or not all(_whsec(s) for s in secrets):
            raise ValueError(f"entry {i}: secrets must be a list of whsec_<base64> secrets "
                             "of at least 16 bytes")
        out.append((str(hook["url"]), secrets))
    return tuple(out)


def _tell(take: Any, section: Any, where: str, errors: list[str]) -> TellSettings:
    """The ``tell`` section: what heed sends back to the tool (docs/tell.md)."""
    tell: TellSettings = take(TellSettings, section("tell"), "tell", {
        "allow": _texts, "timeout": parse_duration, "lease": parse_duration,
        "poll_interval": parse_duration, "offer_ttl": parse_duration, "max_attempts": int,
        "lifecycle_every": parse_duration,
        "backoff": lambda v: tuple(parse_duration(x) for x in v),
        "webhooks": _endpoints,
    })
    if not 0 < tell.timeout <= 60:
        errors.append(f"{where}: 'tell.timeout' must be between 0s and 60s")
    if not tell.backoff:
        errors.append(f"{where}: 'tell.backoff' needs at least one delay")
    return tell


def _nameserver(value: str) -> str:
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    ipaddress.ip_address(host or value)
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"bad port in {value!r}")
    return value


def _bulk(take: Any, section: Any, raw: dict[str, Any], where: str, errors: list[str]
          ) -> tuple[DnsSettings, DoctorSettings, tuple[ProviderSettings, ...]]:
    """The ``dns``, ``doctor`` and ``providers`` keys (mailbox providers' rules)."""
    dns = take(DnsSettings, section("dns"), "dns", {
        "nameservers": lambda v: tuple(_nameserver(str(n)) for n in (v or [])),
        "timeout": parse_duration, "mx_cache": parse_duration})
    doctor = take(DoctorSettings, section("doctor"), "doctor",
                  {"egress": _texts, "domains": lambda v: tuple(str(d).lower() for d in v or []),
                   "reply_to": lambda v: tuple(str(d).lower() for d in v or [])})
    providers: list[ProviderSettings] = []
    for i, entry in enumerate(raw.get("providers") or []):
        try:
            providers.append(ProviderSettings(
                name=str(entry["name"]), label=str(entry.get("label", "")),
                domains=tuple(str(d).lower() for d in entry.get("domains") or []),
                mx=tuple(str(d).lower() for d in entry.get("mx") or []),
                per_message_feedback=bool(entry.get("per_message_feedback", True)),
                signals=_texts(entry.get("signals"))))
        except (KeyError, TypeError, AttributeError) as exc:
            errors.append(f"{where}: 'providers[{i}]' needs a name ({exc})")
    return dns, doctor, tuple(providers)
