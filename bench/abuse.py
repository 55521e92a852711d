"""Abuse, measured: smuggling, open-relay probes, a connection flood, a slow client, link
scanners and forged tokens against a real `heed serve` (the suite runs them small).

    python -m bench.abuse --all
    python -m bench.abuse --smuggling --open-relay --flood [--connections 1000]
    python -m bench.abuse --slow [--deadline 30 --every 10] --one-click [--forged 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from proxy.clock import SystemClock
from proxy.embedded_redis import EmbeddedRedis, free_port


class Raw:
    """A raw SMTP client socket: send any bytes, read whole (multi-line) replies."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                             source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> bytes:
        line = self.file.readline()
        while line[3:4] == b"-":
            line = self.file.readline()
        return line

    def cmd(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def close(self) -> None:
        """QUIT and wait for heed to close its side, so no transport outlives the test."""
        try:
            self.sock.sendall(b"QUIT\r\n")
            while self.file.readline():
                pass
        except OSError:
            pass
        self.file.close()
        self.sock.close()




# End-of-data variants from SEC Consult's SMTP smuggling research (Longin, 2023) and
# Postfix's smtpd_forbid_bare_newline notes: a lenient upstream may end DATA at any of
# these, so heed must never pass one on as a line of its own.
SMUGGLING_ENDINGS = [
    b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r", b"\r.\n", b"\r.\r\n", b"\r\n.\n",
    b"\n.\r", b"\r\r\n.\r\n", b"\r\n\x00.\r\n", b"\n\n.\n\n", b"\r\n.\r\r\n",
]


class CountingUpstream:
    """A deliberately lenient upstream over a raw socket: any of CR, LF or CRLF ends a
    line, a line "." ends DATA (as bare-LF tolerant MTAs do); counts MAIL commands."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mail_commands = 0
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._session, "127.0.0.1", self.port))
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 lenient ESMTP\r\n")
        buffer = b""
        in_data = False
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if in_data:
                        if line == b".":
                            in_data = False
                            writer.write(b"250 2.0.0 queued\r\n")
                        continue
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        writer.write(b"250-lenient\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                    elif verb == b"MAIL":
                        self.mail_commands += 1
                        writer.write(b"250 2.1.0 ok\r\n")
                    elif verb == b"DATA":
                        in_data = True
                        writer.write(b"354 go on\r\n")
                    elif verb == b"QUIT":
                        writer.write(b"221 bye\r\n")
                        return
                    else:
                        writer.write(b"250 ok\r\n")
                await writer.drain()
        finally:
            writer.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def smuggle(port: int, ending: bytes) -> int:
    """One transaction with a smuggled second message behind ``ending``; returns how many
    times heed answered 250 to a DATA (what heed itself took responsibility for)."""
    c = Raw(port)
    try:
        assert c.cmd(b"EHLO tool.test\r\n").startswith(b"250")
        assert c.cmd(b"MAIL FROM:<receipts@shop.example.com>\r\n").startswith(b"250")
        assert c.cmd(b"RCPT TO:<alice@example.org>\r\n").startswith(b"250")
        assert c.cmd(b"DATA\r\n").startswith(b"354")
        smuggled = (b"From: receipts@shop.example.com\r\nSubject: hi\r\n\r\nbody" + ending
                    + b"MAIL FROM:<ceo@shop.example.com>\r\nRCPT TO:<carol@example.org>\r\n"
                    + b"DATA\r\nSubject: smuggled\r\n\r\nevil\r\n")
        c.sock.sendall(smuggled + b"\r\n.\r\nQUIT\r\n")
        replies = []
        while not (line := c.reply()).startswith(b"221") and line:
            replies.append(line)
        return sum(1 for r in replies if r.startswith(b"250 2.0.0"))
    finally:
        c.close()




def nmap_relay_probes(domain: str, ip: str, server: str) -> list[tuple[str, str]]:
    """The 16 MAIL/RCPT pairs of nmap's smtp-open-relay script."""
    src = f"antispam@[{ip}]"
    return [
        ("<>", f"relaytest@{domain}"),
        (f"antispam@{domain}", f"relaytest@{domain}"),
        (f"antispam@{server}", f"relaytest@{domain}"),
        (src, f"relaytest@{domain}"),
        (src, f"relaytest%{domain}@[{ip}]"),
        (src, f"relaytest%{domain}@{server}"),
        (src, f'"relaytest@{domain}"'),
        (src, f'"relaytest%{domain}"'),
        (src, f"relaytest@{domain}@[{ip}]"),
        (src, f'"relaytest@{domain}"@[{ip}]'),
        (src, f"relaytest@{domain}@{server}"),
        (src, f"@[{ip}]:relaytest@{domain}"),
        (src, f"@{server}:relaytest@{domain}"),
        (src, f"{domain}!relaytest"),
        (src, f"{domain}!relaytest@[{ip}]"),
        (src, f"{domain}!relaytest@{server}"),
    ]




def bit_flips(token: str, count: int) -> Iterator[str]:
    """Every single-bit flip of every byte, then every substitution, repeated to ``count``."""
    raw = token.encode()
    made = 0
    while True:
        for i in range(len(raw)):
            for bit in range(8):
                flipped = bytearray(raw)
                flipped[i] ^= 1 << bit
                yield flipped.decode("latin-1")
                made += 1
                if made >= count:
                    return




# --- measured scenarios -------------------------------------------------------------------
def _heed(workdir: Path, redis_url: str, upstream_port: int, smtp: str = "",
          http: bool = False) -> Any:
    from bench.soak import TRANSACTIONAL, HeedProcess

    heed = HeedProcess(workdir, redis_url, upstream_port, TRANSACTIONAL)
    text = heed.config.read_text()
    if smtp:
        text = text.replace("max_sessions: 2000,\n       max_sessions_per_client: 2000", smtp)
    if http:
        heed.http_port = free_port()
        text = text.replace("http: {listen: null", f'http: {{listen: "127.0.0.1:{heed.http_port}"')
    heed.config.write_text(text)
    heed.start()
    return heed


def smuggling(workdir: Path, redis_url: str) -> dict[str, Any]:
    """Every ending through heed to stock Postfix (lenient), then to a counting sink."""
    from bench.compare import PostfixRelay
    from bench.soak import CountingSink

    sink = CountingSink()
    top = Path(tempfile.mkdtemp(prefix="heed-postfix-"))
    relay = PostfixRelay(top / "postfix", sink.port)
    heed = _heed(workdir, redis_url, relay.port)
    try:
        accepted = sum(smuggle(heed.port, e) for e in SMUGGLING_ENDINGS)
        deadline = time.monotonic() + 60
        while sink.messages < accepted and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # anything extra Postfix queued would arrive with the rest
        arrived = sink.messages
    finally:
        heed.stop()
        relay.stop()
        sink.stop()
        shutil.rmtree(top, ignore_errors=True)
    return {"scenario": "SMTP smuggling via stock Postfix " + relay.version(),
            "load": f"{len(SMUGGLING_ENDINGS)} endings", "result":
            f"{arrived - accepted} extra transactions ({accepted} answered 250, "
            f"{arrived} arrived)"}


def open_relay(workdir: Path, redis_url: str) -> dict[str, Any]:
    from bench.soak import CountingSink

    sink = CountingSink()
    heed = _heed(workdir, redis_url, sink.port,
                 smtp='client_networks: ["192.0.2.0/24"]')
    try:
        c = Raw(heed.port)
        c.cmd(b"EHLO nmap.test\r\n")
        accepted = 0
        for sender, rcpt in nmap_relay_probes("example.org", "127.0.0.1", "soak.test"):
            c.cmd(b"RSET\r\n")
            if c.cmd(f"MAIL FROM:<{sender.strip('<>')}>\r\n".encode()).startswith(b"250"):
                accepted += c.cmd(f"RCPT TO:<{rcpt}>\r\n".encode()).startswith(b"250")
        c.close()
    finally:
        heed.stop()
        sink.stop()
    return {"scenario": "open relay: nmap smtp-open-relay forms, client not allowed",
            "load": "16 forms", "result": f"{accepted} accepted"}


def flood(workdir: Path, redis_url: str, connections: int = 1000,
          per_client: int = 100) -> dict[str, Any]:
    """``connections`` from 127.0.0.1 at once; meanwhile 127.0.0.2 sends 20 messages."""
    from bench.soak import CountingSink

    sink = CountingSink()
    heed = _heed(workdir, redis_url, sink.port,
                 smtp=f"max_sessions: 2000, max_sessions_per_client: {per_client}")
    time.sleep(1)  # let heed see the readiness probe's connection close
    held: list[socket.socket] = []
    refused_in: list[float] = []
    served: list[float] = []
    try:
        def other() -> None:
            for _ in range(20):
                t0 = time.monotonic()
                c = Raw(heed.port, source="127.0.0.2")
                c.cmd(b"EHLO other.test\r\n")
                c.cmd(b"MAIL FROM:<receipts@shop.example.com>\r\n")
                c.cmd(b"RCPT TO:<ann@example.org>\r\n")
                c.cmd(b"DATA\r\n")
                if c.cmd(b"Subject: x\r\n\r\nx\r\n.\r\n").startswith(b"250"):
                    served.append(time.monotonic() - t0)
                c.close()

        counts = {"220": 0, "421": 0}
        thread = threading.Thread(target=other)
        thread.start()
        for _ in range(connections):
            t0 = time.monotonic()
            s = socket.create_connection(("127.0.0.1", heed.port), timeout=30)
            code = s.recv(100)[:3].decode()
            counts[code] = counts.get(code, 0) + 1
            if code == "421":
                refused_in.append(time.monotonic() - t0)
                s.close()
            else:
                held.append(s)
        thread.join(120)
    finally:
        for s in held:
            s.close()
        heed.stop()
        sink.stop()
    ms = sorted(x * 1000 for x in refused_in) or [0.0]
    other_ms = statistics.median(served or [0.0]) * 1000
    return {"scenario": "connection flood from one client",
            "load": f"{connections} connections, per-client cap {per_client}",
            "result": f"{counts['220']} served, {counts['421']} got 421 (median "
                      f"{statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms); other client "
                      f"{len(served)}/20 delivered, median {other_ms:.0f} ms"}


def slow_client(workdir: Path, redis_url: str, deadline: float = 30.0,
                every: float = 10.0) -> dict[str, Any]:
    """One byte every ``every`` seconds, never a whole command."""
    from bench.soak import CountingSink

    sink = CountingSink()
    heed = _heed(workdir, redis_url, sink.port,
                 smtp=f"max_sessions: 2000, command_timeout: {deadline}s")
    try:
        c = Raw(heed.port)
        c.sock.settimeout(every)
        t0 = time.monotonic()
        sent = 0
        while time.monotonic() - t0 < deadline * 3:
            try:
                c.sock.sendall(b"E")
                sent += 1
                if c.sock.recv(100) == b"":
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        closed_after = time.monotonic() - t0
        c.sock.close()
        c.file.close()
    finally:
        heed.stop()
        sink.stop()
    return {"scenario": f"slow client, 1 byte per {every:g} s",
            "load": f"command deadline {deadline:g} s",
            "result": f"closed after {closed_after:.1f} s ({sent} bytes sent)"}


def one_click(workdir: Path, redis_url: str, forged: int = 100_000) -> dict[str, Any]:
    """1,000 GET/HEAD over HTTP (link scanners) and ``forged`` forged/bit-flipped tokens."""
    import aiohttp
    import redis as redis_sync

    from bench.soak import CountingSink
    from proxy.errors import TokenError
    from proxy.settings import UnsubscribeKey
    from proxy.tokens import TokenSigner

    key = UnsubscribeKey("s1", b"soak-secret-0123456789abcdef")
    tokens = TokenSigner([key], SystemClock(), 90 * 86400)
    forger = TokenSigner([UnsubscribeKey("s1", b"guessed-secret-0123456789")], SystemClock(),
                         86400)
    sink = CountingSink()
    heed = _heed(workdir, redis_url, sink.port, http=True)
    base = f"http://127.0.0.1:{heed.http_port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", heed.http_port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    genuine = [tokens.make(f"p{i}@example.org", "marketing") for i in range(100)]
    bad = [t for g in genuine for t in bit_flips(g, forged // 200)]
    bad += [forger.make(f"p{i}@example.org", "marketing") for i in range(forged - len(bad))]

    async def scan() -> tuple[int, int]:
        ok = accepted = 0
        async with aiohttp.ClientSession() as s:
            for i in range(1000):
                method = s.get if i % 2 == 0 else s.head
                async with method(f"{base}/u/{genuine[i % 100]}", allow_redirects=False) as r:
                    ok += r.status == 200
            for t in bad[:: max(1, len(bad) // 2000)]:
                if not t.isprintable() or any(ch in t for ch in "/?#%"):
                    continue
                async with s.post(f"{base}/u/{t}", data={"List-Unsubscribe": "One-Click"},
                                  allow_redirects=False) as r:
                    accepted += r.status == 200
        return ok, accepted

    try:
        scanned, http_accepted = asyncio.run(scan())
        client = redis_sync.Redis.from_url(redis_url)
        refusals = len(client.keys("*refusal*"))
        client.close()
    finally:
        heed.stop()
        sink.stop()
    t0 = time.monotonic()
    accepted = 0
    for t in bad:
        try:
            tokens.verify(t)
            accepted += 1
        except TokenError:
            pass
    rate = len(bad) / (time.monotonic() - t0)
    return {"scenario": "one-click: link scanners and forged tokens",
            "load": f"1000 GET/HEAD; {len(bad)} forged in-process, ~2000 over HTTP",
            "result": f"{refusals} unsubscribes from scanners ({scanned} pages served); "
                      f"{accepted + http_accepted} forged accepted ({rate:,.0f} verify/s)"}


def main(argv: list[str] | None = None) -> int:
    from bench.soak import table

    p = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__.split("\n")[0])
    names = ["smuggling", "open-relay", "flood", "slow", "one-click"]
    p.add_argument("--all", action="store_true")
    for name in names:
        p.add_argument(f"--{name}", action="store_true")
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--deadline", type=float, default=30.0)
    p.add_argument("--every", type=float, default=10.0)
    p.add_argument("--forged", type=int, default=100_000)
    args = p.parse_args(argv)
    chosen = [n for n in names if args.all or getattr(args, n.replace("-", "_"))]
    if not chosen:
        p.error("name a scenario or --all")
    rows = []
    with tempfile.TemporaryDirectory(prefix="heed-abuse-") as tmp:
        redis = EmbeddedRedis(Path(tmp) / "redis")
        url = redis.start()
        try:
            for n, name in enumerate(chosen):
                work = Path(tmp) / f"{n}"
                if name == "smuggling":
                    rows.append(smuggling(work, url))
                elif name == "open-relay":
                    rows.append(open_relay(work, url))
                elif name == "flood":
                    rows.append(flood(work, url, args.connections))
                elif name == "slow":
                    rows.append(slow_client(work, url, args.deadline, args.every))
                else:
                    rows.append(one_click(work, url, args.forged))
                print(table(rows[-1:]), flush=True)
        finally:
            redis.stop()
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
