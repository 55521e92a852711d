"""The `heed` command: serve, check, doctor, policy, consent, refuse, suppression, bounces, …"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from proxy.errors import ConfigError, HeedError, PolicyError
from proxy.settings import DEFAULT_CONFIG, Settings, load_settings, parse_hostport
from proxy.types import ENGAGEMENT_KINDS

REFUSAL_REASONS = ("unsubscribe", "complaint", "bounce", "manual")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help=f"service config (default: $HEED_CONFIG, else {DEFAULT_CONFIG} when "
                        "it exists, else the running heed serve's)")
    p.add_argument("--redis", metavar="URL", help="Redis URL (replaces the embedded default)")
    p.add_argument("--policies", type=Path, metavar="DIR", help="policy directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="heed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the SMTP proxy, its scheduler and HTTP side")
    _common(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="SMTP listen address")
    serve.add_argument("--upstream", metavar="HOST:PORT", help="the real MTA")
    serve.add_argument("--http", metavar="HOST:PORT", help="HTTP listen address")
    serve.add_argument("--public-url", metavar="URL", help="base of the links heed writes")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="processes sharing the ports (SO_REUSEPORT); default 1")

    check = sub.add_parser("check", help="validate config and policies; non-zero on errors")
    check.add_argument("--connect", action="store_true",
                       help="also try the upstream MTA and Redis; non-zero if either fails")
    _common(check)

    policy = sub.add_parser("policy", help="policy tools")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    ptest = psub.add_parser("test", help="dry run: the decision for a message, without sending")
    _common(ptest)
    ptest.add_argument("message", type=Path, metavar="MESSAGE.eml")
    ptest.add_argument("--to", required=True, action="append", metavar="ADDRESS")
    ptest.add_argument("--from", dest="sender", metavar="SENDER",
                       help="envelope sender (default: the From header's address)")

    consent = sub.add_parser("consent", help="grant, revoke or import consent")
    csub = consent.add_subparsers(dest="consent_command", required=True)
    for name in ("grant", "revoke"):
        c = csub.add_parser(name)
        _common(c)
        c.add_argument("address")
        c.add_argument("--list", required=True, dest="list_name", metavar="L")
        c.add_argument("--source", default="cli", metavar="S")
        if name == "grant":
            c.add_argument("--ip", default="")
            c.add_argument("--text", default="", help="the consent wording or its version")
    cimp = csub.add_parser("import", help="import consent records from CSV")
    _common(cimp)
    cimp.add_argument("file", type=Path, metavar="FILE.csv")

    refuse = sub.add_parser("refuse", help="record a refusal (a no)")
    _common(refuse)
    refuse.add_argument("address")
    refuse.add_argument("--list", dest="list_name", metavar="L", help="default: every list")
    refuse.add_argument("--reason", required=True, choices=REFUSAL_REASONS)

    engage = sub.add_parser("engage", help="record an engagement (click, reply, …), or "
                            "`engage import FILE.csv` (address,kind,time[,list|stream])")
    _common(engage)
    engage.add_argument("address", help="the person, or `import`")
    engage.add_argument("file", nargs="?", type=Path, metavar="FILE.csv",
                        help="with `import`: the CSV to read")
    engage.add_argument("--kind", default="manual", choices=ENGAGEMENT_KINDS)

    report = sub.add_parser("report", help="compliance figures from the audit trail")
    _common(report)
    report.add_argument("--since", default="30d", metavar="DURATION",
                        help="how far back to look, e.g. 7d, 12h (default 30d)")
    report.add_argument("--format", choices=("text", "json", "html"), default="text")
    report.add_argument("--exact", action="store_true",
                        help="read every person for the lifecycle counts, not a sample")

    bounces = sub.add_parser("bounces", help="bounce and complaint reports heed received")
    bsub = bounces.add_subparsers(dest="bounces_command", required=True)
    unread = bsub.add_parser("unread", help="reports accepted that made no event, kept to read")
    _common(unread)
    unread.add_argument("--since", default="7d", metavar="DURATION",
                        help="how far back to look, e.g. 1d, 12h (default 7d; kept 30d)")
    unread.add_argument("--show", metavar="ID", help="print the kept report with this ID")

    doctor = sub.add_parser("doctor", help="check DKIM, DMARC, SPF, PTR, MX, one-click and "
                                           "bounce routing in DNS and over HTTPS")
    _common(doctor)
    doctor.add_argument("--domain", metavar="D", help="one sending domain (default: every one)")
    doctor.add_argument("--format", choices=("text", "json"), default="text")

    from proxy.tell.cli import add_parsers

    add_parsers(sub, _common)

    explain = sub.add_parser("explain", help="why did / didn't this person get mail")
    _common(explain)
    explain.add_argument("address")

    dkim = sub.add_parser("dkim", help="DKIM keys")
    dsub = dkim.add_subparsers(dest="dkim_command", required=True)
    keygen = dsub.add_parser("keygen", help="write a key and print the DNS TXT record")
    keygen.add_argument("domain")
    keygen.add_argument("selector")
    keygen.add_argument("--dir", type=Path, default=Path("config/dkim"))
    keygen.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    keygen.add_argument("--bits", type=int, default=2048)

    rotate = dsub.add_parser("rotate", help="a new selector; the old one retired after a grace")
    _common(rotate)
    rotate.add_argument("domain")
    rotate.add_argument("selector", help="the new selector, e.g. s202612")
    rotate.add_argument("--dir", type=Path, default=Path("config/dkim"))
    rotate.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    rotate.add_argument("--bits", type=int, default=2048)
    rotate.add_argument("--grace", default="7d", metavar="DURATION",
                        help="how long the old key stays published (default 7d)")

    passwd = sub.add_parser("passwd", help="hash an SMTP client password for config")
    passwd.add_argument("--password", help="(default: ask on the terminal)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Config file, env, then flags. The file: --config, $HEED_CONFIG, ./config/heed.yaml,
    or (for the management commands) the one the running `heed serve` was started with."""
    path = args.config or (Path(os.environ["HEED_CONFIG"]) if os.environ.get("HEED_CONFIG")
                           else None)
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    overrides: dict[str, Any] = {}
    if path is None and args.command != "serve" and not getattr(args, "redis", None):
        from proxy.locate import running

        found = running(os.environ)
        if found:  # run from elsewhere: use what `heed serve` runs on, wherever that is
            path = Path(found["config"]) if found.get("config") else None
            overrides = {"redis": {"data_dir": found["data_dir"]},
                         "policies": found["policies"]}
        else:
            print(f"note: no config here (--config, $HEED_CONFIG, {DEFAULT_CONFIG}) and no "
                  f"heed serve running: using the defaults in {Path.cwd()}", file=sys.stderr)
    if getattr(args, "redis", None):
        overrides.setdefault("redis", {})["url"] = args.redis
    if getattr(args, "policies", None):
        overrides["policies"] = str(args.policies.resolve())
    if getattr(args, "listen", None):
        overrides.setdefault("smtp", {})["listen"] = args.listen
    if getattr(args, "upstream", None):
        host, port = parse_hostport(args.upstream)
        overrides.setdefault("upstream", {}).update(host=host, port=port)
    if getattr(args, "http", None):
        overrides.setdefault("http", {})["listen"] = args.http
    if getattr(args, "public_url", None):
        overrides.setdefault("http", {})["public_url"] = args.public_url
    return load_settings(path, overrides=overrides)


