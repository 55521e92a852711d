"""`heed suppression lift|export|import`: refusals lifted by hand, written out, read in."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMATS = ("ses", "sendgrid", "mailgun", "postmark", "csv")


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    sup = sub.add_parser("suppression", help="lift, export or import refusals (docs/tell.md)")
    ssub = sup.add_subparsers(dest="suppression_command", required=True)
    lift = ssub.add_parser("lift", help="lift a refusal (or an erasure) by hand; audited")
    common(lift)
    lift.add_argument("address")
    lift.add_argument("--list", dest="list_name", metavar="L", help="default: every list")
    lift.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the audit)")
    export = ssub.add_parser("export", help="every refusal, erased people as hashed ids")
    common(export)
    export.add_argument("--since", metavar="WHEN",
                        help="only refusals since: a duration back (7d) or a date (2027-01-01)")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    imp = ssub.add_parser("import", help="a sending service's suppression export")
    common(imp)
    imp.add_argument("file", type=Path, metavar="FILE")
    imp.add_argument("--from", dest="source", required=True, choices=FORMATS)
    imp.add_argument("--list", dest="list_name", metavar="L",
                     help="refuse this list only (default: every list)")


async def run(args: argparse.Namespace, state: Any) -> int:
    if args.suppression_command == "lift":
        try:
            lifted = await state.lift(args.address, args.list_name, args.reason)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if not lifted:
            print(f"nothing to lift: {args.address} has no refusal of "
                  f"{args.list_name or 'every list'}", file=sys.stderr)
            return 1
        print(f"lifted for {args.address}: {', '.join(lifted)}")
        return 0
    from proxy.tell import suppression

    if args.suppression_command == "export":
        try:
            since = suppression.parse_since(args.since, state.clock.now())
        except ValueError as exc:
            print(f"error: --since: {exc}", file=sys.stderr)
            return 2
        rows = await suppression.export(state, since)
        sys.stdout.write(suppression.render(rows, args.format))
        return 0
    report = await suppression.import_file(state, args.file, args.source, args.list_name)
    for line in report.errors:
        print(f"{args.file}:{line}", file=sys.stderr)
    print(f"imported {report.imported} refusals ({report.known} already known), "
          f"{len(report.errors)} rows rejected")
    return 1 if report.errors else 0
