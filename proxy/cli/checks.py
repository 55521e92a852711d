"""`heed check|doctor|policy test`: are the config, the policy and the DNS right."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from proxy.cli.common import add_common, redis_for
from proxy.errors import ConfigError
from proxy.settings import Settings, verp_domain


def add_check(sub: Any) -> None:
    check = sub.add_parser("check", help="validate config and policies; non-zero on errors")
    check.add_argument("--connect", action="store_true",
                       help="also try the upstream MTA and Redis; non-zero if either fails")
    add_common(check)


def add_policy(sub: Any) -> None:
    policy = sub.add_parser("policy", help="policy tools")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    ptest = psub.add_parser("test", help="dry run: the decision for a message, without sending")
    add_common(ptest)
    ptest.add_argument("message", type=Path, metavar="MESSAGE.eml")
    ptest.add_argument("--to", required=True, action="append", metavar="ADDRESS")
    ptest.add_argument("--from", dest="sender", metavar="SENDER",
                       help="envelope sender (default: the From header's address)")


def add_doctor(sub: Any) -> None:
    doctor = sub.add_parser("doctor", help="check DKIM, DMARC, SPF, PTR, MX, one-click and "
                                           "bounce routing in DNS and over HTTPS")
    add_common(doctor)
    doctor.add_argument("--domain", metavar="D", help="one sending domain (default: every one)")
    doctor.add_argument("--format", choices=("text", "json"), default="text")


def check(args: argparse.Namespace, settings: Settings) -> int:
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


async def doctor(args: argparse.Namespace, settings: Settings) -> int:
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


async def policy_test(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.dryrun import dry_run

    async with redis_for(settings) as redis:
        print(await dry_run(settings, redis, args.message, args.to, args.sender))
    return 0
