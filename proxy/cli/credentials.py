"""`heed dkim keygen|rotate` and `heed passwd`: keys and password hashes for the config."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from proxy.cli.common import add_common, duration_arg
from proxy.settings import Settings


def add_dkim(sub: Any) -> None:
    dkim = sub.add_parser("dkim", help="DKIM keys")
    dsub = dkim.add_subparsers(dest="dkim_command", required=True)
    keygen = dsub.add_parser("keygen", help="write a key and print the DNS TXT record")
    keygen.add_argument("domain")
    keygen.add_argument("selector")
    _key_flags(keygen)

    rotate = dsub.add_parser("rotate", help="a new selector; the old one retired after a grace")
    add_common(rotate)
    rotate.add_argument("domain")
    rotate.add_argument("selector", help="the new selector, e.g. s202612")
    _key_flags(rotate)
    rotate.add_argument("--grace", default="7d", type=duration_arg, metavar="DURATION",
                        help="how long the old key stays published (default 7d)")


def _key_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=Path("config/dkim"))
    p.add_argument("--algorithm", choices=("rsa", "ed25519"), default="rsa")
    p.add_argument("--bits", type=int, default=2048)


def add_passwd(sub: Any) -> None:
    passwd = sub.add_parser("passwd", help="hash an SMTP client password for config")
    passwd.add_argument("--password", help="(default: ask on the terminal)")


def keygen(args: argparse.Namespace) -> int:
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


def rotate(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.bulk.rotate import rotate as rotate_key

    sys.stdout.write(rotate_key(settings, args.domain, args.selector, args.dir,
                                algorithm=args.algorithm, bits=args.bits,
                                grace=args.grace))
    return 0


def passwd(args: argparse.Namespace) -> int:
    from proxy.smtp.access import hash_password

    password = args.password or getpass.getpass("password: ")
    print(hash_password(password))
    return 0
