"""Milliseconds per DKIM signature: dkimpy's own RSA against heed's OpenSSL path (not a test).

Run from the repository root: ``python -m bench.sign_cost [-n 500] [--bits 2048]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim

from proxy.clock import SystemClock
from proxy.dkim import OVERSIGNED, SIGNED, DkimSigner, generate_key
from proxy.rewrite import add_unsubscribe, split_message
from proxy.settings import DkimKey, UnsubscribeKey
from proxy.tokens import TokenSigner

HEAD = (
    b"From: News <news@example.com>\r\nTo: alice@example.org\r\nSubject: This week\r\n"
    b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
)
BODY = b"<p>A newsletter paragraph of ordinary length, repeated.</p>\r\n" * 800  # ~50 kB


def per_call_ms(fn: Callable[[int], object], n: int) -> float:
    fn(0)  # warm up
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - start) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=500, help="signatures per variant")
    parser.add_argument("--bits", type=int, default=2048)
    args = parser.parse_args()
    n, bits = args.n, args.bits
    work = Path(tempfile.mkdtemp(prefix="heed-bench-"))
    rsa_path, _ = generate_key("example.com", "rsa", work, bits=bits)
    ed_path, _ = generate_key("example.com", "ed", work, algorithm="ed25519")
    rsa = DkimSigner([DkimKey("example.com", "rsa", rsa_path)])
    both = DkimSigner([DkimKey("example.com", "rsa", rsa_path),
                       DkimKey("example.com", "ed", ed_path, "ed25519-sha256")])
    tokens = TokenSigner([UnsubscribeKey("k1", b"0123456789abcdef0123")], SystemClock(), 90 * 86400)
    pem = rsa_path.read_bytes()
    head = add_unsubscribe(HEAD, https_url="https://heed.example/u/" + "A" * 70,
                           mailto="unsubscribe+" + "A" * 70 + "@heed.example").headers
    message = head + b"\r\n" + BODY
    include = [n for n, _ in dkim.rfc822_parse(message)[0] if n.lower() in SIGNED]
    include += list(OVERSIGNED)
    prepared = rsa.prepare("example.com", BODY)
    both_prepared = both.prepare("example.com", BODY)

    def copy(i: int) -> bytes:
        token = tokens.make(f"person{i}@example.org", "news")
        h, _ = split_message(HEAD.replace(b"alice@example.org", f"person{i}@example.org".encode())
                             + b"\r\n")
        return add_unsubscribe(h, https_url=f"https://heed.example/u/{token}",
                               mailto=f"unsubscribe+{token}@heed.example").headers

    rows = [
        ("dkimpy dkim.sign (pure-Python RSA, body hashed each time)",
         lambda i: dkim.sign(message, b"rsa", b"example.com", pem,
                             canonicalize=(b"relaxed", b"relaxed"), include_headers=include)),
        ("heed prepare+sign per copy (OpenSSL RSA, body hashed each time)",
         lambda i: rsa.prepare("example.com", BODY).sign(head)),
        ("heed sign per copy (OpenSSL RSA, body hashed once)", lambda i: prepared.sign(head)),
        ("heed token + rewrite + sign per copy (RSA)", lambda i: prepared.sign(copy(i))),
        ("heed sign per copy, RSA + Ed25519", lambda i: both_prepared.sign(head)),
    ]
    print(f"{n} signatures each, RSA {bits} bits, body {len(BODY)} bytes")
    for label, fn in rows:
        print(f"{per_call_ms(fn, n):8.3f} ms  {label}")


if __name__ == "__main__":
    main()