@contextlib.asynccontextmanager
async def redis_for(settings: Settings) -> AsyncIterator[Any]:
    """A client for the configured Redis, or for the embedded one (started if not running).

    With a durable Redis (embedded split, or redis.durable_url) the client writes durable
    keys there first, and its ``durable`` attribute is that Redis (the delay queue's)."""
    from proxy.durable.mirror import Mirror, MirroredRedis
    from proxy.embedded_redis import EmbeddedRedis, embedded_pair, ping
    from proxy.keys import Keys
    from proxy.redisconn import connect_redis, warm_up

    started: list[EmbeddedRedis] = []
    url, durable_url = settings.redis.url, settings.redis.durable_url

    def embedded(candidate: EmbeddedRedis) -> str:
        if candidate.socket is not None and ping(candidate.socket):
            return candidate.url  # `heed serve` is running: use its Redis
        started.append(candidate)
        # Started from this thread: the server is tied to the thread that forked it
        # (PR_SET_PDEATHSIG), and a pool thread may end before the command does.
        return candidate.start()

    try:
        if url is None:
            serving, durable = embedded_pair(settings.redis)
            url = embedded(serving)
            durable_url = embedded(durable) if durable is not None else None
            if started:
                print(f"note: no heed serve runs on {settings.redis.data_dir.resolve()}; its "
                      "Redis was started for this command", file=sys.stderr)
        client = connect_redis(url)
        await warm_up(client)
        if durable_url is not None:
            from proxy.durable.reconcile import reconcile

            durable_client, keys = connect_redis(durable_url), Keys(settings.redis.prefix)
            await reconcile(client, durable_client, keys, restore=not settings.redis.url
                            and len(started) == 2)  # restored only when no heed serve runs
            client = MirroredRedis(client, Mirror(durable_client, keys))
        try:
            yield client
        finally:
            await client.aclose()
    finally:
        for server in reversed(started):
            server.stop()


