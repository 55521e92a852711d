"""`heed consent|refuse|engage|explain` (and the state `heed suppression` works on): one person."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from proxy.cli.common import add_common, provider_guard, redis_for
from proxy.settings import Settings
from proxy.types import ENGAGEMENT_KINDS

REFUSAL_REASONS = ("unsubscribe", "complaint", "bounce", "manual")


def add_consent(sub: Any) -> None:
    consent = sub.add_parser("consent", help="grant, revoke or import consent")
    csub = consent.add_subparsers(dest="consent_command", required=True)
    for name in ("grant", "revoke"):
        c = csub.add_parser(name)
        add_common(c)
        c.add_argument("address")
        c.add_argument("--list", required=True, dest="list_name", metavar="L")
        c.add_argument("--source", default="cli", metavar="S")
        if name == "grant":
            c.add_argument("--ip", default="")
            c.add_argument("--text", default="", help="the consent wording or its version")
    cimp = csub.add_parser("import", help="import consent records from CSV")
    add_common(cimp)
    cimp.add_argument("file", type=Path, metavar="FILE.csv")


def add_refuse(sub: Any) -> None:
    refuse = sub.add_parser("refuse", help="record a refusal (a no)")
    add_common(refuse)
    refuse.add_argument("address")
    refuse.add_argument("--list", dest="list_name", metavar="L", help="default: every list")
    refuse.add_argument("--reason", required=True, choices=REFUSAL_REASONS)


def add_engage(sub: Any) -> None:
    engage = sub.add_parser("engage", help="record an engagement (click, reply, …), or "
                            "`engage import FILE.csv` (address,kind,time[,list|stream])")
    add_common(engage)
    engage.add_argument("address", help="the person, or `import`")
    engage.add_argument("file", nargs="?", type=Path, metavar="FILE.csv",
                        help="with `import`: the CSV to read")
    engage.add_argument("--kind", default="manual", choices=ENGAGEMENT_KINDS)


def add_explain(sub: Any) -> None:
    explain = sub.add_parser("explain", help="why did / didn't this person get mail")
    add_common(explain)
    explain.add_argument("address")


async def manage(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.audit import Audit
    from proxy.clock import SystemClock
    from proxy.keys import Keys
    from proxy.privacy import erase_secret
    from proxy.state import State

    clock = SystemClock()
    keys = Keys(settings.redis.prefix)
    async with redis_for(settings) as redis:
        audit = Audit(redis, keys, maxlen_global=settings.audit.max_entries,
                      max_age=settings.audit.max_age)
        state = State(redis, keys, clock, secret=erase_secret(settings), audit=audit)
        if args.command == "consent":
            return await _consent(args, state)
        if args.command == "refuse":
            await state.refuse(args.address, args.reason, list=args.list_name, channel="cli")
            print(f"refusal recorded: {args.address} ({args.reason}, "
                  f"{args.list_name or 'every list'})")
        elif args.command == "engage":
            return await _engage(args, state, clock.now())
        elif args.command == "suppression":
            from proxy.tell.cli import run

            return await run(args, state)
        elif args.command == "explain":
            await _explain(args, settings, redis, state, clock)
    return 0


async def _consent(args: argparse.Namespace, state: Any) -> int:
    if args.consent_command == "grant":
        await state.grant(args.address, args.list_name, source=args.source, ip=args.ip,
                          text=args.text)
        print(f"consent granted: {args.address} -> {args.list_name}")
    elif args.consent_command == "revoke":
        await state.revoke(args.address, args.list_name, source=args.source)
        print(f"consent revoked: {args.address} -> {args.list_name}")
    else:
        report = await state.import_consent_csv(args.file)
        for line in report.errors:
            print(f"{args.file}:{line}", file=sys.stderr)
        print(f"imported {report.imported} rows, {len(report.errors)} rejected")
        return 1 if report.errors else 0
    return 0


async def _engage(args: argparse.Namespace, state: Any, now: float) -> int:
    if args.address != "import":
        await state.engage(args.address, kind=args.kind, source="cli")
        print(f"engagement recorded: {args.address} ({args.kind})")
        return 0
    from proxy.signals.engagement_import import import_engagement

    if args.file is None:
        print("heed engage import: name the CSV file", file=sys.stderr)
        return 2
    done = await import_engagement(state, args.file, now)
    for line in done.errors:
        print(f"{args.file}:{line}", file=sys.stderr)
    print(f"imported {done.imported} rows, {done.known} already known, "
          f"{len(done.errors)} rejected")
    return 1 if done.errors else 0


async def _explain(args: argparse.Namespace, settings: Settings, redis: Any, state: Any,
                   clock: Any) -> None:
    from proxy.audit import Audit
    from proxy.explain import explain
    from proxy.keys import Keys
    from proxy.policy_store import PolicyStore
    from proxy.queue import DelayQueue
    from proxy.signals.sources import sources

    keys = Keys(settings.redis.prefix)
    policy = PolicyStore(settings.policies).current
    held = await DelayQueue(getattr(redis, "durable", redis), keys).items_for(
        args.address)
    guard = provider_guard(settings, redis, clock)
    provider = await guard.lookup.provider_of(args.address.rpartition("@")[2])
    print(await explain(state, Audit(redis, keys), args.address, now=clock.now(),
                        policy=policy, provider=provider, held=held,
                        sources=lambda s: sources(settings, s)))
