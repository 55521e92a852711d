"""Milliseconds per message for the body unsubscribe link: detection, and a copy with the footer.

Run from the repository root: ``python -m bench.bodylink [-n 300]``. Reads real newsletter
HTML from the template repositories under HEED_NEWSLETTER_MIRRORS (default /work/.mirror,
as tests/test_bodylink.py), and a generated 50 kB newsletter when they are absent.
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import tempfile
import time
from pathlib import Path

from proxy.bulk.bodylink import has_unsubscribe_link, readable
from proxy.clock import SystemClock
from proxy.copy.head import read_head
from proxy.dkim import DkimSigner, generate_key
from proxy.finish import UnsubscribeAndSign
from proxy.message import Message, split
from proxy.policy import Stream
from proxy.policy.bulk import BulkRules
from proxy.settings import DkimKey, UnsubscribeKey
from proxy.tokens import TokenSigner

MIRRORS = Path(os.environ.get("HEED_NEWSLETTER_MIRRORS", "/work/.mirror"))
SAMPLES = [("leemunroe+responsive-html-email-template", "email.html"),
           ("mailchimp+email-blueprints", "templates/2col-1-2.html"),
           ("mjmlio+email-templates", "templates/arturia.mjml")]


def message(html: str) -> bytes:
    body = base64.encodebytes(html.encode()).replace(b"\n", b"\r\n")
    return (b"From: News <news@example.com>\r\nTo: alice@example.org\r\nSubject: News\r\n"
            b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
            b"\r\n" + body)


def samples() -> list[tuple[str, bytes]]:
    out = []
    for repo, path in SAMPLES:
        git = MIRRORS / repo / "repo"
        if git.is_dir():
            html = subprocess.run(["git", "--git-dir", str(git), "show", f"HEAD:{path}"],
                                  capture_output=True, check=True).stdout.decode()
            out.append((path, message(html)))
    generated = "<html><body>" + "<p>A newsletter paragraph.</p>\r\n" * 1500 + "</body></html>"
    out.append(("generated, no link", message(generated)))
    return out


def detect(data: bytes) -> bool:
    """The check as the finisher makes it: the header block read once, the text from it."""
    return has_unsubscribe_link(readable(data, read_head(split(data)[0])))


def ms(fn: object, n: int) -> float:
    assert callable(fn)
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=300)
    n = parser.parse_args().n
    clock = SystemClock()
    with tempfile.TemporaryDirectory() as tmp:
        key, _ = generate_key("example.com", "s1", Path(tmp))
        finisher = UnsubscribeAndSign(
            TokenSigner((UnsubscribeKey("k", b"0123456789abcdef0123"),), clock, 86400.0),
            DkimSigner([DkimKey("example.com", "s1", key)], clock),
            public_url="https://heed.example", mailto_domain="heed.example")
        print(f"{'message':<28} {'bytes':>7} {'link':>5} {'detect ms':>10} "
              f"{'copy ms (check)':>16} {'copy ms (insert)':>17}")
        for name, data in samples():
            parsed = Message.parse(data)
            copies = {}
            for mode in ("check", "insert"):
                stream = Stream("marketing", bulk=BulkRules(body_unsubscribe=mode))

                def copy(stream: Stream = stream, parsed: Message = parsed) -> bytes:
                    prepared = finisher.prepare(parsed)
                    prepared.facts(stream)
                    return prepared.build(stream, "alice@example.org")

                copies[mode] = ms(copy, n)
            print(f"{name:<28} {len(data):>7} {str(has_unsubscribe_link(data)):>5} "
                  f"{ms(lambda d=data: detect(d), n):>10.2f} "
                  f"{copies['check']:>16.2f} {copies['insert']:>17.2f}")


if __name__ == "__main__":
    main()
