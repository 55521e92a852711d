"""The `heed` command: serve, check, doctor, policy, consent, refuse, suppression, bounces, …"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from proxy.cli import checks, credentials, people, reading
from proxy.cli.common import add_common, settings_from
from proxy.errors import ConfigError, HeedError, PolicyError


def _add_serve(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the SMTP proxy, its scheduler and HTTP side")
    add_common(serve)
    serve.add_argument("--listen", metavar="HOST:PORT", help="SMTP listen address")
    serve.add_argument("--upstream", metavar="HOST:PORT", help="the real MTA")
    serve.add_argument("--http", metavar="HOST:PORT", help="HTTP listen address")
    serve.add_argument("--public-url", metavar="URL", help="base of the links heed writes")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="processes sharing the ports (SO_REUSEPORT); default 1")


def build_parser() -> argparse.ArgumentParser:
    from proxy.tell.cli import add_parsers as add_suppression

    parser = argparse.ArgumentParser(prog="heed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # In the order `heed --help` lists them.
    _add_serve(sub)
    checks.add_check(sub)
    checks.add_policy(sub)
    people.add_consent(sub)
    people.add_refuse(sub)
    people.add_engage(sub)
    reading.add_report(sub)
    reading.add_bounces(sub)
    checks.add_doctor(sub)
    add_suppression(sub, add_common)
    people.add_explain(sub)
    credentials.add_dkim(sub)
    credentials.add_passwd(sub)
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "passwd":
        return credentials.passwd(args)
    if args.command == "dkim" and args.dkim_command == "keygen":
        return credentials.keygen(args)
    settings = settings_from(args)
    if args.command == "dkim":
        return credentials.rotate(args, settings)
    if args.command == "serve":
        from proxy.serve import serve

        return serve(settings, workers=max(1, args.workers))
    if args.command == "check":
        return checks.check(args, settings)
    if args.command == "policy":
        return asyncio.run(checks.policy_test(args, settings))
    if args.command == "report":
        return asyncio.run(reading.report(args, settings))
    if args.command == "bounces":
        return asyncio.run(reading.unread(args, settings))
    if args.command == "doctor":
        return asyncio.run(checks.doctor(args, settings))
    return asyncio.run(people.manage(args, settings))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ConfigError, PolicyError) as exc:
        for line in exc.errors:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except HeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