def provider_guard(settings: Settings, redis: Any, clock: Any) -> Any:
    """The provider guard as `heed serve` builds it (catalog, MX lookup, throttling)."""
    from proxy.keys import Keys
    from proxy.providers.catalog import Catalog
    from proxy.providers.guard import ProviderGuard
    from proxy.providers.lookup import ProviderLookup, make_resolver

    catalog = Catalog(settings.providers)
    lookup = ProviderLookup(catalog, make_resolver(settings.dns), clock, settings.dns.mx_cache)
    return ProviderGuard(redis, Keys(settings.redis.prefix), catalog, lookup, clock)


async def _manage(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.audit import Audit
    from proxy.clock import SystemClock
    from proxy.explain import explain
    from proxy.keys import Keys
    from proxy.privacy import erase_secret
    from proxy.state import State

    clock = SystemClock()
    keys = Keys(settings.redis.prefix)
    async with redis_for(settings) as redis:
        audit = Audit(redis, keys, maxlen_global=settings.audit.max_entries,
                      max_age=settings.audit.max_age)
        state = State(redis, keys, clock, secret=erase_secret(settings), audit=audit)
        if args.command == "consent" and args.consent_command == "grant":
            await state.grant(args.address, args.list_name, source=args.source, ip=args.ip,
                              text=args.text)
            print(f"consent granted: {args.address} -> {args.list_name}")
        elif args.command == "consent" and args.consent_command == "revoke":
            await state.revoke(args.address, args.list_name, source=args.source)
            print(f"consent revoked: {args.address} -> {args.list_name}")
        elif args.command == "consent":
            report = await state.import_consent_csv(args.file)
            for line in report.errors:
                print(f"{args.file}:{line}", file=sys.stderr)
            print(f"imported {report.imported} rows, {len(report.errors)} rejected")
            return 1 if report.errors else 0
        elif args.command == "refuse":
            await state.refuse(args.address, args.reason, list=args.list_name, channel="cli")
            print(f"refusal recorded: {args.address} ({args.reason}, "
                  f"{args.list_name or 'every list'})")
        elif args.command == "engage" and args.address == "import":
            from proxy.signals.engagement_import import import_engagement

            if args.file is None:
                print("heed engage import: name the CSV file", file=sys.stderr)
                return 2
            done = await import_engagement(state, args.file, clock.now())
            for line in done.errors:
                print(f"{args.file}:{line}", file=sys.stderr)
            print(f"imported {done.imported} rows, {done.known} already known, "
                  f"{len(done.errors)} rejected")
            return 1 if done.errors else 0
        elif args.command == "suppression":
            from proxy.tell.cli import run

            return await run(args, state)
        elif args.command == "engage":
            await state.engage(args.address, kind=args.kind, source="cli")
            print(f"engagement recorded: {args.address} ({args.kind})")
        elif args.command == "explain":
            from proxy.policy_store import PolicyStore
            from proxy.queue import DelayQueue

            policy = PolicyStore(settings.policies).current
            from proxy.signals.sources import sources

            held = await DelayQueue(getattr(redis, "durable", redis), keys).items_for(
                args.address)
            guard = provider_guard(settings, redis, clock)
            provider = await guard.lookup.provider_of(args.address.rpartition("@")[2])
            print(await explain(state, Audit(redis, keys), args.address, now=clock.now(),
                                policy=policy, provider=provider, held=held,
                                sources=lambda s: sources(settings, s)))
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.bulk.signing import bulk_problems
    from proxy.policy import load_policies

    policy = load_policies(settings.policies)
    problems = bulk_problems(settings, policy)
    for line in problems.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if problems.errors:
        raise ConfigError(problems.errors)
    print(f"config ok: {settings.source or '(defaults)'}")
    print(f"policies ok: {settings.policies} version {policy.version}, "
          f"streams: {', '.join(policy.streams)}")
    for line in policy.warnings:  # worth fixing, not worth refusing to start over
        print(f"warning: {line}", file=sys.stderr)
    from proxy.signals.sources import deaf_streams

    for warning in deaf_streams(settings, policy):
        print(f"warning: {warning}", file=sys.stderr)
    print(_bounce_routing(settings))
    return asyncio.run(_connect(settings)) if args.connect else 0


def _bounce_routing(settings: Settings) -> str:
    """Where bounces of marketing copies go with these settings, and what that needs."""
    from proxy.settings import verp_domain

    b = settings.bounces
    domain = verp_domain(b)
    if domain is None:
        why = "bounces.domain is not set" if b.verp else "bounces.verp is off"
        return (f"bounces: {why}, so copies keep the tool's MAIL FROM and bounces go to the "
                "tool (VERP needs bounces.domain, a domain routed to heed)")
    listen = f"{settings.smtp.listen[0]}:{settings.smtp.listen[1]}"
    return (f"bounces: VERP on: marketing copies go out with MAIL FROM bounce+TOKEN@{domain}. "
            f"Route {domain} to heed, or bounces are lost: an MX record for {domain} "
            f"pointing at your MTA, and the MTA relaying {b.address}@{domain}, "
            f"{b.address}+*@{domain} and {b.complaints}@{domain} to heed's SMTP listener "
            f"({listen}; docs/postfix.md shows a transport map)")


async def _connect(settings: Settings) -> int:
    from proxy.probe import probe_redis, probe_upstream

    up = f"{settings.upstream.host}:{settings.upstream.port}"
    where = settings.redis.url or f"embedded in {settings.redis.data_dir}"
    failed = 0
    for name, peer, ok, problem in (
            ("upstream", up, "greets with 220", await probe_upstream(settings)),
            ("redis", where, "answers PING", await probe_redis(settings))):
        if problem:
            print(f"error: {name} {peer}: {problem}", file=sys.stderr)
            failed = 1
        else:
            print(f"{name} ok: {peer} {ok}")
    return failed


async def _report(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.clock import SystemClock
    from proxy.keys import Keys
    from proxy.policy import load_policies
    from proxy.report import RENDERERS, build_report
    from proxy.report.people import SAMPLE
    from proxy.settings import parse_duration
    from proxy.state import GUARD_LOOKBACK, State

    try:
        window = parse_duration(args.since)
    except ValueError as exc:
        raise ConfigError([f"--since: {exc}"]) from None
    policy = load_policies(settings.policies)
    clock = SystemClock()
    async with redis_for(settings) as client:
        # A report only reads: the serving Redis's own client (the trail's fast read).
        redis = getattr(client, "inner", client)
        now = clock.now()
        guard = provider_guard(settings, redis, clock)
        report = await build_report(State(redis, Keys(settings.redis.prefix), clock), policy,
                                    since=now - window, now=now, lookback=GUARD_LOOKBACK,
                                    catalog=guard.catalog, lookup=guard.lookup,
                                    throttles=await guard.throttles(),
                                    sample=None if args.exact else SAMPLE)
    sys.stdout.write(RENDERERS[args.format](report))
    return 0


async def _unread(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from proxy.clock import SystemClock
    from proxy.keys import Keys
    from proxy.settings import parse_duration
    from proxy.signals.unread import Unread

    try:
        window = parse_duration(args.since)
    except ValueError as exc:
        raise ConfigError([f"--since: {exc}"]) from None
    clock = SystemClock()
    async with redis_for(settings) as redis:
        unread = Unread(redis, Keys(settings.redis.prefix), clock)
        if args.show:
            report = await unread.get(args.show)
            if report is None:
                print(f"error: no kept report {args.show} (kept 30 days)", file=sys.stderr)
                return 1
            sys.stdout.buffer.write(report.data)
            return 0
        reports = await unread.since(clock.now() - window)
    for r in reports:
        when = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{r.id}  {when}  to {r.to}  {r.size} bytes  {r.why}  {r.subject!r}")
    print(f"{len(reports)} unread report(s) since {args.since}; "
          "`heed bounces unread --show ID` prints one")
    return 0


async def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.app import unsubscribe_keys
    from proxy.clock import SystemClock
    from proxy.doctor.run import diagnose, render_json, render_text
    from proxy.policy import load_policies
    from proxy.tokens import TokenSigner

    policy = load_policies(settings.policies)
    tokens = TokenSigner(unsubscribe_keys(settings), SystemClock(),
                         settings.unsubscribe.token_lifetime)
    findings = await diagnose(settings, policy, tokens, only=args.domain)
    sys.stdout.write((render_json if args.format == "json" else render_text)(findings))
    return 0 if all(f.ok for f in findings) else 1


async def _policy_test(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.dryrun import dry_run

    async with redis_for(settings) as redis:
        print(await dry_run(settings, redis, args.message, args.to, args.sender))
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from proxy.dkim import generate_key

    path, record = generate_key(args.domain, args.selector, args.dir, bits=args.bits,
                                algorithm=args.algorithm)
    print(f"private key written to {path}")
    print("publish this DNS TXT record:")
    print(record)
    alg = "ed25519-sha256" if args.algorithm == "ed25519" else "rsa-sha256"
    print("and add this entry to `dkim:` in config/heed.yaml:")
    print(f"  - {{domain: {args.domain}, selector: {args.selector}, key_file: {path}, "
          f"algorithm: {alg}}}")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    from proxy.smtp.access import hash_password

    password = args.password or getpass.getpass("password: ")
    print(hash_password(password))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "passwd":
            return _passwd(args)
        if args.command == "dkim" and args.dkim_command == "keygen":
            return _keygen(args)
        settings = settings_from(args)
        if args.command == "dkim":
            from proxy.bulk.rotate import rotate
            from proxy.settings import parse_duration

            sys.stdout.write(rotate(settings, args.domain, args.selector, args.dir,
                                    algorithm=args.algorithm, bits=args.bits,
                                    grace=parse_duration(args.grace)))
            return 0
        if args.command == "serve":
            from proxy.serve import serve

            return serve(settings, workers=max(1, args.workers))
        if args.command == "check":
            return _check(args, settings)
        if args.command == "policy":
            return asyncio.run(_policy_test(args, settings))
        if args.command == "report":
            return asyncio.run(_report(args, settings))
        if args.command == "bounces":
            return asyncio.run(_unread(args, settings))


        if args.command == "doctor":
            return asyncio.run(_doctor(args, settings))
        return asyncio.run(_manage(args, settings))
    except (ConfigError, PolicyError) as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except HeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
