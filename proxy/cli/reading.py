"""`heed report|bounces unread`: what the audit trail and the kept reports say."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy.cli.common import add_common, provider_guard, redis_for, since
from proxy.settings import Settings


def add_report(sub: Any) -> None:
    report = sub.add_parser("report", help="compliance figures from the audit trail")
    add_common(report)
    report.add_argument("--since", default="30d", metavar="DURATION",
                        help="how far back to look, e.g. 7d, 12h (default 30d)")
    report.add_argument("--format", choices=("text", "json", "html"), default="text")
    report.add_argument("--exact", action="store_true",
                        help="read every person for the lifecycle counts, not a sample")


def add_bounces(sub: Any) -> None:
    bounces = sub.add_parser("bounces", help="bounce and complaint reports heed received")
    bsub = bounces.add_subparsers(dest="bounces_command", required=True)
    unread = bsub.add_parser("unread", help="reports accepted that made no event, kept to read")
    add_common(unread)
    unread.add_argument("--since", default="7d", metavar="DURATION",
                        help="how far back to look, e.g. 1d, 12h (default 7d; kept 30d)")
    unread.add_argument("--show", metavar="ID", help="print the kept report with this ID")


async def report(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.clock import SystemClock
    from proxy.keys import Keys
    from proxy.policy import load_policies
    from proxy.report import RENDERERS, build_report
    from proxy.report.people import SAMPLE
    from proxy.state import GUARD_LOOKBACK, State

    window = since(args)
    policy = load_policies(settings.policies)
    clock = SystemClock()
    async with redis_for(settings) as client:
        # A report only reads: the serving Redis's own client (the trail's fast read).
        redis = getattr(client, "inner", client)
        now = clock.now()
        guard = provider_guard(settings, redis, clock)
        built = await build_report(State(redis, Keys(settings.redis.prefix), clock), policy,
                                   since=now - window, now=now, lookback=GUARD_LOOKBACK,
                                   catalog=guard.catalog, lookup=guard.lookup,
                                   throttles=await guard.throttles(),
                                   sample=None if args.exact else SAMPLE)
    sys.stdout.write(RENDERERS[args.format](built))
    return 0


async def unread(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from proxy.clock import SystemClock
    from proxy.keys import Keys
    from proxy.signals.unread import Unread

    window = since(args)
    clock = SystemClock()
    async with redis_for(settings) as redis:
        kept = Unread(redis, Keys(settings.redis.prefix), clock)
        if args.show:
            one = await kept.get(args.show)
            if one is None:
                print(f"error: no kept report {args.show} (kept 30 days)", file=sys.stderr)
                return 1
            sys.stdout.buffer.write(one.data)
            return 0
        reports = await kept.since(clock.now() - window)
    for r in reports:
        when = datetime.fromtimestamp(r.at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{r.id}  {when}  to {r.to}  {r.size} bytes  {r.why}  {r.subject!r}")
    print(f"{len(reports)} unread report(s) since {args.since}; "
          "`heed bounces unread --show ID` prints one")
    return 0
