"""Tracked links: ms per rewritten copy, and /c/TOKEN redirects per second (not a test).

    python -m bench.clicks [--copies 300] [--seconds 5] [--concurrency 50] [--no-rewrite]
                           [--against-one-click N]

1. Per-copy cost (CPU ms, best of three runs): newsletters of 30, 55 and 80 kB of
   quoted-printable HTML with 20, 30 and 40 links (plus a text part), finished for one
   recipient as the mail path does (one-click headers, DKIM RSA-2048), with
   ``track_clicks`` off and on.
2. Redirects: a private durable Redis (AOF, appendfsync always), heed's HTTP app with the
   click routes in a process of its own, an aiohttp client here; each request is a
   distinct person's click: the copy's last request is recorded before its 302, its
   engagement and audit entry written behind as `heed serve` does (``redis.write_behind``).
   ``--against-one-click N`` alternates N rounds of one-click POST /u/ and GET /c/, so
   both are measured in the same machine state.
"""

from __future__ import annotations

import argparse
import asyncio
import email.policy
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import aiohttp

from bench import oneclick
from bench.oneclick import against_server, batched, hammer
from proxy.clock import ManualClock, SystemClock
from proxy.settings import ClickSettings, DkimKey, UnsubscribeKey

KEY = UnsubscribeKey("b1", b"bench-secret-0123456789abcdef")
DEST = "https://shop.example/sale?utm_source=newsletter&utm_medium=email&id="


def newsletter(kb: int, links: int) -> bytes:
    para = "<p>A paragraph of an ordinary newsletter, with a few words about the offer.</p>\n"
    chunk = max(1, (kb * 1024) // (len(para) * links))
    html = "".join(para * chunk + f'<p><a href="{DEST}{i}">Offer {i}</a></p>\n'
                   for i in range(links))
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = "News <news@example.com>"
    m["To"] = "alice@example.org"
    m["Subject"] = "This week"
    m["Message-ID"] = "<1@example.com>"
    m["Date"] = "Mon, 1 Jan 2024 00:00:00 +0000"
    m.set_content("Offers: " + " ".join(f"{DEST}{i}" for i in range(links)),
                  cte="quoted-printable")
    m.add_alternative(f"<html><body>{html}</body></html>", subtype="html",
                      cte="quoted-printable")
    return m.as_bytes()


def rewrite_cost(copies: int) -> None:
    from proxy.dkim import DkimSigner, generate_key
    from proxy.finish import UnsubscribeAndSign
    from proxy.message import Message, normalise
    from proxy.policy import Stream
    from proxy.tokens import TokenSigner

    with tempfile.TemporaryDirectory(prefix="heed-bench-") as work:
        path, _ = generate_key("example.com", "s1", Path(work))
        signer = DkimSigner([DkimKey("example.com", "s1", path)])  # the key is read here
    finisher = UnsubscribeAndSign(TokenSigner([KEY], SystemClock(), 90 * 86400), signer,
                                  public_url="https://heed.example", mailto_domain="heed.example")
    for kb, links in ((30, 20), (55, 30), (80, 40)):
        data = normalise(newsletter(kb, links))
        row = []
        for track in (False, True):
            stream = Stream("marketing", track_clicks=track)
            prepared = finisher.prepare(Message.parse(data))
            prepared.build(stream, "warm@example.org")
            best = float("inf")
            for _ in range(3):  # CPU time, best of three: the machine may be shared
                start = time.process_time()
                for i in range(copies):
                    prepared.build(stream, f"p{i}@example.org")
                best = min(best, (time.process_time() - start) * 1000 / copies)
            row.append(best)
        print(f"{len(data) / 1024:5.0f} kB, {links} links: {row[0]:.2f} CPU ms/copy untracked, "
              f"{row[1]:.2f} tracked (+{row[1] - row[0]:.2f} ms)")


def serve(port: int, redis_url: str) -> None:
    import uvloop

    from proxy.copy.links import link_id
    from proxy.http.app import make_app, start_http
    from proxy.http.clicks import ClickPages, add_clicks
    from proxy.keys import Keys
    from proxy.metrics import Metrics
    from proxy.signals.clicks import Clicks
    from proxy.state import State
    from proxy.tokens import TokenSigner

    async def main() -> None:
        clock = SystemClock()
        redis = batched(redis_url)
        tokens = TokenSigner([KEY], clock, 90 * 86400)
        state = State(redis, Keys(), clock)
        metrics = Metrics()
        app = make_app(tokens=tokens, state=state, metrics=metrics)
        clicks = Clicks(tokens, state, redis, Keys(), ClickSettings(), 90 * 86400)
        await clicks.store({link_id(DEST + "0"): DEST + "0"})
        add_clicks(app, ClickPages(clicks, tokens, state, clock, metrics))
        await start_http(app, "127.0.0.1", port)
        await asyncio.Event().wait()

    uvloop.run(main())


async def load(port: int, seconds: float, concurrency: int) -> tuple[int, int]:
    from proxy.copy.links import link_id
    from proxy.copy.personal import ClickTarget
    from proxy.tokens import CLICK, TokenSigner

    # Tokens of copies delivered a minute ago: past the "seconds after delivery" sign.
    signer = TokenSigner([KEY], ManualClock(time.time() - 60), 90 * 86400)
    target = ClickTarget("marketing", "c0", link_id(DEST + "0")).encode()

    async def one(session: aiohttp.ClientSession, n: int) -> bool:
        token = signer.make(f"p{n}@example.org", target, purpose=CLICK)
        async with session.get(f"http://127.0.0.1:{port}/c/{token}",
                               allow_redirects=False) as r:
            await r.read()
            return r.status == 302

    return await hammer(seconds, concurrency, one)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=300, help="copies per variant")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-rewrite", action="store_true", help="redirects only")
    parser.add_argument("--against-one-click", type=int, default=0, metavar="N",
                        help="N rounds of one-click POST /u/ then GET /c/, side by side")
    args = parser.parse_args()
    if not args.no_rewrite:
        rewrite_cost(args.copies)
    for n in range(args.against_one_click):
        for what, serve_fn, load_fn in (
                ("one-click POST /u/TOKEN", oneclick.serve, oneclick.load),
                ("GET /c/TOKEN redirects", serve, load)):
            served = against_server(serve_fn, load_fn, args.seconds, args.concurrency)
            print(f"round {n + 1}: " + served.line(what, args.seconds, args.concurrency),
                  flush=True)
    if not args.against_one_click:
        print(against_server(serve, load, args.seconds, args.concurrency).line(
            "GET /c/TOKEN redirects, click recorded", args.seconds, args.concurrency))

if __name__ == "__main__":
    main()
