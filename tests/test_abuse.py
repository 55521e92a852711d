"""Abuse over raw sockets: smuggling, open relay probes, STARTTLS injection, limits, one-click."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from bench.abuse import (
    SMUGGLING_ENDINGS,
    CountingUpstream,
    Raw,
    bit_flips,
    nmap_relay_probes,
    smuggle,
)
from proxy.clock import ManualClock
from proxy.embedded_redis import free_port
from proxy.errors import TokenError
from proxy.keys import Keys
from proxy.settings import UnsubscribeKey
from proxy.state import State
from proxy.tokens import TokenSigner
from tests.conftest import Upstream
from tests.harness import HeedThread, make_settings
from tests.test_http_unsubscribe import KEY, serve
from tests.test_smtp_auth import POLICY, self_signed


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "p.yaml").write_text(POLICY)
    return tmp_path / "p"


def start(redis_url: str, upstream_port: int, policies: Path, clock: ManualClock,
          **smtp: object) -> HeedThread:
    settings = make_settings(redis_url=redis_url, upstream_port=upstream_port,
                             policies=policies, smtp=dict(smtp))
    return HeedThread(settings, clock).start()


# --- SMTP smuggling -------------------------------------------------------------------
def test_smuggling_endings_make_no_extra_transaction_upstream(
        redis_url: str, policies: Path, clock: ManualClock) -> None:
    lenient = CountingUpstream()
    h = start(redis_url, lenient.port, policies, clock)
    try:
        accepted = 0
        for ending in SMUGGLING_ENDINGS:
            accepted += smuggle(h.port, ending)
            # Exactly the transactions heed answered 250 for reached the upstream.
            assert lenient.mail_commands == accepted, ending
        # \r\r\n.\r\n holds a real end of data: the rest are commands of the client's
        # own (a second transaction it asked for and saw answered); \x00 is refused.
        assert accepted == len(SMUGGLING_ENDINGS)
    finally:
        h.stop()
        lenient.stop()


def _postfix_relay(base: Path, sink_port: int):  # noqa: ANN202
    from bench.compare import PostfixRelay

    return PostfixRelay(base, sink_port)


@pytest.fixture
def postfix(upstream: Upstream) -> Iterator[object]:
    """Stock Postfix smtpd (bare newlines tolerated: smtpd_forbid_bare_newline is off in
    3.7's defaults) relaying to the capture upstream."""
    assert shutil.which("postfix"), "postfix is installed by .ci/run"
    # The postfix user must reach the queue: pytest's own temp folders are 0700.
    top = Path(tempfile.mkdtemp(prefix="heed-postfix-"))
    try:
        relay = _postfix_relay(top / "postfix", upstream.port)
        yield relay
        relay.stop()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_smuggling_through_a_lenient_postfix(redis_url: str, policies: Path,
                                             clock: ManualClock, upstream: Upstream,
                                             postfix: object) -> None:
    out = subprocess.run(["postconf", "-c", str(postfix.conf), "-h",  # type: ignore[attr-defined]
                          "smtpd_forbid_bare_newline"], capture_output=True, text=True)
    assert out.stdout.strip() in ("", "no", "normalize")  # lenient, as stock 3.7 ships
    h = start(redis_url, postfix.port, policies, clock)  # type: ignore[attr-defined]
    try:
        accepted = sum(smuggle(h.port, e) for e in SMUGGLING_ENDINGS)
        deadline = time.monotonic() + 60
        while len(upstream.received) < accepted and time.monotonic() < deadline:
            time.sleep(0.2)
        queue = subprocess.run(["postqueue", "-c", str(postfix.conf), "-p"],  # type: ignore[attr-defined]
                               capture_output=True, text=True)
        assert "Mail queue is empty" in queue.stdout + queue.stderr
        assert len(upstream.received) == accepted
        assert accepted == len(SMUGGLING_ENDINGS)
        # Only the \r\r\n.\r\n case makes a second message: heed itself saw that end
        # of data and answered the client's second transaction; no other ending did.
        assert sum(b"Subject: smuggled" in m.data.split(b"\r\n\r\n")[0]
                   for m in upstream.received) == 1
        assert upstream.recipients().count("carol@example.org") == 1
    finally:
        h.stop()


# --- open relay -------------------------------------------------------------------------
def test_open_relay_probes_from_a_client_not_allowed(redis_url: str, policies: Path,
                                                     clock: ManualClock,
                                                     upstream: Upstream) -> None:
    h = start(redis_url, upstream.port, policies, clock, client_networks=["192.0.2.0/24"])
    try:
        probes = nmap_relay_probes("example.org", "127.0.0.1", "heed.test")
        assert len(probes) == 16
        c = Raw(h.port)
        accepted = []
        assert c.cmd(b"EHLO nmap.test\r\n").startswith(b"250")
        for sender, rcpt in probes:
            assert c.cmd(b"RSET\r\n").startswith(b"250")
            if c.cmd(f"MAIL FROM:<{sender.strip('<>')}>\r\n".encode()).startswith(b"250"):
                reply = c.cmd(f"RCPT TO:<{rcpt}>\r\n".encode())
                if reply.startswith(b"250"):
                    accepted.append(rcpt)
                else:
                    assert reply[:1] in (b"5", b"4"), reply
        assert c.cmd(b"DATA\r\n")[:1] in (b"5", b"4")  # no valid recipient: no data phase
        c.close()
        assert accepted == []
        assert upstream.received == []
    finally:
        h.stop()


# --- STARTTLS and AUTH --------------------------------------------------------------------
def test_commands_pipelined_after_starttls_are_discarded(tmp_path: Path, redis_url: str,
                                                         policies: Path, clock: ManualClock,
                                                         upstream: Upstream) -> None:
    """RFC 3207 §4.2 (CVE-2011-0411): what came in the clear with STARTTLS is dropped."""
    cert, key = self_signed(tmp_path)
    h = start(redis_url, upstream.port, policies, clock, tls_cert=str(cert), tls_key=str(key),
              client_networks=["192.0.2.0/24"])
    try:
        c = Raw(h.port)
        assert c.cmd(b"EHLO tool.test\r\n").startswith(b"250")
        reply = c.cmd(b"AUTH PLAIN AHRvb2wAY29ycmVjdCBob3JzZQ==\r\n")
        assert reply[:1] == b"5"  # AUTH refused before TLS (RFC 4954 §4)
        # STARTTLS and injected commands in one write, before the handshake.
        c.sock.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@example.com>\r\n")
        assert c.reply().startswith(b"220")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        tls = context.wrap_socket(c.sock, server_hostname="heed.test")
        f = tls.makefile("rb")
        tls.sendall(b"NOOP\r\nQUIT\r\n")
        replies = []
        while line := f.readline():
            replies.append(line[:3])
        # Only NOOP and QUIT were answered: RSET and MAIL sent in the clear were discarded.
        assert replies == [b"250", b"221"]
        f.close()
        tls.close()
        c.file.close()
    finally:
        h.stop()


# --- limits -----------------------------------------------------------------------------
def test_size_plus_one_is_552_after_the_data_and_the_session_goes_on(
        redis_url: str, policies: Path, clock: ManualClock, upstream: Upstream) -> None:
    h = start(redis_url, upstream.port, policies, clock, max_message_size=10_000)
    try:
        c = Raw(h.port)
        c.cmd(b"EHLO tool.test\r\n")

        def send(size: int) -> bytes:
            assert c.cmd(b"MAIL FROM:<receipts@shop.example.com>\r\n").startswith(b"250")
            assert c.cmd(b"RCPT TO:<ann@example.org>\r\n").startswith(b"250")
            assert c.cmd(b"DATA\r\n").startswith(b"354")
            head = b"Subject: size\r\n\r\n"
            fill = size - len(head)  # counted as aiosmtpd counts: every byte, CRLF included
            body = (b"x" * 98 + b"\r\n") * (fill // 100) + b"y" * (fill % 100 - 2) + b"\r\n"
            assert len(head + body) == size
            return c.cmd(head + body + b".\r\n")

        assert send(10_001).startswith(b"552")  # answered only after the whole data
        assert send(10_000).startswith(b"250")  # same connection, still usable
        c.close()
        assert len(upstream.received) == 1
    finally:
        h.stop()


def test_recipients_past_the_limit_get_452(redis_url: str, policies: Path, clock: ManualClock,
                                           upstream: Upstream) -> None:
    h = start(redis_url, upstream.port, policies, clock, max_recipients=100)
    try:
        c = Raw(h.port)
        c.cmd(b"EHLO tool.test\r\n")
        c.cmd(b"MAIL FROM:<receipts@shop.example.com>\r\n")
        codes = [c.cmd(f"RCPT TO:<p{i}@example.org>\r\n".encode())[:3] for i in range(105)]
        assert codes == [b"250"] * 100 + [b"452"] * 5
        assert c.cmd(b"DATA\r\n").startswith(b"354")
        assert c.cmd(b"Subject: x\r\n\r\nx\r\n.\r\n").startswith(b"250")
        c.close()
        assert len(upstream.recipients()) == 100
    finally:
        h.stop()


def test_one_client_flooding_connections_does_not_starve_others(
        redis_url: str, policies: Path, clock: ManualClock, upstream: Upstream) -> None:
    h = start(redis_url, upstream.port, policies, clock, max_sessions=1000,
              max_sessions_per_client=50, client_networks=["127.0.0.0/8"])
    flood: list[socket.socket] = []
    try:
        greetings = []
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", h.port), timeout=10)
            flood.append(s)
            greetings.append(s.recv(100)[:3])
        assert greetings.count(b"220") == 50 and greetings.count(b"421") == 950
        other = Raw(h.port, source="127.0.0.2")  # another client is served meanwhile
        assert other.greeting.startswith(b"220")
        other.cmd(b"EHLO other.test\r\n")
        other.cmd(b"MAIL FROM:<receipts@shop.example.com>\r\n")
        other.cmd(b"RCPT TO:<ann@example.org>\r\n")
        other.cmd(b"DATA\r\n")
        assert other.cmd(b"Subject: x\r\n\r\nx\r\n.\r\n").startswith(b"250")
        other.close()
    finally:
        for s in flood:
            s.close()
        h.stop()
    assert upstream.recipients() == ["ann@example.org"]


def test_slow_client_closed_at_the_command_deadline(redis_url: str, policies: Path,
                                                    clock: ManualClock,
                                                    upstream: Upstream) -> None:
    """1 byte at a time, never a whole command: closed when the command deadline passes."""
    h = start(redis_url, upstream.port, policies, clock, command_timeout="1s")
    try:
        c = Raw(h.port)
        c.sock.settimeout(0.3)
        command = b"EHLO " + b"x" * 200 + b"\r\n"
        closed_after = None
        for i, byte in enumerate(command):
            try:
                c.sock.sendall(bytes([byte]))
                if c.sock.recv(100) == b"":
                    closed_after = i
                    break
            except TimeoutError:
                continue
            except OSError:
                closed_after = i
                break
        assert closed_after is not None and closed_after < len(command) - 2
        c.close()
    finally:
        h.stop()


# --- one-click --------------------------------------------------------------------------
async def test_link_scanners_never_unsubscribe(aredis: aioredis.Redis, keys: Keys,
                                               clock: ManualClock) -> None:
    tokens = TokenSigner([KEY], clock, 90 * 86400)
    server = await serve(State(aredis, keys, clock), tokens)
    try:
        links = [f"/u/{tokens.make(f'p{i}@example.org', 'marketing')}" for i in range(100)]
        async with aiohttp.ClientSession() as s:
            statuses = []
            for i in range(1000):  # 500 GET + 500 HEAD, as link scanners prefetch
                method = s.get if i % 2 == 0 else s.head
                async with method(server.make_url(links[i % 100]),
                                  allow_redirects=False) as r:
                    statuses.append(r.status)
        assert set(statuses) == {200}
        assert await aredis.dbsize() == 0  # not one refusal recorded
    finally:
        await server.close()


def test_100k_forged_and_bit_flipped_tokens_are_refused(clock: ManualClock) -> None:
    tokens = TokenSigner([KEY], clock, 90 * 86400)
    forger = TokenSigner([UnsubscribeKey("t1", b"another-secret-0123456789")], clock, 86400)
    accepted = 0
    genuine = [tokens.make(f"p{i}@example.org", "marketing") for i in range(50)]
    candidates: list[str] = []
    for token in genuine:
        candidates.extend(bit_flips(token, 1_500))  # 75,000 flips
    candidates += [forger.make(f"p{i}@example.org", "marketing") for i in range(25_000)]
    assert len(candidates) == 100_000
    for bad in candidates:
        if bad in genuine:
            continue  # a flip that changed nothing cannot happen, but never count it
        try:
            tokens.verify(bad)
            accepted += 1
        except TokenError:
            pass
    assert accepted == 0


async def test_forged_tokens_over_http_record_nothing(aredis: aioredis.Redis, keys: Keys,
                                                      clock: ManualClock) -> None:
    tokens = TokenSigner([KEY], clock, 90 * 86400)
    server = await serve(State(aredis, keys, clock), tokens)
    try:
        token = tokens.make("dee@example.org", "marketing")
        sample = [t for t in bit_flips(token, 1000) if "/" not in t and "?" not in t
                  and "#" not in t and t.isprintable()][::2]
        async with aiohttp.ClientSession() as s:
            for bad in sample:
                async with s.post(server.make_url("/u/" + bad),
                                  data={"List-Unsubscribe": "One-Click"},
                                  allow_redirects=False) as r:
                    assert r.status in (400, 404), bad
        assert len(sample) > 200
        assert await aredis.dbsize() == 0
    finally:
        await server.close()


def test_connections_closed_at_once_do_not_hold_session_slots(redis_url: str,
                                                              tmp_path: Path) -> None:
    """`heed serve` (uvloop): a client that connects and closes before the greeting
    used to keep its slot until the command timeout (5 minutes)."""
    from bench.abuse import _heed

    heed = _heed(tmp_path, redis_url, free_port(),
                 smtp="max_sessions: 2000, max_sessions_per_client: 10")
    held: list[socket.socket] = []
    try:
        for _ in range(30):
            socket.create_connection(("127.0.0.1", heed.port), timeout=10).close()
        codes = []
        for _ in range(10):
            deadline = time.monotonic() + 10
            while True:  # the last closes may still be on their way to heed
                s = socket.create_connection(("127.0.0.1", heed.port), timeout=10)
                code = s.recv(100)[:3]
                if code == b"220" or time.monotonic() > deadline:
                    break
                s.close()
                time.sleep(0.1)
            codes.append(code)
            held.append(s)
        assert codes == [b"220"] * 10
    finally:
        for s in held:
            s.close()
        heed.stop()
